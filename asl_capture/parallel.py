"""Run one function over a few shards of work in forked processes, for work that holds the GIL
(squashfs decompression in ``asl-verify iso``, Ed25519 checks in ``asl-verify chain``).

Each helper inherits the parent's state copy-on-write (open image descriptors included: ``pread``
shares no file offset), computes its shard and sends back a pickled result through a pipe. The
parent computes the first shard itself. A helper that fails sends its error's message, which is
raised here as :class:`~asl_capture.errors.ImageError`; one that dies is an error too. Without
``fork`` (or with one shard), everything runs in the calling process.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from asl_capture.errors import AslError, ImageError

_T = TypeVar("_T")
_R = TypeVar("_R")


class Pending(Generic[_R]):
    """Helpers started by :func:`start_shards`; :meth:`collect` their results (in shard order) once."""

    def __init__(self, helpers: list[tuple[int, int]]) -> None:
        self.helpers = helpers

    def collect(self) -> list[_R]:
        """Wait for every helper and return its result.

        Raises:
            ImageError: a helper failed (its error's message) or died.
        """
        helpers, self.helpers = self.helpers, []
        results: list[_R] = []
        problem: str | None = None
        for pid, read_fd in helpers:
            with os.fdopen(read_fd, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            if status != 0 or not data:
                problem = problem or "a verification helper process died"
                continue
            ok, value = pickle.loads(data)  # noqa: S301 - our own child's output
            if not ok:
                problem = problem or str(value).split(": ", 1)[-1]
                continue
            results.append(value)
        if problem is not None:
            raise ImageError(problem)
        return results

    def cancel(self) -> None:
        """Stop the helpers not collected yet."""
        helpers, self.helpers = self.helpers, []
        _reap(helpers)


def start_shards(shards: Sequence[_T], work: Callable[[_T], _R]) -> Pending[_R]:
    """Start ``work(s)`` for every shard in a forked helper each (nothing runs here); without ``fork``,
    the work is done now and :meth:`Pending.collect` returns it."""
    if not hasattr(os, "fork"):
        return _Done([work(s) for s in shards])
    helpers: list[tuple[int, int]] = []
    try:
        for s in shards:
            helpers.append(_fork(s, work))
    except BaseException:
        _reap(helpers)
        raise
    return Pending(helpers)


class _Done(Pending[_R]):
    def __init__(self, results: list[_R]) -> None:
        super().__init__([])
        self.results = results

    def collect(self) -> list[_R]:
        return self.results


def _fork(s: _T, work: Callable[[_T], _R]) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the helper
        code = 1
        try:
            os.close(read_fd)
            try:
                payload = pickle.dumps((True, work(s)))
            except AslError as exc:
                payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def run_shards(shards: Sequence[_T], work: Callable[[_T], _R]) -> list[_R]:
    """``[work(s) for s in shards]``, the shards after the first each in a forked helper.

    Raises:
        AslError: whatever ``work`` raised (helpers' errors come back as ImageError with its message).
    """
    if len(shards) < 2 or not hasattr(os, "fork"):
        return [work(s) for s in shards]
    pending = start_shards(shards[1:], work)
    try:
        first = work(shards[0])
    except BaseException:
        pending.cancel()
        raise
    return [first, *pending.collect()]


def _reap(helpers: list[tuple[int, int]]) -> None:
    for pid, read_fd in helpers:
        os.close(read_fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
