"""The ``lstat`` walk of a snapshot's roots, in one process, with stat-cache look-ups inline.

The walk uses ``os.scandir`` and ``lstat`` only and never follows a symlink. For every path it
produces either a finished manifest row ``(label, kind, permission bits, size, extra)`` or, for a
regular file the :class:`~asl_capture.statcache.StatCache` cannot vouch for (by
:func:`~asl_capture.statcache.cached_digest`), a *miss* ``(label, absolute path, identity)`` left
for the hasher.

A walk shared across cores by forked helpers was measured against this serial walk on the bench
tree (``bench/README.md``) and did not win by the 1.3x that would pay for it, so it was removed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from asl_capture import safeio, statcache
from asl_capture.errors import SnapshotError
from asl_capture.frozen import frozen
from asl_capture.statcache import CacheRecord, Ident, StatCache

#: ``(label, kind, permission bits, size, extra)``: a manifest entry as a plain tuple.
Row = tuple[bytes, str, int, int, bytes | int | None]
#: ``(label, absolute path, identity)``: a regular file that must be read.
Miss = tuple[bytes, bytes, Ident]
#: ``(absolute path, label, device, inode)``: a directory still to be listed.
Dir = tuple[bytes, bytes, int, int]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

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
        fsencode = os.fsencode
        prefix = b"" if dir_label == b"." else dir_label + b"/"
        abs_prefix = directory + b"/" if directory != b"/" else directory
        hits = 0
        try:
            with os.scandir(dir_fd) as it:
                for child in it:
                    name = fsencode(child.name)  # a descriptor scan yields str names; this is their exact bytes
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


def _other(abs_path: bytes, label: bytes, mode: int, st: os.stat_result, dir_fd: int | None) -> Row:
    """The row of a symlink, device, fifo or socket (a symlink is read relative to ``dir_fd`` if given)."""
    fmt = mode & _S_IFMT
    if fmt == _S_IFLNK:
        try:
            target = os.readlink(abs_path if dir_fd is None else os.path.basename(abs_path), dir_fd=dir_fd)
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(abs_path)}: cannot read symlink: {exc.strerror}") from None
        return (label, "l", mode & 0o7777, len(target), target)
    kind = _OTHER_KINDS.get(fmt, "s")
    return (label, kind, mode & 0o7777, 0, st.st_rdev if kind in ("c", "b") else None)


def scan(roots: list[tuple[bytes, bytes]], *, skip: Skip, cache: StatCache) -> tuple[list[Row], list[Miss]]:
    """Rows and misses for ``(absolute root, label)`` pairs, in no particular order, in this process.

    Raises:
        SnapshotError: a root or path cannot be listed, stat'ed or read (symlinks), naming it.
    """
    walk = _Walk(skip, cache.table)
    waiting: list[Dir] = []
    for root, label in roots:
        try:
            st = os.lstat(root)
        except OSError as exc:
            raise SnapshotError(f"{os.fsdecode(root)}: cannot stat: {exc.strerror}") from None
        walk.add_path(root, label, st, waiting.append)
        while waiting:
            walk.list_dir(waiting.pop(), waiting.append)
    cache.hits += walk.hits
    cache.misses += len(walk.misses)
    return walk.rows, walk.misses
