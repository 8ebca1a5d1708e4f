"""``asl-capture [OPTIONS] -- CMD [ARGS...]``: run a build step and append its signed record."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from asl_capture.capture import CaptureConfig, capture
from asl_capture.cli.run import command
from asl_capture.errors import UsageError

HELP_EPILOG = """\b
Exit status: the command's own exit code; 128+N when signal N ended it; 127 when it
cannot be started; 2 (the command is NOT run) for a usage error, an unusable key or
provenance directory (missing, unwritable, not owned by you or writable by others), a
torn chain tail, an unreadable input, a deleted working directory or text that cannot
be recorded; 125 when the command ran but its record could not be written or completed
(a full disk included: nothing half-written is left behind).
\b
As root, CMD runs as the unprivileged build user (asl-build, or --user), so that no step
can read the key, this process's memory or environment, or write the provenance
directory; --as-root keeps root. Captures nested in CMD append through this one, which
holds the chain: a step that alters the chain makes this capture restore it, record the
fact (status failed) and exit non-zero (125 when CMD itself succeeded).
\b
Environment: ASL_CAPTURE_DIR (provenance directory), ASL_CAPTURE_KEY (signing key),
ASL_KEY_PASSPHRASE or ASL_CAPTURE_PASSPHRASE_FILE (key passphrase), ASL_CAPTURE_USER
(the user CMD runs as under root; "root" keeps root). The command gets ASL_CAPTURE_DIR,
ASL_CAPTURE_PARENT and ASL_CAPTURE_AGENT (the socket through which the captures nested in
it append, while it runs); never the key's path or passphrase.
"""


@command(epilog=HELP_EPILOG, allow_interspersed_args=False)
@click.option("--step", help="Step name (default: the command's basename).")
@click.option("--provenance", type=click.Path(path_type=Path),
              help="Provenance directory (default: $ASL_CAPTURE_DIR, else ./provenance).")
@click.option("--key", type=click.Path(path_type=Path), help="Ed25519 private key (default: $ASL_CAPTURE_KEY, "
              "else a per-user development key).")
@click.option("--passphrase-file", type=click.Path(path_type=Path), help="File whose first line is the key's "
              "passphrase (or set ASL_KEY_PASSPHRASE).")
@click.option("--ephemeral-key", is_flag=True, help="Sign with a fresh key held only in memory for this build; "
              "its public key is recorded in this capture's record (publish with asl-release).")
@click.option("-i", "--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="Input file or directory (repeatable).")
@click.option("-o", "--output", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Output file or directory (repeatable).")
@click.option("--exclude", "excludes", multiple=True, help="Glob of paths to leave out of snapshots (repeatable).")
@click.option("--root", type=click.Path(path_type=Path),
              help="Snapshot root when no -i/-o is given (default: the working directory).")
@click.option("--sources", "sources_file", type=click.Path(path_type=Path),
              help="JSON Lines file the step writes, listing what it took from outside (recorded as sources).")
@click.option("--attach", "attach", multiple=True, type=click.Path(path_type=Path),
              help="After the step, store the bytes of this file (or of every file under this directory) as "
                   "objects named in the record (repeatable).")
@click.option("--user", "user", help="Run as root: run CMD as this user (name or uid; default: $ASL_CAPTURE_USER, "
              "else the build user asl-build, created on first use).")
@click.option("--as-root", is_flag=True, help="Run as root: run CMD as root (steps can then reach the key holder; "
              "the record says so).")
@click.option("--writable", "writable", multiple=True, type=click.Path(path_type=Path),
              help="Directory the build user may create entries in (made if missing; group-writable, sticky; "
                   "repeatable; also [tool.asl-capture] writable).")
@click.argument("command", nargs=-1, required=False, type=click.UNPROCESSED)
def cli(step: str | None, provenance: Path | None, key: Path | None, passphrase_file: Path | None,
        ephemeral_key: bool, inputs: tuple[Path, ...], outputs: tuple[Path, ...], excludes: tuple[str, ...],
        root: Path | None, sources_file: Path | None, attach: tuple[Path, ...], user: str | None, as_root: bool,
        writable: tuple[Path, ...], command: tuple[str, ...]) -> int:
    """Run CMD, hash what it read and wrote, and append a signed provenance record."""
    progress = (lambda msg: click.echo(f"\r{msg}", err=True, nl=False)) if sys.stderr.isatty() else None
    try:
        cwd = Path(os.getcwd())
    except OSError as exc:
        raise UsageError(f"the working directory cannot be used ({exc.strerror}; was it deleted?); "
                         f"the command was not run") from None
    config = CaptureConfig(
        argv=command, environ=dict(os.environ), cwd=cwd, step=step, provenance=provenance, key=key,
        passphrase_file=passphrase_file, ephemeral_key=ephemeral_key, inputs=inputs, outputs=outputs,
        excludes=excludes, root=root, sources_file=sources_file, attach=attach, user=user, as_root=as_root,
        writable=writable, progress=progress,
    )
    outcome = capture(config, notify=lambda msg: click.echo(msg, err=True))
    error = outcome.record.error
    if error is not None:
        shown = error if isinstance(error, str) else error.decode("utf-8", "backslashreplace")
        click.echo(f"asl-capture: {shown} (recorded as seq {outcome.seq}, "
                   f"status {outcome.record.status})", err=True)
    if outcome.record.ephemeral_key is not None:
        from asl_capture.cose import key_id

        click.echo(f"asl-capture: signed with ephemeral build key {key_id(outcome.record.ephemeral_key).hex()} "
                   f"(now forgotten; its public key is in record seq {outcome.seq})", err=True)
    return outcome.exit_code


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="asl-capture")


if __name__ == "__main__":
    main()
