"""``asl-chain``: maintenance of a provenance chain (``repair`` truncates a torn tail)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from asl_capture.chain import repair
from asl_capture.errors import AslError
from asl_capture.store import ProvenanceDir

EPILOG = "\b\nExit status: 0 success (or nothing to repair), 2 unreadable, unwritable or corrupt chain."


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
def cli() -> None:
    """Maintain an asl-capture provenance chain."""


@cli.command("repair", epilog=EPILOG)
@click.argument("directory", type=click.Path(path_type=Path))
def repair_cmd(directory: Path) -> None:
    """Truncate a torn tail left by a crash mid-append, keeping a copy of the bytes removed.

    Whole records are never changed; a corrupt record before the tail is refused.
    """
    try:
        result = repair(ProvenanceDir.existing(directory))
    except AslError as exc:
        click.echo(f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    if result.removed == 0:
        click.echo(f"asl-chain: nothing to repair: {result.records} whole record(s), no torn tail")
    else:
        click.echo(f"asl-chain: truncated {result.removed} torn byte(s) at offset {result.offset} after "
                   f"{result.records} whole record(s); copy kept in {result.saved}")


def main() -> None:
    """Console entry point."""
    cli(prog_name="asl-chain")


if __name__ == "__main__":
    main()
