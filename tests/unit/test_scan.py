"""The shared lstat walk: helpers change nothing but speed, and losing one loses no row."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asl_capture import hashing, scan, statcache
from asl_capture.errors import SnapshotError
from asl_capture.format import Manifest
from asl_capture.hashing import Hasher
from asl_capture.manifest import Excluder, snapshot
from asl_capture.statcache import StatCache
from tests.conftest import run_without_dac


@pytest.fixture
def share_early(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Share the walk as soon as two directories wait; count how often it was shared."""
    monkeypatch.setattr(scan, "_SHARE_DIRS", 2)
    monkeypatch.setattr(scan, "_SHARE_PATHS", 1)
    shared: list[int] = []
    real = scan._share

    def counting(subtrees: list[scan.Dir], walk: Any, workers: int) -> None:
        shared.append(len(subtrees))
        real(subtrees, walk, workers)

    monkeypatch.setattr(scan, "_share", counting)
    return shared


def _tree(base: Path) -> Path:
    """Nested directories holding every kind of entry the manifest knows."""
    root = base / "tree"
    for a in range(6):
        for b in range(5):
            d = root / f"d{a}" / f"s{b}"
            d.mkdir(parents=True)
            for c in range(4):
                (d / f"f{c}.txt").write_bytes(f"{a}-{b}-{c}".encode() * (c + 1))
    (root / "d0" / "rel").symlink_to("s0/f0.txt")
    (root / "d1" / "abs").symlink_to("/etc/hostname")
    (root / "d2" / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "d3" / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "d4" / "sock"))
    (root / "d5" / os.fsdecode(b"caf\xe9")).write_bytes(b"latin-1 name")
    (root / "d5" / "s1" / ".git").mkdir()
    (root / "d5" / "s1" / ".git" / "HEAD").write_text("ref\n")
    (root / "d5" / "s2" / "skip.o").write_bytes(b"excluded")
    (root / "d0" / "s3" / "big.bin").write_bytes(os.urandom(3 * hashing.BUFFER_SIZE + 7))
    return root


def _snap(root: Path, workers: int, cache: StatCache | None = None) -> Manifest:
    excluder = Excluder(patterns=("*.o",), absolute=frozenset({os.fsencode(root / "d4" / "s4")}))
    return snapshot([root], base=root.parent, excluder=excluder, hasher=Hasher(cache=cache, workers=workers))


def test_shared_walk_gives_the_serial_manifest(tmp_path: Path, share_early: list[int]) -> None:
    root = _tree(tmp_path)
    serial = _snap(root, 1)
    assert share_early == []  # one process never shares
    for workers in (2, 3, 5):
        assert _snap(root, workers) == serial
    assert len(share_early) == 3 and all(n >= 2 for n in share_early)
    labels = [e.path for e in serial.entries]
    assert labels == sorted(labels) and len(labels) == len(set(labels))
    by_path = serial.by_path()
    assert b"tree/d5/s2/skip.o" not in by_path and b"tree/d5/s1/.git" not in by_path
    assert b"tree/d4/s4" not in by_path and b"tree/d4/s3" in by_path
    assert by_path[b"tree/d5/caf\xe9"].extra == hashlib.sha256(b"latin-1 name").digest()
    assert by_path[b"tree/d0/rel"].extra == b"s0/f0.txt"
    assert by_path[b"tree/d3/fifo"].kind == "p" and by_path[b"tree/d4/sock"].kind == "s"
    for e in serial.entries:
        if e.kind == "f":
            assert e.extra == hashlib.sha256((tmp_path / os.fsdecode(e.path)).read_bytes()).digest()


def test_shared_walk_fills_and_uses_the_cache(tmp_path: Path, share_early: list[int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", -(10**12))  # trust entries at once: no waiting in a test
    root = _tree(tmp_path)
    cache = StatCache()
    first = _snap(root, 2, cache)
    files = first.files
    assert (cache.hits, cache.misses) == (0, files)
    assert _snap(root, 2, cache) == first
    assert (cache.hits, cache.misses) == (files, files)
    (root / "d2" / "s1" / "f0.txt").write_bytes(b"new content")
    third = _snap(root, 2, cache)
    assert third.by_path()[b"tree/d2/s1/f0.txt"].extra == hashlib.sha256(b"new content").digest()
    assert cache.misses == files + 1
    assert share_early and len(share_early) == 3


def _replace_helper(monkeypatch: pytest.MonkeyPatch, helper: Callable[..., None]) -> None:
    monkeypatch.setattr(scan, "_help", helper)


def test_a_helper_that_dies_costs_time_not_rows(tmp_path: Path, share_early: list[int],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    serial = _snap(root, 1)

    def dies_after_one_task(tasks: Any, tasks_r: int, result_w: int, walk: Any) -> None:
        os.read(tasks_r, scan._TASK.size)  # takes a task and never reports it
        os._exit(3)

    _replace_helper(monkeypatch, dies_after_one_task)
    assert _snap(root, 3) == serial
    assert share_early


def test_a_helper_that_sends_garbage_is_ignored(tmp_path: Path, share_early: list[int],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    serial = _snap(root, 1)

    def garbage(tasks: Any, tasks_r: int, result_w: int, walk: Any) -> None:
        while len(os.read(tasks_r, scan._TASK.size)) == scan._TASK.size:
            pass  # drains the queue: every task is lost with it
        os.write(result_w, b"\xff not marshal")

    _replace_helper(monkeypatch, garbage)
    assert _snap(root, 2) == serial


def _unlistable(tree: Path, victim: Path) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        from pathlib import Path
        from asl_capture import scan
        from asl_capture.errors import SnapshotError
        from asl_capture.hashing import Hasher
        from asl_capture.manifest import snapshot
        scan._SHARE_DIRS, scan._SHARE_PATHS = 2, 1
        try:
            snapshot([Path({str(tree)!r})], base=Path({str(tree)!r}), hasher=Hasher(workers=2))
        except SnapshotError as exc:
            print("SnapshotError:", exc)
    """)
    victim.chmod(0)
    try:
        return run_without_dac([sys.executable, "-c", code], what="a directory")
    finally:
        victim.chmod(0o755)


def test_unlistable_directory_deep_in_a_shared_walk_names_it(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    victim = root / "d4" / "s2"
    result = _unlistable(root, victim)
    assert result.stdout.strip() == f"SnapshotError: {victim}: cannot list directory: Permission denied", \
        result.stderr
    assert "Traceback" not in result.stderr


def test_a_helper_error_keeps_only_whole_tasks(tmp_path: Path, share_early: list[int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper that fails part-way (say, a file vanished between listing and stat) sends back
    only the subtrees it finished; the parent walks the rest again, so no row appears twice."""
    root = _tree(tmp_path)
    serial = _snap(root, 1)
    parent = os.getpid()
    real = scan._Walk.list_dir

    def flaky(self: Any, d: scan.Dir, pending: Callable[[scan.Dir], None]) -> None:
        real(self, d, pending)
        if os.getpid() != parent:
            raise SnapshotError(f"{os.fsdecode(d[0])}: transient")

    monkeypatch.setattr(scan._Walk, "list_dir", flaky)
    assert _snap(root, 2) == serial


@pytest.mark.parametrize("swap", ["the directory", "its parent"])
def test_a_directory_swapped_for_a_symlink_mid_walk_is_an_error_not_an_escape(tmp_path: Path, swap: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "inside.txt").write_bytes(b"in")
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "secret.txt").write_bytes(b"do not read me")
    real = scan._Walk.list_dir
    victim = root / "a" / "b" if swap == "the directory" else root / "a"

    def swapping(self: Any, d: scan.Dir, pending: Callable[[scan.Dir], None]) -> None:
        if d[0] == os.fsencode(root / "a" / "b"):  # listed as a directory, now about to be opened
            victim.rename(tmp_path / "moved")
            victim.symlink_to(outside / "b" if swap == "the directory" else outside)
        real(self, d, pending)

    monkeypatch.setattr(scan._Walk, "list_dir", swapping)
    with pytest.raises(SnapshotError, match=r"a/b: directory was replaced while the tree was being snapshotted"):
        _snap(root, 1)


@pytest.mark.parametrize("call", ["fork", "memfd_create", "pipe"])
def test_no_helpers_to_be_had_means_one_process_not_an_error(tmp_path: Path, share_early: list[int], call: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    serial = _snap(root, 1)

    def refuse(*_args: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, call, refuse)  # for the hasher's helpers too
    assert _snap(root, 2) == serial
    assert share_early
