"""asl-verify rebuild without building: what the record must hold, the mirror, the report."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from asl_capture import dcbor
from asl_capture.errors import VerificationError
from asl_capture.format import Entry, Source, StepRecord, Vcs
from asl_capture.rebuild import (
    Plan,
    RebuildError,
    SourceMissingError,
    _last_build,
    build_env,
    checkout,
    lay_out_mirror,
    plan,
)
from asl_capture.rebuildreport import manifest_diff, tree_diff
from asl_capture.sourcestore import SourceStore
from tests.unit.bodies import digest, minimal_record

ISO_SHA = "ab" * 32
DEB = b"a debian package"
DEB_URI = "http://deb.example/debian/pool/main/k/kmod/kmod_30-1_amd64.deb"


def _record(step: str, run: int, **changes: object) -> StepRecord:
    record = minimal_record(step, run=run).linked(chain=b"C" * 16, seq=run, prev=None)
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def _records(*, dirty: bool = False, vcs: bool = True, epoch: bool = True) -> list[StepRecord]:
    rootfs: dict[str, object] = {
        "sources": (Source(uri=DEB_URI, sha256=hashlib.sha256(DEB).digest(), kind="deb"),
                    Source(uri="http://deb.example/debian/dists/bookworm/InRelease", sha256=digest("rel"),
                           kind="release"))}
    if vcs:
        rootfs["vcs"] = Vcs(commit="c" * 40, tree="t" * 40, dirty=dirty)
    if epoch:
        rootfs["source_date_epoch"] = 1735689600
    return [_record("builder", 0), _record("rootfs", 1, **rootfs), _record("overlay", 2), _record("iso", 3)]


def _manifest(_digest: bytes) -> list[tuple[str, str]]:
    return [("out/work/isofs/live/vmlinuz", "00" * 32), ("out/asl-auth-host-1.0.0.iso", ISO_SHA)]


def test_plan_takes_commit_epoch_sources_and_the_recorded_iso() -> None:
    p = plan(_records(), iso_sha256=ISO_SHA, read_manifest=_manifest)
    assert (p.commit, p.tree, p.epoch, p.iso_label) == ("c" * 40, "t" * 40, 1735689600, "out/asl-auth-host-1.0.0.iso")
    assert ("deb", "pool/main/k/kmod/kmod_30-1_amd64.deb", hashlib.sha256(DEB).hexdigest()) in p.sources


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dirty": True}, "dirty tree"),
    ({"vcs": False}, "no git commit"),
    ({"epoch": False}, "SOURCE_DATE_EPOCH"),
])
def test_plan_refuses_what_cannot_be_rebuilt(kwargs: dict[str, bool], message: str) -> None:
    with pytest.raises(RebuildError, match=message):
        plan(_records(**kwargs), iso_sha256=ISO_SHA, read_manifest=_manifest)


def test_plan_refuses_an_iso_the_record_does_not_name() -> None:
    with pytest.raises(VerificationError, match="not the one the record names") as info:
        plan(_records(), iso_sha256="cd" * 32, read_manifest=_manifest)
    assert info.value.exit_code == 1


def test_no_successful_iso_step_is_nothing_to_rebuild() -> None:
    records = [*_records()[:3], _record("iso", 3, status="failed")]
    with pytest.raises(RebuildError, match="no successful iso step"):
        _last_build(records)


def test_a_partial_rerun_builds_on_the_earlier_rootfs() -> None:
    records = [*_records(), _record("overlay", 4), _record("iso", 5)]
    steps = _last_build(records)
    assert steps["rootfs"].seq == 1 and steps["overlay"].seq == 4 and steps["iso"].seq == 5


def _plan_with_sources(store: SourceStore, tmp_path: Path) -> Plan:
    deb = tmp_path / "kmod.deb"
    deb.write_bytes(DEB)
    store.put(deb, hashlib.sha256(DEB).hexdigest())
    return plan(_records(), iso_sha256=ISO_SHA, read_manifest=_manifest)


def test_mirror_is_laid_out_from_the_store(tmp_path: Path) -> None:
    store = SourceStore(tmp_path / "store")
    p = _plan_with_sources(store, tmp_path)
    rel = tmp_path / "rel"
    rel.write_bytes(b"x")
    p = Plan(**{**p.__dict__, "sources": tuple(s for s in p.sources if s[0] == "deb")})
    laid, fetched = lay_out_mirror(p, tmp_path / "mirror", stores=[store], debs={}, uris={}, fetch=False,
                                   notify=lambda _l: None)
    assert (laid, fetched) == (1, 0)
    assert (tmp_path / "mirror/pool/main/k/kmod/kmod_30-1_amd64.deb").read_bytes() == DEB


def test_a_missing_package_is_named(tmp_path: Path) -> None:
    p = plan(_records(), iso_sha256=ISO_SHA, read_manifest=_manifest)
    with pytest.raises(SourceMissingError, match=r"package kmod 30-1 \(amd64\)") as info:
        lay_out_mirror(p, tmp_path / "mirror", stores=[SourceStore(tmp_path / "empty")], debs={},
                       uris={"pool/main/k/kmod/kmod_30-1_amd64.deb": "http://127.0.0.1:9/nothing.deb"}, fetch=True,
                       notify=lambda _l: None)
    assert info.value.exit_code == 2 and "cannot be fetched" in str(info.value)
    assert not (tmp_path / "mirror").exists()


def test_build_env_drops_asl_variables_and_sets_the_recorded_epoch(tmp_path: Path) -> None:
    env = build_env({"ASL_STEPS": "iso", "SOURCE_DATE_EPOCH": "1", "TZ": "X", "ASL_CAPTURE_KEY": "/k"},
                    epoch=1735689600, config=tmp_path / "c.yaml", key=tmp_path / "k")
    assert "ASL_STEPS" not in env and env["TZ"] == "X" and env["SOURCE_DATE_EPOCH"] == "1735689600"
    assert env["ASL_CAPTURE_KEY"] == str(tmp_path / "k") and env["ASL_APT_CHECK_VALID_UNTIL"] == "0"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_checkout_refuses_a_missing_commit_and_a_different_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "f").write_text("x\n")
    _git(repo, "add", "f")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "one")
    commit, tree = _git(repo, "rev-parse", "HEAD"), _git(repo, "rev-parse", "HEAD^{tree}")
    p = plan(_records(), iso_sha256=ISO_SHA, read_manifest=_manifest)
    checkout(str(repo), Plan(**{**p.__dict__, "commit": commit, "tree": tree}), tmp_path / "ok")
    assert (tmp_path / "ok" / "f").read_text() == "x\n"
    with pytest.raises(RebuildError, match="does not hold the recorded commit"):
        checkout(str(repo), Plan(**{**p.__dict__, "commit": "1" * 40, "tree": tree}), tmp_path / "a")
    with pytest.raises(RebuildError, match="has tree"):
        checkout(str(repo), Plan(**{**p.__dict__, "commit": commit, "tree": "2" * 40}), tmp_path / "b")


def test_tree_diff_names_content_mode_type_and_presence() -> None:
    a = {"bin/x": Entry(b"bin/x", "f", 0o755, 3, b"\x01" * 32), "etc/y": Entry(b"etc/y", "f", 0o644, 1, b"\x02" * 32),
         "lnk": Entry(b"lnk", "l", 0o777, 1, b"a"), "gone": Entry(b"gone", "d", 0o755, 0, None)}
    b = {"bin/x": Entry(b"bin/x", "f", 0o755, 3, b"\x03" * 32), "etc/y": Entry(b"etc/y", "f", 0o600, 1, b"\x02" * 32),
         "lnk": Entry(b"lnk", "f", 0o644, 1, b"\x04" * 32), "new": Entry(b"new", "f", 0o644, 0, b"\x05" * 32)}
    lines = tree_diff(a, b, label=lambda p: f"squashfs:/{p}")
    assert lines == [
        "squashfs:/bin/x: content differs (size 3 -> 3, sha256 0101010101010101... -> 0303030303030303...)",
        "squashfs:/etc/y: mode 0644 -> 0600",
        "squashfs:/gone: only in the original",
        "squashfs:/lnk: type l -> f",
        "squashfs:/new: only in the rebuild",
    ]


def test_manifest_diff_names_fields() -> None:
    a = dcbor.encode({"v": 1, "overlay": {"manifest": b"\x01" * 32}, "files": {"live/vmlinuz": b"\x02" * 32}})
    b = dcbor.encode({"v": 1, "overlay": {"manifest": b"\x03" * 32}, "files": {"live/vmlinuz": b"\x02" * 32}})
    assert manifest_diff(a, b) == ["overlay.manifest: 0101010101010101... -> 0303030303030303..."]


def test_builder_differences_warn_or_fail_with_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    from asl_capture import builder
    from asl_capture.rebuild import BuilderMismatchError, check_builder

    host = [builder.Tool("xorriso", "xorriso", "1.5.5-1", "amd64", "a" * 64)]
    monkeypatch.setattr(builder, "host_tools", lambda: (host, []))
    recorded = (builder.Tool("xorriso", "xorriso", "1.5.4-4", "amd64", "a" * 64),)
    p = Plan(**{**plan(_records(), iso_sha256=ISO_SHA, read_manifest=_manifest).__dict__, "tools": recorded})
    warned: list[str] = []
    assert check_builder(p, strict=False, notify=warned.append) == (
        "xorriso: recorded 1.5.4-4 (amd64), host 1.5.5-1 (amd64)",)
    assert "host build tools differ" in warned[0]
    with pytest.raises(BuilderMismatchError, match=r"xorriso: recorded 1\.5\.4-4") as info:
        check_builder(p, strict=True, notify=warned.append)
    assert info.value.exit_code == 1
    none = Plan(**{**p.__dict__, "tools": ()})
    with pytest.raises(BuilderMismatchError, match="no builder tools"):
        check_builder(none, strict=True, notify=warned.append)
