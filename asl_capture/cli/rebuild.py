"""``asl-verify rebuild``: rebuild the ISO from its record and compare (thin CLI over :mod:`asl_capture.rebuild`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from asl_capture.cli.run import CONTEXT, version_option
from asl_capture.errors import AslError

EPILOG = ("\b\nExit status: 0 rebuilt, same ISO bytes; 1 the rebuild differs (a layer-by-layer report is\n"
          "printed), the ISO is not the recorded one, the record's signatures fail (--trust) or, with\n"
          "--strict-builder, the host's build tools differ from the recorded ones; 2 usage error,\n"
          "unreadable record, a recorded package in no store and not fetchable, or a build that fails.")


@click.command("rebuild", epilog=EPILOG, context_settings=CONTEXT)
@version_option()
@click.option("--provenance", "provenance", required=True, type=click.Path(path_type=Path),
              help="The build's provenance directory (out/provenance).")
@click.option("--iso", "iso", required=True, type=click.Path(path_type=Path), help="The ISO to compare with.")
@click.option("--source", "source", required=True, help="Git repository holding the recorded commit (path or URL).")
@click.option("--debs", "debs", type=click.Path(path_type=Path),
              help="Directory of the recorded files by digest (a source store) and/or .deb files; default "
                   "the durable store ${XDG_CACHE_HOME:-~/.cache}/asl-capture/sha256.")
@click.option("--work", "work", type=click.Path(path_type=Path),
              help="Scratch directory (kept); default a temporary one, removed unless the rebuild differs.")
@click.option("--strict-builder", is_flag=True, help="Fail when the host's build tools differ from the recorded ones.")
@click.option("--offline", is_flag=True, help="Never fetch a missing source from its recorded URI.")
@click.option("--trust", "trust", multiple=True, type=click.Path(path_type=Path),
              help="Verify the record's signatures with these keys first (*.pub or a directory; repeatable).")
def rebuild_cmd(provenance: Path, iso: Path, source: str, debs: Path | None, work: Path | None,
                strict_builder: bool, offline: bool, trust: tuple[Path, ...]) -> None:
    """Rebuild the ISO from its record (commit, packages, epoch) and compare the bytes."""
    from asl_capture.rebuild import RebuildConfig, RebuildMismatchError, rebuild

    def notify(line: str) -> None:
        click.echo(line, err=True)

    scratch: Path | None = None
    try:
        records = None
        if trust:
            from asl_capture.keys import load_trust
            from asl_capture.verify import verify_chain

            records = verify_chain(provenance, load_trust(list(trust))).records
            notify(f"asl-verify rebuild: {len(records)} records verified with the trusted keys")
        else:
            notify("asl-verify rebuild: record signatures not checked (no --trust; see asl-verify chain)")
        scratch = work if work is not None else Path(tempfile.mkdtemp(prefix="asl-rebuild-"))
        config = RebuildConfig(provenance=provenance, iso=iso, source=source, environ=dict(os.environ), debs=debs,
                               work=scratch, strict_builder=strict_builder, fetch=not offline, records=records,
                               notify=notify)
        outcome = rebuild(config)
    except RebuildMismatchError as exc:
        for line in exc.report:
            click.echo(line)
        click.echo(f"MISMATCH: {exc}")
        click.echo(f"asl-verify rebuild: scratch kept: {scratch}", err=True)
        raise  # shown and mapped to its exit code by cli.run
    except AslError:
        if work is None and scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    click.echo(f"REBUILT: sha256:{outcome.iso_sha256} equals {iso}")
    if outcome.image_identity is not None:
        click.echo(f"image identity: {outcome.image_identity}")
    click.echo(f"rebuild: build {outcome.build_seconds:.1f} s, total {outcome.total_seconds:.1f} s")
    if outcome.builder_differences:
        click.echo(f"builder: {len(outcome.builder_differences)} tool difference(s) (warned above)")
    if work is None:
        shutil.rmtree(outcome.work, ignore_errors=True)
