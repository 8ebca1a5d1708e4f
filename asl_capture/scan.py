"""The ``lstat`` walk of a snapshot's roots, shared across cores, with stat-cache look-ups inline.

The walk uses ``os.scandir`` and ``lstat`` only and never follows a symlink. For every path it
produces either a finished manifest row ``(label, kind, permission bits, size, extra)`` or, for a
regular file the :class:`~asl_capture.statcache.StatCache` cannot vouch for (by
:func:`~asl_capture.statcache.cached_digest`), a *miss* ``(label, absolute path, identity)`` left
for the hasher.

This process lists the roots breadth-first until there are enough directories to share; then
forked helpers (Linux, more than one core) and this process take whole subtrees from a pipe, and
each helper leaves its rows in its own memfd with :mod:`marshal`, together with the subtrees it
finished, and exits; only a helper that exited cleanly is read. A subtree no helper reported (one
died, or failed) is walked again here, so a lost helper costs time, never a row, and any error is
raised here with its usual one-line message naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import stat
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from asl_capture import envpolicy, safeio, statcache
from asl_capture.errors import SnapshotError
from asl_capture.frozen import frozen
from asl_capture.statcache import CacheRecord, Ident, StatCache

#: ``(label, kind, permission bits, size, extra)``: a manifest entry as a plain tuple.
Row = tuple[bytes, str, int, int, bytes | int | None]
#: ``(label, absolute path, identity)``: a regular file that must be read.
Miss = tuple[bytes, bytes, Ident]
#: ``(absolute path, label, device, inode)``: a directory still to be listed.
Dir = tuple[bytes, bytes, int, int]

#: Share the walk only once this many directories are waiting and this many paths were seen.
_SHARE_DIRS = 16
_SHARE_PATHS = 2000
#: At most this many tasks (groups of subtrees), so their indices fit in a pipe's buffer.
_MAX_TASKS = 4096
_TASK = struct.Struct("<I")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CAN_SHARE = hasattr(os, "fork") and hasattr(os, "memfd_create")
#: What :func:`os.fsencode` encodes a str name with.
_FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())

_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_OTHER_KINDS = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


@frozen
class Skip:
    """Which children the walk leaves out (with their subtrees)."""

    absolute: frozenset[bytes] = frozenset()
    #: ``(absolute path, label, name) -> bool`` for pattern exclusions, or None when there are none.
    matches: Callable[[bytes, bytes, bytes], bool] | None = None


@dataclass
class _Walk:
    """Rows, misses and cache hits gathered by one process."""

    skip: Skip
    table: dict[bytes, CacheRecord]
    rows: list[Row] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    hits: int = 0

    def add_path(self, abs_path: bytes, label: bytes, st: os.stat_result, pending: Callable[[Dir], None]) -> None:
        """Record one path (a root) from its ``lstat``; a directory is handed to ``pending``."""
        mode = st.st_mode
        fmt = mode & _S_IFMT
        if fmt == _S_IFREG:
            digest = statcache.cached_digest(self.table.get(abs_path), st)
            if digest is not None:
                self.rows.append((label, "f", mode & 0o7777, st.st_size, digest))
                self.hits += 1
            else:
                self.misses.append((label, abs_path, statcache.ident(st)))
        elif fmt == _S_IFDIR:
            self.rows.append((label, "d", mode & 0o7777, 0, None))
            pending((abs_path, label, st.st_dev, st.st_ino))
        else:
            self.rows.append(_other(abs_path, label, mode, st, None))

    def list_dir(self, d: Dir, pending: Callable[[Dir], None]) -> None:
        """Record every child of one directory; subdirectories are handed to ``pending``.

        The directory is opened without following a symlink and must still be the one that was
        listed (device, inode), and its children are stat'ed and read relative to that descriptor:
        a directory swapped for a symlink mid-walk cannot lead the walk outside the roots.
        """
        directory, dir_label, dev, ino = d
        try:
            dir_fd = safeio.open_path(directory, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SnapshotError(f"{os.fsdecode(directory)}: directory was replaced while the tree was being "
                                    f"snapshotted") from None
            raise SnapshotError(f"{os.fsdecode(directory)}: cannot list directory: {exc.strerror}") from None
        try:
            dst = os.fstat(dir_fd)
            if dst.st_ino != ino or dst.st_dev != dev:
                raise SnapshotError(f"{os.fsdecode(directory)}: directory was replaced while the tree was being "
                                    f"snapshotted")
            self._children(dir_fd, directory, dir_label, pending)
        finally:
            os.close(dir_fd)

    def _children(self, dir_fd: int, directory: bytes, dir_label: bytes, pending: Callable[[Dir], None]) -> None:
        rows, add, miss = self.rows, self.rows.append, self.misses.append
        get, cached = self.table.get, statcache.cached_digest
        skip_abs, matches = self.skip.absolute, self.skip.matches
        encoding, errors = _FS_ENCODING
        prefix = b"" if dir_label == b"." else dir_label + b"/"
        abs_prefix = directory + b"/" if directory != b"/" else directory
        hits = 0
        try:
            with os.scandir(dir_fd) as it:
                for child in it:
                    # a descriptor scan yields str names; these are their exact bytes (os.fsencode, inlined)
                    name = child.name.encode(encoding, errors)
                    abs_path = abs_prefix + name
                    label = prefix + name
                    if name == b".git" or abs_path in skip_abs or (matches is not None
                                                                  and matches(abs_path, label, name)):
                        continue
                    try:
                        st = child.stat(follow_symlinks=False)  # fstatat() on dir_fd
                    except OSError as exc:
                        raise SnapshotError(f"{os.fsdecode(abs_path)}: cannot stat: {exc.strerror}") from None
                    mode = st.st_mode
                    fmt = mode & _S_IFMT
                    if fmt == _S_IFREG:
                        digest = cached(get(abs_path), st)
                        if digest is not None:
                            add((label, "f", mode & 0o7777, st.st_size, digest))
                            hits += 1
                        else:
                            miss((label, abs_path, statcache.ident(st)))
                    elif fmt == _S_IFDIR:
                        add((label, "d", mode & 0o7777, 0, None))
                        pending((abs_path, label, st.st_dev, st.st_ino))
                    else:
                        rows.append(_other(abs_path, label, mode, st, dir_fd))
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(directory)}: cannot list directory: {exc.strerror}") from None
        self.hits += hits

    def subtree(self, d: Dir) -> None:
        """Record everything below directory ``d``, depth first."""
        stack = [d]
        pop, push = stack.pop, stack.append
        while stack:
            self.list_dir(pop(), push)


def _masked_target(target: bytes) -> bytes:
    """A symlink's target as a manifest records it: credentials masked (``envpolicy.mask``), e.g. a
    link to ``https://user:PASSWORD@host/x``; an ordinary target is returned as it is."""
    text = target.decode("utf-8", "surrogateescape")
    return envpolicy.mask(text, ()).encode("utf-8", "surrogateescape")


def _other(abs_path: bytes, label: bytes, mode: int, st: os.stat_result, dir_fd: int | None) -> Row:
    """The row of a symlink, device, fifo or socket (a symlink is read relative to ``dir_fd`` if given)."""
    fmt = mode & _S_IFMT
    if fmt == _S_IFLNK:
        try:
            target = os.readlink(abs_path if dir_fd is None else os.path.basename(abs_path), dir_fd=dir_fd)
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(abs_path)}: cannot read symlink: {exc.strerror}") from None
        target = _masked_target(target)
        return (label, "l", mode & 0o7777, len(target), target)
    kind = _OTHER_KINDS.get(fmt, "s")
    return (label, kind, mode & 0o7777, 0, st.st_rdev if kind in ("c", "b") else None)


def scan(
    roots: list[tuple[bytes, bytes]], *, skip: Skip, cache: StatCache, workers: int
) -> tuple[list[Row], list[Miss]]:
    """Rows and misses for ``(absolute root, label)`` pairs, in no particular order.

    Raises:
        SnapshotError: a root or path cannot be listed, stat'ed or read (symlinks), naming it.
    """
    walk = _Walk(skip, cache.table)
    if not _CAN_SHARE:
        workers = 1
    waiting: deque[Dir] = deque()
    for root, label in roots:
        try:
            st = os.lstat(root)
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(root)}: cannot stat: {exc.strerror}") from None
        walk.add_path(root, label, st, waiting.append)
    # breadth first here until there is enough to share
    while waiting and (workers < 2 or len(waiting) < _SHARE_DIRS
                       or len(walk.rows) + len(walk.misses) < _SHARE_PATHS):
        walk.list_dir(waiting.popleft(), waiting.append)
    if waiting:
        _share(list(waiting), walk, workers)
    cache.hits += walk.hits
    cache.misses += len(walk.misses)
    return walk.rows, walk.misses


def _tasks(subtrees: list[Dir]) -> list[list[Dir]]:
    per = -(-len(subtrees) // _MAX_TASKS)
    return [subtrees[i : i + per] for i in range(0, len(subtrees), per)]


def _share(subtrees: list[Dir], walk: _Walk, workers: int) -> None:
    """Walk ``subtrees`` in this process and forked helpers, adding everything to ``walk``."""
    tasks = _tasks(subtrees)
    done: set[int] = set()
    try:
        tasks_r, tasks_w = os.pipe()
    except OSError:
        pass  # out of descriptors: everything is walked below, here
    else:
        os.write(tasks_w, b"".join(_TASK.pack(i) for i in range(len(tasks))))  # < 16 KiB: never blocks
        os.close(tasks_w)
        _share_with_helpers(tasks, tasks_r, walk, workers, done)
    for index, task in enumerate(tasks):  # lost with a failed or dead helper: walk it here
        if index not in done:
            for d in task:
                walk.subtree(d)


def _share_with_helpers(tasks: list[list[Dir]], tasks_r: int, walk: _Walk, workers: int, done: set[int]) -> None:
    """Take tasks from ``tasks_r`` here and in up to ``workers - 1`` helpers; note finished ones in ``done``."""
    helpers: list[tuple[int, int]] = []
    error: SnapshotError | None = None
    try:
        for _ in range(min(workers, len(tasks)) - 1):
            try:
                result = os.memfd_create("asl-scan", os.MFD_CLOEXEC)
            except OSError:  # out of descriptors or memory: fewer helpers
                break
            helpers.append((0, result))
            try:
                pid = os.fork()
            except OSError:  # no more processes: the tasks left are walked here
                break
            if pid == 0:  # pragma: no cover - runs in the helper
                code = 1
                try:
                    _help(tasks, tasks_r, result, _Walk(walk.skip, walk.table))
                    code = 0
                finally:
                    os._exit(code)
            helpers[-1] = (pid, result)
        try:
            _take(tasks, tasks_r, walk, done)
        except SnapshotError as exc:
            error = exc
    finally:
        os.close(tasks_r)
        for pid, result in helpers:
            if pid and os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 and error is None:
                _collect(result, walk, done)
            os.close(result)
    if error is not None:
        raise error


def _take(tasks: list[list[Dir]], tasks_r: int, walk: _Walk, done: set[int]) -> None:
    """Walk tasks from the pipe until it is empty. On an error, ``walk`` keeps only whole tasks."""
    while len(raw := os.read(tasks_r, _TASK.size)) == _TASK.size:
        (index,) = _TASK.unpack(raw)
        kept = len(walk.rows), len(walk.misses), walk.hits
        try:
            for d in tasks[index]:
                walk.subtree(d)
        except SnapshotError:
            del walk.rows[kept[0]:], walk.misses[kept[1]:]
            walk.hits = kept[2]
            raise
        done.add(index)


def _help(tasks: list[list[Dir]], tasks_r: int, result: int, walk: _Walk) -> None:  # pragma: no cover
    """In a helper: walk tasks, then leave the finished ones' rows in the ``result`` memfd."""
    done: set[int] = set()
    with contextlib.suppress(SnapshotError):  # the failed task is walked again by the parent, which raises
        _take(tasks, tasks_r, walk, done)
    payload = memoryview(marshal.dumps((sorted(done), walk.rows, walk.misses, walk.hits)))
    while payload:
        payload = payload[os.write(result, payload):]


def _collect(result: int, walk: _Walk, done: set[int]) -> None:
    """Add the rows a helper that exited cleanly left in its memfd (an unreadable result is ignored)."""
    data = os.pread(result, os.fstat(result).st_size, 0)
    try:
        # written by our own forked helper into a memfd only it and this process hold
        finished, rows, misses, hits = marshal.loads(data)  # noqa: S302
    except (EOFError, ValueError, TypeError):
        return  # its tasks are redone
    walk.rows.extend(rows)
    walk.misses.extend(misses)
    walk.hits += hits
    done.update(finished)
