"""``asl-verify``: offline verification of provenance chains.

``--json`` output schema (``asl-verify/chain/1``) is documented in ``docs/FORMAT.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from asl_capture.cli.run import group, subcommand
from asl_capture.errors import AslError, VerificationError
from asl_capture.keys import load_trust
from asl_capture.verify import CHECKS, ChainReport, StepNode, verify_chain

EPILOG = "\b\nExit status: 0 verified, 1 verification failed, 2 usage error or unreadable input."
#: The schema each subcommand's ``--json`` output names (usage errors are reported under it too);
#: the others' are their modules' ``JSON_SCHEMAS``/``JSON_SCHEMA``, held equal by a test.
JSON_SCHEMAS = {"chain": "asl-verify/chain/1"}
_ALL_SCHEMAS = {**JSON_SCHEMAS, "iso": "asl-verify/iso/1", "show": "asl-verify/show/1",
                "release": "asl-verify/release/1"}
#: Subcommands imported only when run (or listed by ``--help``): ``chain`` starts without the ISO
#: reader, the rebuild and the release modules (about 16 ms of every start).
LAZY = {"iso": "asl_capture.cli.verify_iso:iso_cmd", "show": "asl_capture.cli.verify_iso:show_cmd",
        "rebuild": "asl_capture.cli.rebuild:rebuild_cmd", "release": "asl_capture.cli.verify_release:release_cmd"}


@group(epilog=EPILOG, json_schemas=_ALL_SCHEMAS, lazy=LAZY)
def cli() -> None:
    """Verify asl-capture provenance offline."""


def _shown(text: str | bytes) -> str:
    """Recorded text for display: bytes that are not UTF-8 shown with backslash escapes."""
    return text if isinstance(text, str) else text.decode("utf-8", "backslashreplace")


def _node_json(top: StepNode) -> dict[str, Any]:
    """The JSON of a step and its descendants, built without recursion (nesting has no limit)."""
    def one(node: StepNode) -> dict[str, Any]:
        r = node.record
        return {
            "seq": node.seq, "step": _shown(r.step), "status": r.status, "exit": r.exit, "id": r.id.hex(),
            "started_ns": r.started, "finished_ns": r.finished, "duration_ns": r.finished - r.started,
            "children": [],
        }

    root = one(top)
    stack = [(top, root)]
    while stack:
        node, out = stack.pop()
        for child in node.children:
            child_out = one(child)
            out["children"].append(child_out)
            stack.append((child, child_out))
    return root


def _depth(nodes: tuple[StepNode, ...]) -> int:
    deepest, stack = 0, [(n, 1) for n in nodes]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in node.children)
    return deepest


def _tree_lines(nodes: tuple[StepNode, ...]) -> list[str]:
    lines: list[str] = []
    stack = [(n, 0) for n in reversed(nodes)]
    while stack:
        node, depth = stack.pop()
        r = node.record
        seconds = (r.finished - r.started) / 1e9
        lines.append(f"  {'  ' * depth}#{node.seq} {_shown(r.step)}: {r.status} (exit {r.exit}, {seconds:.2f} s)")
        stack.extend((c, depth + 1) for c in reversed(node.children))
    return lines


@subcommand(cli, "chain", epilog=EPILOG)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Trusted public key (*.pub) or a directory of them (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON (schema asl-verify/chain/1).")
def chain_cmd(directory: Path, trust: tuple[Path, ...], as_json: bool) -> None:
    """Verify the signed chain in a provenance DIRECTORY."""
    checks: list[dict[str, Any]] = []

    def log(number: int, name: str, detail: str) -> None:
        checks.append({"number": number, "name": name, "ok": True, "detail": detail})
        if not as_json:
            click.echo(f"  {number}. {name:<9} ok    {detail}")

    if not as_json:
        click.echo(f"asl-verify chain {directory}")
    report: ChainReport | None = None
    error: AslError | None = None
    try:
        report = verify_chain(directory, load_trust(list(trust)), log=log)
    except AslError as exc:
        error = exc
    if as_json:
        document = _json(directory, checks, report, error)
        limit = sys.getrecursionlimit()
        # json's encoder recurses once per nesting level: allow the tree's depth (two levels per step)
        sys.setrecursionlimit(max(limit, 2 * _depth(report.tree if report is not None else ()) + 200))
        try:
            click.echo(json.dumps(document, indent=2, sort_keys=True))
        finally:
            sys.setrecursionlimit(limit)
    elif report is not None:
        click.echo("\n".join(["steps:", *_tree_lines(report.tree)]))  # one write: a chain can be long
        click.echo(f"VERIFIED: {len(report.records)} records, chain {report.chain_id.hex()}, "
                   f"head seq {report.head_seq} sha256 {report.head_digest.hex()}")
    if error is not None:
        if isinstance(error, VerificationError) and not as_json:
            number = CHECKS.index(error.check) + 1 if error.check in CHECKS else len(checks) + 1
            click.echo(f"  {number}. {error.check:<9} FAIL  {error}")
            click.echo("FAILED")
        raise error  # shown and mapped to its exit code by cli.run, like every other error


def _json(directory: Path, checks: list[dict[str, Any]], report: ChainReport | None,
          error: AslError | None) -> dict[str, Any]:
    out: dict[str, Any] = {"schema": JSON_SCHEMAS["chain"], "path": str(directory), "checks": checks}
    if report is not None:
        out.update({
            "verdict": "verified", "chain": report.chain_id.hex(), "records": len(report.records),
            "head": {"seq": report.head_seq, "sha256": report.head_digest.hex()},
            "keys": [k.hex() for k in report.kids], "objects": report.objects,
            "steps": [_node_json(n) for n in report.tree], "error": None,
        })
    if error is not None:
        failed = isinstance(error, VerificationError)
        out.update({
            "verdict": "failed" if failed else "error",
            "error": {
                "type": type(error).__name__, "message": str(error),
                "check": error.check if isinstance(error, VerificationError) else None,
                "record": error.record if isinstance(error, VerificationError) else None,
            },
        })
        if failed and isinstance(error, VerificationError):
            checks.append({"number": CHECKS.index(error.check) + 1 if error.check in CHECKS else len(checks) + 1,
                           "name": error.check, "ok": False, "detail": str(error)})
    return out


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="asl-verify")


if __name__ == "__main__":
    main()
