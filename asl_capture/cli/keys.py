"""``asl-keys``: create Ed25519 signing keys and print key ids."""

from __future__ import annotations

import os
from pathlib import Path

import click

from asl_capture.cli.run import group, subcommand
from asl_capture.cose import key_id
from asl_capture.errors import KeyFileError
from asl_capture.keys import file_public_key, generate, read_passphrase

EPILOG = "\b\nExit status: 0 success, 2 usage error, unusable key file or wrong passphrase."


@group(epilog=EPILOG)
def cli() -> None:
    """Manage asl-capture Ed25519 keys. Passphrases come from a file or $ASL_KEY_PASSPHRASE."""


@subcommand(cli, "generate", epilog=EPILOG)
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where to write NAME.key (0600) and NAME.pub.")
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="Encrypt the key with the passphrase "
              "on this file's first line (or set ASL_KEY_PASSPHRASE).")
def generate_cmd(name: str, directory: Path, passphrase_file: Path | None) -> None:
    """Create NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SubjectPublicKeyInfo PEM)."""
    passphrase = read_passphrase(passphrase_file=passphrase_file, environ=os.environ)
    key_path, pub_path, kid = generate(name, directory=directory, passphrase=passphrase)
    click.echo(f"asl-keys: wrote {key_path} and {pub_path}", err=True)
    click.echo(kid.hex())


@subcommand(cli, "id", epilog=EPILOG)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="Passphrase for an encrypted private key.")
def id_cmd(file: Path, passphrase_file: Path | None) -> None:
    """Print the key id (hex SHA-256 of the raw public key) of a public or private key FILE."""
    public = file_public_key(file, passphrase=lambda: read_passphrase(passphrase_file=passphrase_file,
                                                                      environ=os.environ))
    click.echo(key_id(public).hex())


@subcommand(cli, "export", epilog=EPILOG)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["minisign"]), required=True,
              help="minisign: the public key file `minisign -V -p FILE` reads.")
@click.option("--out", type=click.Path(path_type=Path), help="Write it to this file (default: stdout).")
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="Passphrase for an encrypted private key.")
def export_cmd(file: Path, fmt: str, out: Path | None, passphrase_file: Path | None) -> None:
    """Print the public key of a public or private key FILE in another format (never a private key)."""
    from asl_capture import minisign

    public = file_public_key(file, passphrase=lambda: read_passphrase(passphrase_file=passphrase_file,
                                                                      environ=os.environ))
    assert fmt == "minisign"
    text = minisign.public_key_file(public)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        with open(out, "x", encoding="ascii") as handle:
            handle.write(text)
    except OSError as exc:
        raise KeyFileError(f"{out}: cannot write: {exc.strerror}") from None
    click.echo(f"asl-keys: wrote {out}", err=True)


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="asl-keys")


if __name__ == "__main__":
    main()
