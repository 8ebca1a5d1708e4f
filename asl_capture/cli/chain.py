"""``asl-chain``: maintenance of a provenance chain (``repair`` truncates a torn tail)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from asl_capture.chain import repair
from asl_capture.errors import AslError
from asl_capture.keys import Signer, dev_key_path, load_signer, read_passphrase
from asl_capture.store import ProvenanceDir

EPILOG = "\b\nExit status: 0 success (or nothing to repair), 2 unreadable, unwritable or corrupt chain."


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
def cli() -> None:
    """Maintain an asl-capture provenance chain."""


@cli.command("repair", epilog=EPILOG)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path),
              help="Key to re-sign the checkpoint with (default: $ASL_CAPTURE_KEY, else the development key).")
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="Passphrase for an encrypted key.")
def repair_cmd(directory: Path, key: Path | None, passphrase_file: Path | None) -> None:
    """Truncate a torn tail left by a crash mid-append, keeping a copy of the bytes removed.

    Whole records are never changed; a corrupt record before the tail is refused. If the signed
    checkpoint vouched for the torn record, it is re-signed for the last whole record.
    """
    key_path = key or (Path(os.environ["ASL_CAPTURE_KEY"]) if os.environ.get("ASL_CAPTURE_KEY") else None)
    if key_path is None and dev_key_path(os.environ).exists():
        key_path = dev_key_path(os.environ)

    def signer() -> Signer:
        assert key_path is not None
        passphrase = read_passphrase(passphrase_file=passphrase_file, environ=os.environ)
        return load_signer(key_path, passphrase=passphrase)

    try:
        result = repair(ProvenanceDir.existing(directory), signer=signer if key_path is not None else None)
    except AslError as exc:
        click.echo(f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    if result.removed == 0 and result.checkpoint == "ok":
        click.echo(f"asl-chain: nothing to repair: {result.records} whole record(s), no torn tail")
    elif result.removed == 0:
        click.echo(f"asl-chain: no torn tail: {result.records} whole record(s)")
    else:
        click.echo(f"asl-chain: truncated {result.removed} torn byte(s) at offset {result.offset} after "
                   f"{result.records} whole record(s); copy kept in {result.saved}")
    if result.checkpoint == "re-signed":
        click.echo(f"asl-chain: checkpoint re-signed for the last whole record (seq {result.records - 1})")
    elif result.checkpoint == "stale":
        click.echo("asl-chain: the checkpoint still vouches for the torn record; rerun with --key to re-sign it",
                   err=True)


def main() -> None:
    """Console entry point."""
    cli(prog_name="asl-chain")


if __name__ == "__main__":
    main()
