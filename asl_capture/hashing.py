"""File hashing: streaming SHA-256 in parallel across the available cores, with a safe stat cache.

Threads do the work: ``hashlib`` and ``os.readv`` release the GIL on large buffers, so hashing
scales across cores while the walk stays in one thread. A file is hashed between two ``fstat``
calls; if it changed while being read, it is read again, and a file that never holds still is an
error naming it. The :class:`StatCache` only skips reading a file whose device, inode, size, mode,
mtime and ctime all equal what they were when it was hashed *and* whose mtime and ctime were older
than that hash by more than :data:`RACY_NS` (the way git treats "racily clean" index entries), so
it never yields a stale digest for content changed within a timestamp tick.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from asl_capture.errors import SnapshotError

BUFFER_SIZE = 1 << 20
#: An entry is trusted only when the file's mtime and ctime precede its hashing by this much.
RACY_NS = 2_000_000_000
_MAX_ATTEMPTS = 3
_CACHE_MAGIC = b"ASLSTAT1"
_ENTRY = struct.Struct("<QQQqqIq32sH")


def available_cpus() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What the cache knows about one path: its stat identity and digest at ``hashed_at`` (ns)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    hashed_at: int
    digest: bytes


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class StatCache:
    """Path -> digest cache keyed on stat identity; persisted in the provenance directory.

    Loading a missing or corrupt file gives an empty cache: the cache is only an optimisation.
    Saving writes a new file and renames it into place, so concurrent captures never see a torn
    cache; the last writer wins, which loses entries but never correctness.
    """

    def __init__(self, entries: dict[bytes, CacheEntry] | None = None) -> None:
        self._entries: dict[bytes, CacheEntry] = entries if entries is not None else {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, path: bytes, st: os.stat_result) -> bytes | None:
        """The cached digest of ``path`` if ``st`` proves it unchanged since a non-racy hash."""
        entry = self._entries.get(path)
        if (
            entry is not None
            and (entry.dev, entry.ino, entry.size, entry.mtime_ns, entry.ctime_ns, entry.mode) == _identity(st)
            and max(entry.mtime_ns, entry.ctime_ns) + RACY_NS < entry.hashed_at
        ):
            self.hits += 1
            return entry.digest
        self.misses += 1
        return None

    def store(self, path: bytes, st: os.stat_result, digest: bytes, hashed_at: int) -> None:
        """Remember the digest of ``path`` whose stat was ``st`` when hashing began at ``hashed_at``."""
        entry = CacheEntry(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode,
                           hashed_at, digest)
        with self._lock:
            self._entries[path] = entry

    @classmethod
    def load(cls, path: Path) -> StatCache:
        """Read a cache file; an absent, unreadable or corrupt one yields an empty cache."""
        try:
            data = path.read_bytes()
        except OSError:
            return cls()
        body = data[len(_CACHE_MAGIC) : -32]
        if not data.startswith(_CACHE_MAGIC) or len(data) < len(_CACHE_MAGIC) + 32:
            return cls()
        if hashlib.sha256(body).digest() != data[-32:]:
            return cls()
        entries: dict[bytes, CacheEntry] = {}
        pos, size = 0, len(body)
        try:
            while pos < size:
                dev, ino, fsize, mtime, ctime, mode, hashed_at, digest, plen = _ENTRY.unpack_from(body, pos)
                pos += _ENTRY.size
                entries[body[pos : pos + plen]] = CacheEntry(dev, ino, fsize, mtime, ctime, mode, hashed_at, digest)
                pos += plen
        except struct.error:
            return cls()
        return cls(entries)

    def save(self, path: Path) -> None:
        """Write the cache atomically (temporary file, fsync, rename). Errors are ignored."""
        parts = [_CACHE_MAGIC]
        body = bytearray()
        with self._lock:
            items = list(self._entries.items())
        for name, e in items:
            if len(name) > 0xFFFF:
                continue
            body += _ENTRY.pack(e.dev, e.ino, e.size, e.mtime_ns, e.ctime_ns, e.mode, e.hashed_at, e.digest,
                                len(name))
            body += name
        parts += [bytes(body), hashlib.sha256(body).digest()]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(b"".join(parts))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)


def _same_content_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


_local = threading.local()


def _buffer() -> memoryview:
    buf: memoryview | None = getattr(_local, "buffer", None)
    if buf is None:
        buf = memoryview(bytearray(BUFFER_SIZE))
        _local.buffer = buf
    return buf


def hash_file(path: bytes, st: os.stat_result) -> tuple[bytes, int]:
    """SHA-256 of the regular file at ``path`` whose ``lstat`` was ``st``; also the ns time hashing began.

    Raises:
        SnapshotError: the file cannot be opened or read, was replaced, or kept changing.
    """
    shown = os.fsdecode(path)
    for _ in range(_MAX_ATTEMPTS):
        started = time.time_ns()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise SnapshotError(f"{shown}: cannot open: {exc.strerror}") from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or (before.st_dev, before.st_ino) != (st.st_dev, st.st_ino):
                raise SnapshotError(f"{shown}: file was replaced while the tree was being snapshotted")
            digest = hashlib.sha256()
            buf = _buffer()
            while True:
                n = os.readv(fd, [buf])
                if not n:
                    break
                digest.update(buf[:n])
            after = os.fstat(fd)
        except OSError as exc:
            raise SnapshotError(f"{shown}: cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if _same_content_stat(before, after) and _same_content_stat(before, st):
            return digest.digest(), started
        st = after  # it changed under us: try again against its new state
    raise SnapshotError(f"{shown}: file kept changing while it was being hashed")


class Hasher:
    """Hashes many files in parallel, consulting and filling a :class:`StatCache`."""

    def __init__(self, *, cache: StatCache | None = None, workers: int | None = None) -> None:
        self.cache = cache if cache is not None else StatCache()
        self.workers = workers or available_cpus()
        self.bytes_read = 0

    def _one(self, item: tuple[bytes, os.stat_result]) -> bytes:
        path, st = item
        cached = self.cache.lookup(path, st)
        if cached is not None:
            return cached
        digest, started = hash_file(path, st)
        self.cache.store(path, st, digest, started)
        return digest

    def hash_many(
        self,
        files: Iterable[tuple[bytes, os.stat_result]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> dict[bytes, bytes]:
        """Digests of ``(path, lstat)`` pairs, by path.

        Raises:
            SnapshotError: as :func:`hash_file`, for the first failing file.
        """
        items = list(files)
        results: dict[bytes, bytes] = {}
        if self.workers <= 1 or len(items) < 64:
            for done, item in enumerate(items, 1):
                results[item[0]] = self._one(item)
                if progress is not None and done % 1000 == 0:
                    progress(done)
            return results
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="asl-hash") as pool:
            for done, (item, digest) in enumerate(zip(items, pool.map(self._one, items, chunksize=64), strict=True), 1):
                results[item[0]] = digest
                if progress is not None and done % 1000 == 0:
                    progress(done)
        return results

