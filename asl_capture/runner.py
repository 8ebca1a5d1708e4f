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
from pathlib import Path
from types import FrameType

from asl_capture import safeio
from asl_capture.errors import StoreError
from asl_capture.frozen import frozen
from asl_capture.store import Store

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CHUNK = 1 << 18


@frozen
class StoredLog:
    """A stream's bytes, stored as an object: its SHA-256 and size."""

    digest: bytes
    size: int


@frozen
class RunResult:
    """How the child ended. ``returncode`` is negative -N when signal N ended it, None if it never ran."""

    returncode: int | None
    start_error: str | None
    signals: tuple[int, ...]
    stdout: StoredLog
    stderr: StoredLog
    started: int
    finished: int
    #: Why a log could not be stored (a full disk), or None. Its StoredLog then has a zero digest.
    store_error: str | None = None


class _Sink:
    """Copies one stream to a terminal fd while hashing it into a temporary object file.

    A write to the temporary file that fails (a full disk) does not stop the command: the
    temporary file is removed at once (freeing its space), the stream is still hashed and
    forwarded, and :meth:`close` reports the failure.
    """

    def __init__(self, store: Store, forward_fd: int | None) -> None:
        self.fd, self.path = store.new_temp()
        self.hash = hashlib.sha256()
        self.size = 0
        self.failed: str | None = None
        # never forward into our own temporary file (a caller whose stdout was closed)
        self.forward_fd = forward_fd if forward_fd is not None and not _same_file(forward_fd, self.fd) else None

    def feed(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        if self.failed is None:
            try:
                safeio.write_all(self.fd, data)
            except OSError as exc:
                self.failed = exc.strerror or str(exc)
                self._discard()
        if self.forward_fd is not None:
            try:
                safeio.write_all(self.forward_fd, data)
            except OSError:  # our reader went away: keep capturing, stop forwarding
                self.forward_fd = None

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1
        self.path.unlink(missing_ok=True)

    def close_quietly(self) -> None:
        """Give up: remove the temporary file."""
        self._discard()

    def close(self, store: Store, name: str) -> StoredLog:
        """Store the log as an object; the temporary file is gone afterwards, whatever happens.

        Raises:
            StoreError: the log could not be written or stored.
        """
        if self.failed is None:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                self.failed = exc.strerror or str(exc)
        if self.failed is not None:
            self._discard()
            raise StoreError(f"the command's {name} ({self.size} bytes) could not be stored: {self.failed}")
        os.close(self.fd)
        self.fd = -1
        digest = self.hash.digest()
        store.adopt(self.path, digest)
        return StoredLog(digest=digest, size=self.size)


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


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
    store: Store,
    forward_output: bool = True,
    user: tuple[int, int] | None = None,
) -> RunResult:
    """Run ``argv`` to completion; see the module docstring. With ``user`` (uid, gid) the command
    runs as that user, with no supplementary groups (and so without root's capabilities).

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
    try:
        err = _Sink(store, 2 if forward_output else None)
    except BaseException:
        out.close_quietly()
        raise
    started = time.time_ns()
    finished: int | None = None
    returncode: int | None = None
    start_error: str | None = None
    try:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=dict(env), cwd=cwd, process_group=0, close_fds=True,
                user=user[0] if user is not None else None, group=user[1] if user is not None else None,
                extra_groups=[] if user is not None else None,
            )
        except OSError as exc:
            start_error = f"cannot start {argv[0]!r}: {exc.strerror}"
            if user is not None and isinstance(exc, PermissionError):
                start_error += f" (as uid {user[0]}: can that user reach the program and the working directory?)"
        else:
            child.append(proc)
            if received:  # a signal arrived while we were starting it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, received[-1])
            with _terminal_to(proc.pid):
                exited = _pump(proc, out, err)
                returncode = proc.wait()
                finished = exited if exited is not None else time.time_ns()
    finally:
        if finished is None:
            finished = time.time_ns()
        # Until the record is appended, a signal must not kill us and lose it: hold signals
        # pending; the caller releases them with release_signals() once the record is safe.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    problems: list[str] = []
    logs: list[StoredLog] = []
    for sink, name in ((out, "stdout"), (err, "stderr")):
        try:
            logs.append(sink.close(store, name))
        except StoreError as exc:
            problems.append(str(exc))
            logs.append(StoredLog(digest=bytes(32), size=sink.size))
    return RunResult(returncode=returncode, start_error=start_error, signals=tuple(received),
                     stdout=logs[0], stderr=logs[1], started=started, finished=finished,
                     store_error="; ".join(problems) or None)


def release_signals() -> None:
    """Deliver the signals held since :func:`run` returned (their default action may end us)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def _pump(proc: subprocess.Popen[bytes], out: _Sink, err: _Sink) -> int | None:
    """Copy the child's output until it has exited and its pipes hold nothing more, or until both
    pipes are closed; return when it exited (ns), if that is how it ended. Output that processes
    it left behind write later is not waited for."""
    assert proc.stdout is not None and proc.stderr is not None
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    exited: int | None = None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # no pidfd (old kernel): wait for both pipes to close, as before
        pidfd = -1
    with selectors.DefaultSelector() as selector:
        for fd in sinks:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        if pidfd >= 0:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while sinks:
                for key, _ in selector.select():
                    fd = int(key.fd)
                    if fd == pidfd:
                        exited = time.time_ns()
                        selector.unregister(pidfd)
                        _drain(sinks)
                        sinks.clear()
                        break
                    _read_into(fd, sinks, selector)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
    proc.stdout.close()
    proc.stderr.close()
    return exited


def _read_into(fd: int, sinks: dict[int, _Sink], selector: selectors.BaseSelector) -> None:
    try:
        data = os.read(fd, _CHUNK)
    except BlockingIOError:
        return
    if data:
        sinks[fd].feed(data)
    else:
        selector.unregister(fd)
        del sinks[fd]


#: After the child exits, at most this much more is read from its pipes (what it wrote before
#: exiting, plus whatever descendants still holding them write meanwhile).
_DRAIN_LIMIT = 64 << 20


def _drain(sinks: dict[int, _Sink]) -> None:
    """Read what the pipes hold now, without waiting for writers that outlive the child."""
    budget = _DRAIN_LIMIT
    for fd, sink in sinks.items():
        while budget > 0:
            try:
                data = os.read(fd, _CHUNK)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            sink.feed(data)
            budget -= len(data)
