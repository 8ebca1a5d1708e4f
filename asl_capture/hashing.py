"""File hashing: SHA-256 in parallel across the available cores, filling a :class:`StatCache`.

Work is spread over ``os.sched_getaffinity`` cores by forking helper processes (on Linux) that
share the already-walked file list copy-on-write and write their digests into a shared anonymous
``mmap``; chunks of work are handed out through a pipe, so fast workers take more. Processes, not
threads: for trees of many small files the per-file Python work would otherwise serialise on the
GIL. A small file is read with one ``read`` call; a large one streams through a 1 MiB buffer.

A file is trusted only if its ``fstat`` after reading matches the ``lstat`` of the walk (device,
inode, size, mtime, ctime) and the byte count read equals its size. A file whose metadata changed
after it was listed is an error naming it (its listed size would not match its digest); one whose
byte count alone disagrees (a change within one timestamp tick) is read again, a few times.

The walk (``scan.py``) looks files up in the stat cache (``statcache.py``); :meth:`Hasher.hash_files`
reads the rest and fills the cache with what it read, under the cache's racy rule.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

from asl_capture import safeio
from asl_capture.errors import SnapshotError
from asl_capture.statcache import Ident, StatCache

BUFFER_SIZE = 1 << 20
#: Snapshots shorter than this (seconds) never report progress.
PROGRESS_AFTER = 1.0
_PROGRESS_EVERY = 0.25
_MAX_ATTEMPTS = 3
#: Below this much work, hashing stays in the calling process.
_PARALLEL_MIN_FILES = 128
_PARALLEL_MIN_BYTES = 32 << 20
_CHUNK_FILES = 48
_CHUNK_BYTES = 4 << 20
#: Per-slot layout of the shared result area: status byte, 32-byte digest.
_SLOT = 33
_OK, _FAILED = 1, 2
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC

def available_cpus() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _read_digest(fd: int, size: int, buf: memoryview | None) -> tuple[bytes, int, memoryview | None]:
    """Digest and byte count of an open file; small files in one ``read``, large ones through ``buf``."""
    if size < BUFFER_SIZE:
        data = os.read(fd, size + 1)  # one byte more than expected reveals a file that grew
        return hashlib.sha256(data).digest(), len(data), buf
    if buf is None:
        buf = memoryview(bytearray(BUFFER_SIZE))
    h = hashlib.sha256()
    total = 0
    while n := os.readv(fd, [buf]):
        h.update(buf[:n])
        total += n
    return h.digest(), total, buf


def _hash(path: bytes, identity: Ident, buf: memoryview | None) -> tuple[bytes, memoryview | None]:
    dev, ino, size, mtime, ctime = identity[0], identity[1], identity[2], identity[3], identity[4]
    for _ in range(_MAX_ATTEMPTS):
        try:
            fd = safeio.open_path(path, _OPEN_FLAGS)
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(path)}: cannot open: {exc.strerror}") from None
        try:
            digest, nread, buf = _read_digest(fd, size, buf)
            after = os.fstat(fd)
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(path)}: cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if after.st_ino != ino or after.st_dev != dev or not stat.S_ISREG(after.st_mode):
            raise SnapshotError(f"{os.fsdecode(path)}: file was replaced while the tree was being snapshotted")
        if after.st_size != size or after.st_mtime_ns != mtime or after.st_ctime_ns != ctime:
            break  # changed since it was listed: its listed size and this digest could disagree
        if nread == size:
            return digest, buf
        # same metadata but a different byte count: a change within one timestamp tick; read again
    raise SnapshotError(f"{os.fsdecode(path)}: file changed while the tree was being snapshotted")


def sha256_path(path: Path) -> bytes:
    """SHA-256 of one regular file, streamed, opened without following a final symlink (for single
    files outside a snapshot; a snapshot's files go through :class:`Hasher`).

    Raises:
        OSError: the file cannot be opened or read, or is not a regular file (``EINVAL``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        h = hashlib.sha256()
        buf = memoryview(bytearray(BUFFER_SIZE))
        while n := os.readv(fd, [buf]):
            h.update(buf[:n])
        return h.digest()
    finally:
        os.close(fd)


def _chunks(items: list[tuple[bytes, Ident]]) -> list[tuple[int, int]]:
    """Split ``items`` (large files first) into index ranges of bounded file count and bytes."""
    chunks: list[tuple[int, int]] = []
    most = max(_CHUNK_FILES, len(items) // 8192 + 1)  # at most ~8192 chunks: their queue must fit a pipe
    start = size = 0
    for i, (_path, identity) in enumerate(items):
        size += identity[2]
        if i + 1 - start >= most or size >= _CHUNK_BYTES:
            chunks.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(items):
        chunks.append((start, len(items)))
    return chunks


class Hasher:
    """Hashes many files in parallel, consulting and filling a :class:`StatCache`."""

    def __init__(self, *, cache: StatCache | None = None, workers: int | None = None,
                 progress_after: float | None = None) -> None:
        self.cache = cache if cache is not None else StatCache()
        self.workers = workers or available_cpus()
        self.progress_after = PROGRESS_AFTER if progress_after is None else progress_after

    def hash_files(
        self,
        todo: list[tuple[bytes, Ident]],
        *,
        progress: Callable[[int], None] | None = None,
        done: int = 0,
    ) -> list[bytes]:
        """Digests of ``(path, identity)`` pairs, in order, all read (no cache look-up) and then cached.
        ``done`` is added to the counts passed to ``progress``.

        Raises:
            SnapshotError: the first file that cannot be opened or read, was replaced, or kept changing.
        """
        if not todo:
            return []
        started = time.time_ns()  # conservative "hashed at" for every file read below
        reporter = _Reporter(progress, time.monotonic() + self.progress_after, done)
        # the large files first, largest first (they bound how evenly the work ends), then the rest as given
        large = sorted((i for i, (_p, identity) in enumerate(todo) if identity[2] >= _CHUNK_BYTES),
                       key=lambda i: todo[i][1][2], reverse=True)
        if large:
            order = large + [i for i, (_p, identity) in enumerate(todo) if identity[2] < _CHUNK_BYTES]
            ordered = [todo[i] for i in order]
        else:
            order, ordered = list(range(len(todo))), todo
        if self.workers > 1 and hasattr(os, "fork") and (
                len(todo) >= _PARALLEL_MIN_FILES or sum(identity[2] for _p, identity in todo) >= _PARALLEL_MIN_BYTES):
            digests = _hash_forked(ordered, self.workers, reporter)
        else:
            digests = _hash_serial(ordered, reporter)
        store = self.cache.store
        out: list[bytes] = [b""] * len(todo)
        for i, (path, identity), digest in zip(order, ordered, digests, strict=True):
            out[i] = digest
            store(path, identity, digest, started)
        return out


class _Reporter:
    """Rate-limited progress reports that start only after a deadline."""

    def __init__(self, progress: Callable[[int], None] | None, deadline: float, base: int) -> None:
        self.progress = progress
        self.next = deadline
        self.base = base

    def __call__(self, done: int) -> None:
        if self.progress is not None:
            now = time.monotonic()
            if now >= self.next:
                self.next = now + _PROGRESS_EVERY
                self.progress(self.base + done)


def _hash_serial(todo: list[tuple[bytes, Ident]], report: _Reporter) -> list[bytes]:
    buf: memoryview | None = None
    out: list[bytes] = []
    for i, (path, identity) in enumerate(todo):
        digest, buf = _hash(path, identity, buf)
        out.append(digest)
        if not i & 63:
            report(i)
    return out


def _hash_forked(todo: list[tuple[bytes, Ident]], workers: int, report: _Reporter) -> list[bytes]:
    """Hash ``todo`` in this process and ``workers - 1`` forked helpers sharing a result ``mmap``.

    A helper that fails on a file marks it failed and goes on; a helper that dies leaves its slots
    empty. Either way this process hashes such files itself afterwards, so errors are raised here,
    with the usual message, and a lost helper costs time, never a wrong digest.
    """
    chunks = _chunks(todo)
    try:
        shared = mmap.mmap(-1, len(todo) * _SLOT)
    except OSError:  # no memory to share: one process
        return _hash_serial(todo, report)
    try:
        tasks_r, tasks_w = os.pipe()
    except OSError:  # out of descriptors: one process
        shared.close()
        return _hash_serial(todo, report)
    try:
        # every chunk index is queued before any worker starts; reads of 4 bytes from a pipe are atomic
        os.set_blocking(tasks_w, False)
        queued = b"".join(struct.pack("<I", c) for c in range(len(chunks)))
        os.write(tasks_w, queued)
    except BlockingIOError:  # more chunks than the pipe holds: fall back to one process
        os.close(tasks_r)
        os.close(tasks_w)
        shared.close()
        return _hash_serial(todo, report)
    os.close(tasks_w)
    pids: list[int] = []
    try:
        for _ in range(min(workers, len(chunks)) - 1):
            try:
                pid = os.fork()
            except OSError:  # no more processes: fewer helpers
                break
            if pid == 0:  # pragma: no cover - runs in the helper
                code = 1
                try:
                    _work(todo, chunks, tasks_r, shared, None)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        _work(todo, chunks, tasks_r, shared, report)
    finally:
        os.close(tasks_r)
        for pid in pids:
            os.waitpid(pid, 0)
    data = shared[:]
    shared.close()
    out = [data[o + 1 : o + _SLOT] for o in range(0, len(data), _SLOT)]
    if data[::_SLOT].count(_OK) != len(todo):
        buf: memoryview | None = None
        for i, (path, identity) in enumerate(todo):
            if data[i * _SLOT] != _OK:  # failed or never done: hash it here, raising the error if it persists
                out[i], buf = _hash(path, identity, buf)
    return out


def _work(todo: list[tuple[bytes, Ident]], chunks: list[tuple[int, int]], tasks: int,
          shared: mmap.mmap, report: _Reporter | None) -> None:
    buf: memoryview | None = None
    while len(raw := os.read(tasks, 4)) == 4:
        (index,) = struct.unpack("<I", raw)
        start, end = chunks[index]
        for i in range(start, end):
            path, identity = todo[i]
            try:
                digest, buf = _hash(path, identity, buf)
            except SnapshotError:
                shared[i * _SLOT] = _FAILED
                continue
            shared[i * _SLOT : (i + 1) * _SLOT] = b"\x01" + digest
        if report is not None:
            report(end)

