"""The stat cache on its own: the racy rule at store time, the file format, and what it refuses."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from asl_capture import statcache
from asl_capture.hashing import Hasher
from asl_capture.statcache import StatCache


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def lookup(cache: StatCache, path: bytes, st: os.stat_result) -> bytes | None:
    return statcache.cached_digest(cache.table.get(path), st)


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", 0)


@pytest.mark.usefixtures("no_racy_window")
def test_cache_round_trips_and_corrupt_files_are_ignored(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(50)]
    for i, f in enumerate(files):
        f.write_bytes(os.urandom(i))
        os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    cache = StatCache()
    Hasher(cache=cache, workers=1).hash_files([(os.fsencode(f), statcache.ident(os.lstat(f))) for f in files])
    store = tmp_path / "statcache"
    cache.save(store)
    loaded = StatCache.load(store)
    assert len(loaded) == 50
    for f in files:
        assert lookup(loaded, os.fsencode(f), os.lstat(f)) == _sha(f)
    good = store.read_bytes()
    assert good.startswith(b"ASLSTAT4")
    for bad in (good[: len(good) // 2], good[:-1], good[:10], b"", b"garbage" * 100,
                good[:40] + bytes([good[40] ^ 1]) + good[41:], b"ASLSTAT3" + good[8:]):
        store.write_bytes(bad)
        assert len(StatCache.load(store)) == 0
    assert len(StatCache.load(tmp_path / "absent")) == 0


def test_a_digest_taken_within_the_racy_window_is_not_kept_and_drops_the_old_one(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"old")
    st = os.lstat(f)
    path = os.fsencode(f)
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    cache = StatCache()
    cache.store(path, statcache.ident(st), b"\x01" * 32, newest + statcache.RACY_NS + 1)
    assert lookup(cache, path, st) == b"\x01" * 32
    cache.store(path, statcache.ident(st), b"\x02" * 32, newest + statcache.RACY_NS)  # exactly at the window's edge
    assert len(cache) == 0 and lookup(cache, path, st) is None


def test_any_identity_field_that_differs_is_a_miss(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"x")
    st = os.lstat(f)
    cache = StatCache()
    cache.store(b"p", statcache.ident(st), b"\x03" * 32, 2**62)
    assert lookup(cache, b"p", st) == b"\x03" * 32
    for field in range(6):  # dev, ino, size, mtime_ns, ctime_ns, mode
        fields = list(statcache.ident(st))
        fields[field] += 1
        cache._entries[b"p"] = statcache.IDENT.pack(*fields) + b"\x03" * 32
        assert lookup(cache, b"p", st) is None, field
    assert lookup(cache, b"other", st) is None


def test_save_is_atomic_and_only_when_changed(tmp_path: Path) -> None:
    store = tmp_path / "statcache"
    cache = StatCache()
    cache.save(store)
    assert not store.exists()  # nothing changed: nothing written
    cache.store(b"p", statcache.ident(os.lstat(tmp_path)), b"\x04" * 32, 2**62)
    cache.save(store)
    assert StatCache.load(store).table == cache.table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["statcache"]  # no temporary file left
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        cache.store(b"q", statcache.ident(os.lstat(tmp_path)), b"\x05" * 32, 2**62)
        cache.save(tmp_path / "ro" / "statcache")  # an unwritable directory is not an error
        assert cache.dirty or os.geteuid() == 0
    finally:
        (tmp_path / "ro").chmod(0o700)


def _filled(n: int, start: int = 0) -> StatCache:
    cache = StatCache()
    for i in range(start, start + n):
        cache.store(b"/tree/file-%07d" % i, (1, i + 1, 10, 1, 1, 0o100644), bytes([i % 256]) * 32, 2**62)
    return cache


def test_a_save_appends_only_what_changed_and_loads_back_the_same(tmp_path: Path) -> None:
    """Issue 13 item 14: the cache used to be rewritten whole by every capture."""
    store = tmp_path / "statcache"
    cache = _filled(20_000)
    cache.save(store)
    base = store.stat()
    loaded = StatCache.load(store)
    loaded.store(b"/tree/new", (1, 999_999, 3, 1, 1, 0o100644), b"\x09" * 32, 2**62)
    loaded.store(b"/tree/file-0000003", (1, 4, 10, 1, 1, 0o100644), b"\x08" * 32, 0)  # racy: dropped
    loaded.save(store)
    after = store.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (base.st_ino, base.st_mtime_ns, base.st_size)
    journal = tmp_path / "statcache.log"
    assert 0 < journal.stat().st_size < 1000  # two records, not 20,000
    again = StatCache.load(store)
    assert again.table == loaded.table and len(again) == 20_000
    assert b"/tree/file-0000003" not in again.table and b"/tree/new" in again.table


def test_a_damaged_journal_segment_ends_the_journal_not_the_cache(tmp_path: Path) -> None:
    store = tmp_path / "statcache"
    _filled(100).save(store)
    for i in range(3):
        cache = StatCache.load(store)
        cache.store(b"/extra/%d" % i, (1, 5000 + i, 1, 1, 1, 0o100644), b"\x07" * 32, 2**62)
        cache.save(store)
    journal = tmp_path / "statcache.log"
    data = journal.read_bytes()
    journal.write_bytes(data[:-5])  # the last segment torn
    loaded = StatCache.load(store)
    assert len(loaded) == 102 and b"/extra/2" not in loaded.table


def test_the_journal_is_folded_into_a_new_base_once_it_is_as_large(tmp_path: Path) -> None:
    store = tmp_path / "statcache"
    _filled(50).save(store)
    for round_ in range(30):
        cache = StatCache.load(store)
        for i in range(10):
            cache.store(b"/more/%d/%d" % (round_, i), (1, 10_000 + round_ * 10 + i, 1, 1, 1, 0o100644),
                              b"\x06" * 32, 2**62)
        cache.save(store)
        journal = tmp_path / "statcache.log"
        assert not journal.exists() or journal.stat().st_size < store.stat().st_size
    assert len(StatCache.load(store)) == 350


def test_the_cache_keeps_at_most_max_entries_the_latest_stored(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "MAX_ENTRIES", 1000)
    store = tmp_path / "statcache"
    cache = _filled(1500)
    cache.save(store)
    loaded = StatCache.load(store)
    assert len(loaded) == 1000
    assert b"/tree/file-0001499" in loaded.table and b"/tree/file-0000499" not in loaded.table
