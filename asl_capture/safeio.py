"""Reading and writing files in a directory someone else may have written to.

Every file the tools read from a provenance directory is opened without following a symlink
(``O_NOFOLLOW``) and without blocking on a FIFO (``O_NONBLOCK``), must be a regular file, and is
read with a bound that follows from its format. Every file written there is first created under a
fresh random name with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (a name nobody could have prepared), written
whole, and only then renamed into place; a failed write removes what it wrote.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A file is not a regular file, is reached through a symlink, or is larger than its bound."""


def open_regular(path: Path | str, *, limit: int | None = None, what: str = "file",
                 follow: bool = False) -> tuple[int, int]:
    """Open ``path`` for reading as described in the module docstring; return (fd, size). With
    ``follow`` (a file of the user's own tree, not of a provenance directory) a symlink is followed.

    Raises:
        FileNotFoundError: it does not exist.
        UnsafeFile: a symlink, not a regular file, or over ``limit`` bytes.
        OSError: it cannot be opened.
    """
    try:
        fd = os.open(path, _READ_FLAGS & ~os.O_NOFOLLOW if follow else _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafeFile(exc.errno, f"{what} is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(0, f"{what} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise UnsafeFile(0, f"{what} is {st.st_size} bytes, more than the {limit} its format allows")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_regular(path: Path | str, *, limit: int, what: str = "file", follow: bool = False) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see :func:`open_regular`).

    Bytes appended while it is read are not returned beyond ``limit``.

    Raises:
        FileNotFoundError, UnsafeFile, OSError: as :func:`open_regular`, or a read error.
    """
    fd, size = open_regular(path, limit=limit, what=what, follow=follow)
    try:
        chunks: list[bytes] = []
        left = min(size, limit)
        while left > 0:
            chunk = os.read(fd, left)  # usually the whole file at once, and then joined without a copy
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def describe(exc: OSError) -> str:
    """A short reason for an OSError (the strerror, or the message of an :class:`UnsafeFile`)."""
    return exc.strerror or str(exc.args[-1] if exc.args else exc)


def new_temp(directory: Path, prefix: str) -> tuple[int, Path]:
    """Create a fresh temporary file in ``directory`` (``O_EXCL|O_NOFOLLOW``, mode 0600).

    Raises:
        OSError: it cannot be created.
    """
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
    return fd, Path(name)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``.

    Raises:
        OSError: a write failed (e.g. ENOSPC).
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def replace_atomically(target: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to a fresh temporary file beside ``target``, then rename it over ``target``.

    On any failure the temporary file is removed and ``target`` is unchanged.

    Raises:
        OSError: the write or the rename failed.
    """
    fd, tmp = new_temp(target.parent, f".{target.name}.")
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: Paths at least this long are opened a piece at a time (the kernel refuses PATH_MAX = 4096 bytes).
_LONG_PATH = 4000


def open_path(path: bytes, flags: int) -> int:
    """``os.open(path, flags)``, also for a path longer than PATH_MAX: the leading directories are
    then opened in pieces shorter than the limit, each relative to the one before, resolving the
    path exactly as the kernel would (``flags`` apply to the last component).

    Raises:
        OSError: as :func:`os.open`.
    """
    if len(path) < _LONG_PATH:
        return os.open(path, flags)
    head, _, last = path.rpartition(b"/")
    if not head and path.startswith(b"/"):
        head = b"/"
    dir_fd: int | None = None
    try:
        while head:
            if len(head) < _LONG_PATH:
                piece, head = head, b""
            else:
                cut = head.rfind(b"/", 1, _LONG_PATH)
                if cut <= 0:
                    raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
                piece, head = head[:cut], head[cut + 1 :]
            opened = os.open(piece, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
            if dir_fd is not None:
                os.close(dir_fd)
            dir_fd = opened
        return os.open(last or b".", flags, dir_fd=dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
