"""Whether this process may be dumped or traced by its user: ``prctl(PR_{SET,GET}_DUMPABLE)``.

The standard library has no ``prctl``. It is called through ``_ctypes``, the C half of
``ctypes``, with a one-function binding written here: importing ``ctypes`` itself (its Python
half, which defines every C type) costs about 1.8 ms of every capture that holds a key, ``_ctypes``
about 0.5 ms (measured on this project's machine, 2026-11-30). Off Linux both calls do nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from asl_capture.errors import AgentError

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def _prctl() -> tuple[Callable[..., int], Callable[[], int]]:
    """libc's ``int prctl(int, unsigned long, ...)`` (errno kept) and a reader of the saved errno."""
    import _ctypes

    class CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
        _type_ = "i"

    class CFunction(_ctypes.CFuncPtr):  # ctypes.CDLL's function type, use_errno=True
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CInt

    libc = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # None: the program itself
    function: Callable[..., int] = CFunction(_ctypes.dlsym(libc, "prctl"))
    get_errno: Callable[[], int] = _ctypes.get_errno
    return function, get_errno


def make_undumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: no core dump, and no ptrace or ``/proc/PID/mem`` by the same user.

    Raises:
        AgentError: the call failed.
    """
    if not sys.platform.startswith("linux"):
        return
    prctl, get_errno = _prctl()
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise AgentError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(get_errno())}")


def is_dumpable() -> bool:
    """Whether this process is dumpable (``prctl(PR_GET_DUMPABLE)``; True off Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    prctl, _get_errno = _prctl()
    return bool(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
