"""Reproducibility and ``asl-verify rebuild`` end to end (slow: real builds).

Builds, shared: the session build (``pipeline_build``: umask 022, a directory every user can enter,
the machine's host name, time zone, locale, CPUs and HOME) is the original. One rebuild of it varies
everything the image must not depend on at once, from a clone in another directory, offline: umask
077, a build directory below a mode-0700 directory with a space in its path, TZ, LANG/LC_ALL, the
host name (UTS and /etc/hostname, with another mode), one CPU, another HOME, no network. A second
original, made from the session tree with one overlay byte changed behind git's back (only the
overlay, bootloader and iso steps re-run), is rebuilt from the clean commit and must differ there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asl_capture.sourcestore import default_root
from tests.integration.pipeline_fixtures import Build, pipeline_build, run_build, sha256_file, tools_missing

__all__ = ["pipeline_build"]

TOOLS = ["mmdebstrap", "mksquashfs", "grub-mkrescue", "xorriso", "mformat", "cpio", "unshare", "taskset", "git"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(tools_missing(TOOLS)), reason=f"needs {TOOLS} (pipeline/install-deps.sh)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the pipeline builds as root"),
]
OVERLAY_FILE = "etc/asl-auth-host/config.yaml"


def _store() -> Path:
    return default_root(os.environ)


def _rebuild_argv(build: Build, source: Path, *extra: str | Path) -> list[str]:
    return [sys.executable, "-m", "asl_capture.cli.verify", "rebuild", "--provenance", str(build.provenance),
            "--iso", str(build.iso), "--source", str(source), *[str(e) for e in extra]]


def _varied(argv: list[str], *, hostname_file: Path) -> list[str]:
    """``argv`` with no network, another host name (UTS and /etc/hostname) and one CPU."""
    script = ('hostname rebuild-host-77 && mount --bind "$0" /etc/hostname && exec taskset -c 0 "$@"')
    return ["unshare", "--net", "--uts", "--mount", "sh", "-c", script, str(hostname_file), *argv]


def _varied_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASL_", "XDG_"))}
    env.update({"HOME": str(home), "TZ": "Pacific/Kiritimati", "LANG": "de_DE.UTF-8", "LC_ALL": "fr_FR.UTF-8",
                "TMPDIR": str(home)})
    return env


def _needs_fresh(build: Build) -> None:
    if build.trust is None:
        pytest.skip("reused build (ASL_TEST_REPO_BUILD): not a git checkout built by this session")


def _clone(repo: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True, capture_output=True)
    return dest


def test_builder_record_names_each_tool_package_and_version(pipeline_build: Build) -> None:
    _needs_fresh(pipeline_build)
    rows = [json.loads(line) for line in
            (pipeline_build.repo / "out/work/builder/tools.jsonl").read_text().splitlines()]
    by_name = {r["name"]: r for r in rows}
    for pkg in ("mmdebstrap", "apt", "squashfs-tools", "xorriso", "grub-pc-bin", "grub-efi-amd64-bin", "mtools",
                "cpio", "gzip", "python3", "asl-capture"):
        assert pkg in by_name, pkg
    assert "busybox-static" in by_name or "busybox" in by_name
    for name, row in by_name.items():
        assert row["kind"] == "tool" and len(row["sha256"]) == 64
        if name != "asl-capture":
            version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True,
                                     text=True, check=True).stdout
            assert row["version"] == version and row["uri"].startswith(f"deb:{name}={version}?arch=")


def test_rebuild_of_a_clone_offline_on_a_varied_host_gives_the_same_iso(
        pipeline_build: Build, tmp_path_factory: pytest.TempPathFactory) -> None:
    """umask 077, a root-only directory with a space, TZ, locale, host name, 1 CPU, HOME, no network."""
    _needs_fresh(pipeline_build)
    top = tmp_path_factory.mktemp("rebuild-varied")
    private = top / "only root enters"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    home = private / "home"
    home.mkdir()
    clone = _clone(pipeline_build.repo, private / "clone")
    hostname_file = top / "hostname"
    hostname_file.write_text("rebuild-host-77\n")
    hostname_file.chmod(0o600)
    argv = _varied(_rebuild_argv(pipeline_build, clone, "--debs", _store(), "--work", private / "work b"),
                   hostname_file=hostname_file)
    old = os.umask(0o077)
    try:
        res = subprocess.run(argv, env=_varied_env(home), capture_output=True, text=True, check=False)
    finally:
        os.umask(old)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    digest = sha256_file(pipeline_build.iso)
    assert f"REBUILT: sha256:{digest}" in res.stdout
    seconds = float(res.stdout.split("rebuild: build ")[1].split(" s")[0])
    print(f"\nbuild {pipeline_build.seconds:.1f} s, rebuild (varied host) build {seconds:.1f} s")
    shutil.rmtree(private / "work b", ignore_errors=True)


def test_rebuild_names_one_changed_overlay_byte(pipeline_build: Build,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """An ISO built from a tree whose overlay file differs from its commit (git not told) does not rebuild."""
    _needs_fresh(pipeline_build)
    top = tmp_path_factory.mktemp("rebuild-overlay")
    changed = top / "changed"
    subprocess.run(["cp", "-a", str(pipeline_build.repo), str(changed)], check=True)
    target = changed / "overlay" / OVERLAY_FILE
    data = bytearray(target.read_bytes())
    data[-1] = ord(" ") if data[-1] != ord(" ") else ord("\n")
    target.write_bytes(bytes(data))
    subprocess.run(["git", "-C", str(changed), "update-index", "--skip-worktree", f"overlay/{OVERLAY_FILE}"],
                   check=True)
    assert subprocess.run(["git", "-C", str(changed), "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout == ""
    second = run_build(changed, key_dir=top / "keys", steps="overlay bootloader iso")
    assert sha256_file(second.iso) != sha256_file(pipeline_build.iso)
    res = subprocess.run(_rebuild_argv(second, pipeline_build.repo, "--debs", _store(), "--offline",
                                       "--work", top / "work"),
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1, res.stdout + res.stderr[-4000:]
    report = res.stdout
    print("\n" + report)
    assert "MISMATCH:" in report
    assert f"overlay/{OVERLAY_FILE}: content differs" in report
    assert f"squashfs:/{OVERLAY_FILE}: content differs" in report
    assert "/live/system.squashfs: content differs" in report
    shutil.rmtree(top / "work", ignore_errors=True)
    shutil.rmtree(changed, ignore_errors=True)


def test_rebuild_with_a_package_missing_and_no_mirror_exits_2_naming_it(
        pipeline_build: Build, tmp_path: Path) -> None:
    _needs_fresh(pipeline_build)
    rows = [json.loads(line) for line in
            (pipeline_build.repo / "out/work/rootfs-meta/sources.jsonl").read_text().splitlines()]
    kmod = next(r for r in rows if r["kind"] == "deb" and r["uri"].rsplit("/", 1)[1].startswith("kmod_"))
    partial = tmp_path / "store"
    partial.mkdir()
    for row in rows:
        if row is not kmod and (_store() / row["sha256"]).is_file():
            os.link(_store() / row["sha256"], partial / row["sha256"])
    argv = ["unshare", "--net", *_rebuild_argv(pipeline_build, pipeline_build.repo, "--debs", partial,
                                                 "--work", tmp_path / "work")]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    version = kmod["uri"].rsplit("/", 1)[1].split("_")[1]
    assert f"SourceMissingError: package kmod {version} (amd64)" in res.stderr
    assert "cannot be fetched" in res.stderr
    assert not (tmp_path / "work" / "src").exists()  # refused before anything was checked out or built
