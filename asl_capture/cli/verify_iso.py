"""``asl-verify iso``: the auditor's verdict on an ISO. ``--json`` schema ``asl-verify/iso/1`` (docs/AUDIT.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from asl_capture.cli.run import CONTEXT, version_option
from asl_capture.errors import AslError

#: The schemas of the ``--json`` output of ``asl-verify iso`` and ``asl-verify show``.
JSON_SCHEMAS = {"iso": "asl-verify/iso/1", "show": "asl-verify/show/1"}
EPILOG = ("\b\nExit status: 0 verified, 1 verification failed (a check failed), 2 usage error or unusable "
          "input (missing ISO or provenance directory, unreadable trust key, graph not writable).")


@click.command("iso", epilog=EPILOG, context_settings=CONTEXT)
@version_option()
@click.argument("iso", type=click.Path(path_type=Path))
@click.option("--provenance", required=True, type=click.Path(path_type=Path),
              help="The provenance directory of the build (chain.cbor and objects/).")
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Trusted public key (*.pub) or a directory of them (repeatable).")
@click.option("--quick", is_flag=True, help="Checks 1, 2, 3 and 7 only (no squashfs, closure or Debian checks).")
@click.option("--debian-keyring", "keyrings", multiple=True, type=click.Path(path_type=Path),
              help="An OpenPGP keyring you trust for Debian's archive (repeatable); checked against the "
                   "recorded one and used to verify the InRelease signatures.")
@click.option("--graph", type=click.Path(path_type=Path),
              help="Write the step/artifact graph: SVG when FILE ends in .svg (needs Graphviz), else DOT.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON (schema asl-verify/iso/1).")
def iso_cmd(iso: Path, provenance: Path, trust: tuple[Path, ...], quick: bool, keyrings: tuple[Path, ...],
            graph: Path | None, as_json: bool) -> None:
    """Verify ISO against its signed build record, offline and without root."""
    from asl_capture.audit.isoverify import CHECKS, IsoOptions, IsoReport, IsoVerificationError, verify_iso
    from asl_capture.keys import load_trust
    from asl_capture.verdict import Check

    def log(check: Check) -> None:
        if not as_json:
            state = "ok  " if check.ok else "FAIL"
            where = f"record {check.record}: " if check.record is not None and not check.ok else ""
            click.echo(f"  {check.number}. {check.name:<14} {state}  {where}{check.detail}")

    if not as_json:
        click.echo(f"asl-verify iso {iso}" + (" (quick: checks 1, 2, 3, 7)" if quick else ""))
    report: IsoReport | None = None
    error: AslError | None = None
    try:
        report = verify_iso(iso, provenance, load_trust(list(trust)),
                            options=IsoOptions(quick=quick, debian_keyrings=keyrings), log=log)
    except IsoVerificationError as exc:
        report, error = exc.report, exc
    except AslError as exc:
        error = exc
    graph_note = None
    if graph is not None and report is not None and report.chain is not None:
        from asl_capture.audit import graph as graphs
        from asl_capture.audit.recorded import Recorded

        try:
            kind = graphs.write(Recorded(provenance, report.chain), graph)
            graph_note = f"graph: {graph} ({kind})"
        except AslError as exc:
            error = error or exc
    if as_json:
        click.echo(json.dumps(_json(iso, provenance, quick, report, error, CHECKS), indent=2, sort_keys=True))
    elif report is not None:
        for note in report.notes:
            click.echo(f"  note: {note}")
        if report.sha256 is not None:
            click.echo(f"iso sha256: {report.sha256.hex()}")
        if report.image_identity is not None:
            click.echo(f"image identity: sha256:{report.image_identity.hex()}")
        if graph_note:
            click.echo(graph_note)
        if report.ok and error is None:
            click.echo("VERIFIED" + (" (quick: checks 4, 5, 6 not run)" if quick else ": all 7 checks passed"))
        else:
            failed = ", ".join(f"{c.number} {c.name}" for c in report.failures)
            click.echo(f"FAILED: {failed}" if failed else "FAILED")
    if error is not None:
        raise error  # shown and mapped to its exit code by cli.run


def _json(iso: Path, provenance: Path, quick: bool, report: Any, error: AslError | None,
          checks: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema": JSON_SCHEMAS["iso"], "iso": str(iso), "provenance": str(provenance),
        "mode": "quick" if quick else "full", "checks": [], "iso_sha256": None, "image_identity": None,
        "chain": None, "notes": [], "error": None,
    }
    if report is not None:
        out["checks"] = [{"number": c.number, "name": c.name, "ok": c.ok, "detail": c.detail, "record": c.record}
                         for c in report.checks]
        out["iso_sha256"] = report.sha256.hex() if report.sha256 is not None else None
        out["image_identity"] = f"sha256:{report.image_identity.hex()}" if report.image_identity else None
        out["notes"] = list(report.notes)
        if report.chain is not None:
            out["chain"] = {"id": report.chain.chain_id.hex(), "records": len(report.chain.records),
                            "head": {"seq": report.chain.head_seq, "sha256": report.chain.head_digest.hex()},
                            "keys": [k.hex() for k in report.chain.kids]}
    if error is None:
        out["verdict"] = "verified"
    else:
        out["verdict"] = "failed" if error.exit_code == 1 else "error"
        out["error"] = {"type": type(error).__name__, "message": str(error),
                        "check": getattr(error, "check", None) or None, "record": getattr(error, "record", None)}
    del checks
    return out



@click.command("show", epilog="\b\nExit status: 0 shown, 1 the chain does not verify (with --trust) or cannot be "
               "decoded, 2 usage error or unreadable input.", context_settings=CONTEXT)
@version_option()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("seq", type=int, required=False)
@click.option("--trust", "trust", multiple=True, type=click.Path(path_type=Path),
              help="Verify the chain with these keys first (without: signatures are NOT checked).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON (schema asl-verify/show/1).")
def show_cmd(directory: Path, seq: int | None, trust: tuple[Path, ...], as_json: bool) -> None:
    """Show the records of the chain in DIRECTORY (or record SEQ in full) in human terms."""
    from asl_capture.audit import show
    from asl_capture.keys import load_trust

    records, verified = show.load(directory, load_trust(list(trust)) if trust else None)
    chosen = show.select(records, seq)
    seqs = {r.id: r.seq for r in records}
    summaries = [show.summary(r, seqs) for r in chosen]
    for record in chosen:
        for warning in show.log_warnings(directory, record):
            click.echo(f"asl-verify: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"schema": JSON_SCHEMAS["show"], "path": str(directory), "verified": verified,
                               "records": summaries}, indent=2, sort_keys=True))
        return
    click.echo(f"{directory}: {len(records)} record(s), "
               + ("signatures verified" if verified else "signatures NOT checked (pass --trust to verify)"))
    for s in summaries:
        for line in show.lines(s, full=seq is not None):
            click.echo(line)
