"""``asl-chain``: maintenance of a provenance chain (``repair`` truncates a torn tail)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from asl_capture.chain import repair
from asl_capture.cli.run import group, subcommand
from asl_capture.keys import load_signer, read_passphrase
from asl_capture.store import ProvenanceDir

EPILOG = "\b\nExit status: 0 success (or nothing to repair), 2 unreadable, unwritable or corrupt chain."


@group(epilog=EPILOG)
def cli() -> None:
    """Maintain an asl-capture provenance chain."""


@subcommand(cli, "repair", epilog=EPILOG)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path),
              help="The chain's signing key: repair refuses a chain this key did not sign (nothing is signed).")
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="Passphrase for an encrypted key.")
def repair_cmd(directory: Path, key: Path | None, passphrase_file: Path | None) -> None:
    """Truncate a torn tail left by a crash mid-append (or a zero-filled end left by an unclean
    shutdown), keeping a copy of the bytes removed.

    Whole records are never changed; a corrupt record before the tail is refused, and so is damage
    to a record the signed checkpoint vouches for (a crash cannot have torn it). Repair never
    signs anything: the checkpoint is left as it is.
    """
    kid = None
    if key is not None:
        passphrase = read_passphrase(passphrase_file=passphrase_file, environ=os.environ)
        kid = load_signer(key, passphrase=passphrase).kid
    result = repair(ProvenanceDir.existing(directory), kid=kid)
    if result.removed == 0:
        click.echo(f"asl-chain: nothing to repair: {result.records} whole record(s), no torn tail")
    else:
        what = "zero byte(s)" if result.zeros else "torn byte(s)"
        click.echo(f"asl-chain: truncated {result.removed} {what} at offset {result.offset} after "
                   f"{result.records} whole record(s); copy kept in {result.saved}")


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="asl-chain")


if __name__ == "__main__":
    main()
