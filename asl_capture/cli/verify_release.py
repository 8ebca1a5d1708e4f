"""``asl-verify release``: check a release directory offline (thin CLI over :mod:`asl_capture.release.verify`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from asl_capture.cli.run import CONTEXT, version_option
from asl_capture.errors import AslError, VerificationError
from asl_capture.keys import load_trust
from asl_capture.release.verify import JSON_SCHEMA, ReleaseReport, ReleaseVerificationError, verify_release
from asl_capture.verdict import Check

EPILOG = "\b\nExit status: 0 verified, 1 verification failed, 2 usage error or unreadable input."


@click.command("release", epilog=EPILOG, context_settings=CONTEXT)
@version_option()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(path_type=Path),
              help="The release public key; further keys pin the build keys (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON (schema asl-verify/release/1).")
def release_cmd(directory: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Verify a release DIRECTORY: RELEASE.cbor, every file, SHA256SUMS and its minisign signature,
    the chain's head, the in-toto envelope, then the ISO."""
    def log(check: Check) -> None:
        if not as_json:
            click.echo(f"  {check.number}. {check.name:<9} {'ok  ' if check.ok else 'FAIL'}  {check.detail}")

    if not as_json:
        click.echo(f"asl-verify release {directory}")
    report: ReleaseReport | None = None
    error: AslError | None = None
    try:
        report = verify_release(directory, load_trust(list(trust)), log=log)
    except ReleaseVerificationError as exc:
        report, error = exc.report, exc
    except AslError as exc:
        error = exc
    m = report.manifest if report is not None else None
    if as_json:
        out: dict[str, Any] = {
            "schema": JSON_SCHEMA, "path": str(directory),
            "verdict": "verified" if error is None else "failed" if isinstance(error, VerificationError) else "error",
            "checks": [{"number": c.number, "name": c.name, "ok": c.ok, "detail": c.detail}
                       for c in (report.checks if report is not None else ())],
            "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        }
        if m is not None:
            out.update({"name": m.name, "version": m.version, "iso": {"name": m.iso_name, "sha256": m.iso_sha256.hex()},
                        "image_identity": f"sha256:{m.image.hex()}",
                        "head": {"seq": m.head_seq, "sha256": m.head_digest.hex()},
                        "build_keys": [k.kid.hex() for k in m.build_keys]})
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    elif error is None and m is not None:
        click.echo(f"image identity: sha256:{m.image.hex()}")
        click.echo(f"VERIFIED: release {m.name} {m.version}, {m.iso_name} sha256 {m.iso_sha256.hex()}")
    elif isinstance(error, VerificationError):
        click.echo("FAILED")
    if error is not None:
        raise error  # shown and mapped to its exit code by cli.run
