"""Run the captured command: live byte-exact output, hashed and stored; signals forwarded.

The child gets its own process group (and the terminal's foreground, when ``asl-capture`` had
it), inherits stdin, and has its stdout and stderr copied to ours as they arrive while each stream
is hashed and written to a temporary object. SIGINT, SIGTERM and SIGHUP received by us are sent
to the child's process group. There is no timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from asl_capture.store import ObjectStore

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CHUNK = 1 << 18


@dataclass(frozen=True, slots=True)
class StoredLog:
    """A stream's bytes, stored as an object: its SHA-256 and size."""

    digest: bytes
    size: int


@dataclass(frozen=True, slots=True)
class RunResult:
    """How the child ended. ``returncode`` is negative -N when signal N ended it, None if it never ran."""

    returncode: int | None
    start_error: str | None
    signals: tuple[int, ...]
    stdout: StoredLog
    stderr: StoredLog
    started: int
    finished: int


class _Sink:
    """Copies one stream to a terminal fd while hashing it into a temporary object file."""

    def __init__(self, store: ObjectStore, forward_fd: int | None) -> None:
        self.fd, self.path = store.new_temp()
        self.hash = hashlib.sha256()
        self.size = 0
        self.forward_fd = forward_fd

    def feed(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        _write_all(self.fd, data)
        if self.forward_fd is not None:
            try:
                _write_all(self.forward_fd, data)
            except OSError:  # our reader went away: keep capturing, stop forwarding
                self.forward_fd = None

    def close(self, store: ObjectStore) -> StoredLog:
        os.fsync(self.fd)
        os.close(self.fd)
        digest = self.hash.digest()
        store.adopt(self.path, digest)
        return StoredLog(digest=digest, size=self.size)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@contextlib.contextmanager
def _terminal_to(pgid: int) -> Iterator[None]:
    """Give the controlling terminal's foreground to ``pgid`` if we hold it; take it back after."""
    fd = -1
    with contextlib.suppress(OSError):
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            fd = 0
    if fd < 0:
        yield
        return
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, pgid)
            os.killpg(pgid, signal.SIGCONT)  # in case it stopped on SIGTTIN before the hand-over
        yield
    finally:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, os.getpgrp())
        signal.signal(signal.SIGTTOU, old)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    store: ObjectStore,
    forward_output: bool = True,
) -> RunResult:
    """Run ``argv`` to completion; see the module docstring.

    SIGINT, SIGTERM and SIGHUP stay blocked when this returns: call :func:`release_signals` once
    the step's record is written.

    Raises:
        StoreError: a log cannot be stored.
    """
    received: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if child:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child[0].pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    out = _Sink(store, 1 if forward_output else None)
    err = _Sink(store, 2 if forward_output else None)
    started = time.time_ns()
    returncode: int | None = None
    start_error: str | None = None
    try:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=dict(env), cwd=cwd, process_group=0, close_fds=True,
            )
        except OSError as exc:
            start_error = f"cannot start {argv[0]!r}: {exc.strerror}"
        else:
            child.append(proc)
            if received:  # a signal arrived while we were starting it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, received[-1])
            with _terminal_to(proc.pid):
                _pump(proc, out, err)
                returncode = proc.wait()
    finally:
        finished = time.time_ns()
        # Until the record is appended, a signal must not kill us and lose it: hold signals
        # pending; the caller releases them with release_signals() once the record is safe.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stdout, stderr = out.close(store), err.close(store)
    return RunResult(returncode=returncode, start_error=start_error, signals=tuple(received),
                     stdout=stdout, stderr=stderr, started=started, finished=finished)


def release_signals() -> None:
    """Deliver the signals held since :func:`run` returned (their default action may end us)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def _pump(proc: subprocess.Popen[bytes], out: _Sink, err: _Sink) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with selectors.DefaultSelector() as selector:
        for fd in sinks:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while sinks:
            for key, _ in selector.select():
                fd = int(key.fd)
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if data:
                    sinks[fd].feed(data)
                else:
                    selector.unregister(fd)
                    del sinks[fd]
    proc.stdout.close()
    proc.stderr.close()
