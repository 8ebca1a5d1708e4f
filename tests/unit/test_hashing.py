"""The hash engine and stat cache: digests are right, the cache never serves a stale one."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from asl_capture import dcbor, manifest, statcache
from asl_capture.errors import SnapshotError
from asl_capture.hashing import BUFFER_SIZE, Hasher
from asl_capture.statcache import StatCache
from tests.conftest import run_without_dac


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def _lstat(path: Path) -> os.stat_result:
    return os.lstat(path)


def _hash_one(cache: StatCache, path: Path) -> bytes:
    """The digest a snapshot records for ``path`` (from the cache when it may serve it)."""
    [entry] = manifest.snapshot([path], base=path.parent, hasher=Hasher(cache=cache, workers=1)).entries
    assert isinstance(entry.extra, bytes)
    return entry.extra


def _lookup(cache: StatCache, path: bytes, st: os.stat_result) -> bytes | None:
    return statcache.cached_digest(cache.table.get(path), st)


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust entries as soon as the file is older than its hash (so a test needs no 2 s sleep)."""
    monkeypatch.setattr(statcache, "RACY_NS", 0)


def _age(path: Path) -> None:
    """Make sure the file's ctime tick is over before it is hashed (coarse kernel timestamps)."""
    time.sleep(0.02)


@pytest.mark.usefixtures("no_racy_window")
def test_cache_hit_for_an_unchanged_file(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"hello")
    _age(f)
    cache = StatCache()
    assert _hash_one(cache, f) == _sha(f)
    assert _hash_one(cache, f) == _sha(f)
    assert cache.hits == 1


@pytest.mark.usefixtures("no_racy_window")
def test_same_size_restored_mtime_new_content_is_rehashed(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"aaaa")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    _age(f)
    cache = StatCache()
    _hash_one(cache, f)
    assert len(cache) == 1  # the old digest is cached: only its identity can keep it from being served
    f.write_bytes(b"bbbb")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert _hash_one(cache, f) == hashlib.sha256(b"bbbb").digest()
    assert cache.hits == 0


@pytest.mark.usefixtures("no_racy_window")
def test_replaced_inode_is_rehashed(tmp_path: Path) -> None:
    f, new = tmp_path / "a", tmp_path / "new"
    f.write_bytes(b"old!")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    _age(f)
    cache = StatCache()
    _hash_one(cache, f)
    assert len(cache) == 1  # the old digest is cached: only its identity can keep it from being served
    new.write_bytes(b"new!")
    os.utime(new, ns=(1_000_000_000, 1_000_000_000))
    new.rename(f)
    assert _hash_one(cache, f) == hashlib.sha256(b"new!").digest()
    assert cache.hits == 0


def test_file_modified_within_racy_window_is_rehashed(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"one!")
    st = _lstat(f)
    cache = StatCache()
    _hash_one(cache, f)
    f.write_bytes(b"two!")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _hash_one(cache, f) == hashlib.sha256(b"two!").digest()
    # The sharp case: a change inside one timestamp tick leaves the stat identity as it was.
    # Only the racy rule stands between that entry and a stale digest.
    path = os.fsencode(f)
    now = _lstat(f)
    stale = hashlib.sha256(b"stale").digest()
    cache.store(path, statcache.ident(now), stale, max(now.st_mtime_ns, now.st_ctime_ns) + 1)
    assert _lookup(cache, path, now) is None
    cache.store(path, statcache.ident(now), stale, max(now.st_mtime_ns, now.st_ctime_ns) + statcache.RACY_NS + 1)
    assert _lookup(cache, path, now) == stale  # the same entry, hashed after the window, is trusted


def test_parallel_digests_equal_hashlib(tmp_path: Path) -> None:
    sizes = [0, 1, 2, 4095, 4096, BUFFER_SIZE - 1, BUFFER_SIZE, BUFFER_SIZE + 1, 3 * BUFFER_SIZE + 7]
    sizes += [(i * 7919) % 70_000 for i in range(300)]
    paths = []
    for i, size in enumerate(sizes):
        d = tmp_path / f"d{i % 7}"
        d.mkdir(exist_ok=True)
        p = d / f"f{i}"
        p.write_bytes(os.urandom(size))
        paths.append(p)
    for workers in (1, 2, 4):
        got = Hasher(workers=workers).hash_files([(os.fsencode(p), statcache.ident(_lstat(p))) for p in paths])
        assert got == [_sha(p) for p in paths]
    # and through a whole snapshot, whose manifest encoding equals the generic deterministic encoder's
    m = manifest.snapshot([tmp_path], base=tmp_path, hasher=Hasher(workers=2))
    by_path = m.by_path()
    for p in paths:
        assert by_path[os.fsencode(p.relative_to(tmp_path))].extra == _sha(p)
    assert m.encode() == dcbor.encode(m.to_value())


def test_file_changing_while_hashed_is_an_error_or_a_consistent_digest(tmp_path: Path) -> None:
    f = tmp_path / "growing.log"
    f.write_bytes(os.urandom(8 * BUFFER_SIZE))
    st = _lstat(f)
    stop = threading.Event()

    def writer() -> None:
        with open(f, "ab", buffering=0) as handle:
            while not stop.is_set():
                handle.write(b"x" * 4096)
                time.sleep(0.0005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.01)
        with pytest.raises(SnapshotError, match=r"growing\.log"):
            Hasher(workers=1).hash_files([(os.fsencode(f), statcache.ident(st))])
    finally:
        stop.set()
        thread.join()


def test_file_appended_after_listing_fails_in_the_parallel_path(tmp_path: Path) -> None:
    paths = [tmp_path / f"f{i}" for i in range(200)]
    for p in paths:
        p.write_bytes(b"x" * 100)
    items = [(os.fsencode(p), statcache.ident(_lstat(p))) for p in paths]
    with open(paths[150], "ab") as handle:
        handle.write(b"more")
    with pytest.raises(SnapshotError, match=r"f150: file changed"):
        Hasher(workers=2).hash_files(items)


def _unreadable_snapshot(tree: Path) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        from pathlib import Path
        from asl_capture.errors import SnapshotError
        from asl_capture.manifest import snapshot
        try:
            snapshot([Path({str(tree)!r})], base=Path({str(tree)!r}))
        except SnapshotError as exc:
            print("SnapshotError:", exc)
    """)
    return run_without_dac([sys.executable, "-c", code], what="a file")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(3):
        (tree / f"ok{i}").write_bytes(b"fine")
    secret = tree / "secret.bin"
    secret.write_bytes(b"no")
    secret.chmod(0)
    result = _unreadable_snapshot(tree)
    assert f"SnapshotError: {secret}: cannot open: Permission denied" in result.stdout, result.stderr


def test_progress_only_for_long_snapshots(tmp_path: Path) -> None:
    paths = [tmp_path / f"f{i}" for i in range(300)]
    for p in paths:
        p.write_bytes(b"y" * 1000)
    items = [(os.fsencode(p), statcache.ident(_lstat(p))) for p in paths]
    calls: list[int] = []
    Hasher(workers=2).hash_files(items, progress=calls.append)
    assert calls == []  # well under a second
    Hasher(workers=1, progress_after=0.0).hash_files(items, progress=calls.append)
    assert calls and all(0 <= n <= len(paths) for n in calls)


_WORKER = textwrap.dedent("""
    import hashlib, os, sys
    from pathlib import Path
    from asl_capture.hashing import Hasher
    from asl_capture.statcache import StatCache
    from asl_capture.manifest import snapshot
    tree, cache_file, mine, rounds = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    roots = [tree / "common", mine.parent]  # shared files plus this worker's own directory
    for r in range(rounds):
        cache = StatCache.load(cache_file)
        content = f"{mine.name}-{r:06d}".encode()
        st = os.lstat(mine)
        mine.write_bytes(content)  # same size as before
        os.utime(mine, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
        m = snapshot(roots, base=tree, hasher=Hasher(cache=cache))
        got = m.by_path()[f"{mine.parent.name}/{mine.name}".encode()].extra
        assert got == hashlib.sha256(content).digest(), (mine, r)
        cache.save(cache_file)
    print("ok")
""")


def test_concurrent_captures_sharing_a_cache_stay_correct(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "common").mkdir()
    for i in range(400):
        (tree / "common" / f"c{i:03d}").write_bytes(os.urandom(2000))
    mine = [tree / f"w{i}" / "mine" for i in range(4)]
    for p in mine:
        p.parent.mkdir()
        for j in range(50):
            (p.parent / f"other{j}").write_bytes(os.urandom(100))
        p.write_bytes(f"{p.name}-{0:06d}".encode())
    cache_file = tmp_path / "prov" / "statcache"
    cache_file.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tree), str(cache_file), str(p), "15"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in mine]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    cache = StatCache.load(cache_file)
    m = manifest.snapshot([tree], base=tree, hasher=Hasher(cache=cache))
    for e in m.entries:
        if e.kind == "f":
            assert e.extra == _sha(tree / os.fsdecode(e.path))


@pytest.mark.parametrize("call", ["fork", "pipe"])
def test_parallel_hashing_without_helpers_falls_back_to_one_process(tmp_path: Path, call: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [tmp_path / f"f{i}" for i in range(300)]
    for p in paths:
        p.write_bytes(os.urandom(500))
    items = [(os.fsencode(p), statcache.ident(_lstat(p))) for p in paths]

    def refuse(*_args: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, call, refuse)
    got = Hasher(workers=2).hash_files(items)
    assert got == [_sha(p) for p in paths]
