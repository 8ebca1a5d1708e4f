"""``asl-release publish``: publish a verified build as a signed release directory (docs/RELEASE.md)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType

import click

from asl_capture.cli.run import EXIT_INTERRUPTED, group, subcommand
from asl_capture.release.publish import PublishConfig, publish

EPILOG = """\b
Exit status: 0 published; 1 refused (the ISO does not verify, the release key signed the
build, the versioning rule, or that version is already published); 2 usage error or
unreadable input. Nothing is left in OUT when publishing fails or is interrupted.
"""


@group(epilog=EPILOG)
def cli() -> None:
    """Publish releases of the ASL authority-host image."""


@subcommand(cli, "publish", epilog=EPILOG)
@click.option("--iso", required=True, type=click.Path(path_type=Path), help="The ISO the build wrote.")
@click.option("--provenance", required=True, type=click.Path(path_type=Path), help="Its provenance directory.")
@click.option("--key", required=True, type=click.Path(path_type=Path),
              help="The release key (Ed25519, PKCS#8 PEM): never a key that signed the build.")
@click.option("--passphrase-file", type=click.Path(path_type=Path),
              help="Passphrase of the release key (or set ASL_KEY_PASSPHRASE).")
@click.option("--trust", multiple=True, type=click.Path(path_type=Path),
              help="Public key (or directory of *.pub) of the build; not needed for --ephemeral-key builds.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where OUT/<version>/ is written.")
def publish_cmd(iso: Path, provenance: Path, key: Path, passphrase_file: Path | None, trust: tuple[Path, ...],
                out: Path) -> int:
    """Verify ISO against its build record and write OUT/<version>/: the ISO, provenance/,
    RELEASE.cbor, SHA256SUMS, SHA256SUMS.minisig and ISO.intoto.jsonl."""
    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, interrupted)  # unwind, so the temporary directory is removed
    config = PublishConfig(iso=iso, provenance=provenance, key=key, out=out, passphrase_file=passphrase_file,
                           trust=trust, environ=dict(os.environ))
    try:
        done = publish(config, log=lambda msg: click.echo(f"asl-release: {msg}", err=True))
    except KeyboardInterrupt:
        click.echo("asl-release: interrupted; nothing was published", err=True)
        return EXIT_INTERRUPTED
    if done.previous is not None and done.changes is not None:
        what = "; ".join(done.changes.incompatible + done.changes.additions) or "no change to the compatibility surface"
        click.echo(f"asl-release: compared with {done.previous}: {what}", err=True)
    click.echo(str(done.directory))
    return 0


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="asl-release")


if __name__ == "__main__":
    main()
