"""Checks 2 and 3 of ``asl-verify chain`` for every record: its signature, then its payload.

A record's payload is decoded only after its own signature held. Ed25519 verification holds the GIL
and is half the work of verifying a chain, so on a machine with more than one core a long chain is
cut into contiguous shares and each share past the first is opened by a forked helper, which checks
each signature, decodes each payload whose signature held, and sends back the decoded values
(``marshal``: the data model is plain ints, bytes, text, lists and maps) with the index of its first
bad signature and of its first payload that is not deterministic CBOR. Meanwhile this process opens
the first share and parses its records. Results are combined in record order, so the error raised
is exactly the one a serial pass raises: the earliest bad signature in the whole chain, else the
earliest payload that does not decode or parse. A helper that dies or answers nonsense has its
share opened here again: no helper is ever needed for a verdict, only for speed. ``bench/README.md``
has the serial-against-forked measurement that keeps this.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
from collections.abc import Callable, Sequence
from typing import TypeVar

from asl_capture import dcbor
from asl_capture.cose import Sign1
from asl_capture.errors import CborError, VerificationError
from asl_capture.hashing import available_cpus

#: Below this many records per share, a helper costs more than it saves.
MIN_SHARE = 256

_T = TypeVar("_T")

#: What one share's pass found: (first bad signature, first undecodable payload, decoded payloads up to
#: that one). An index is -1 when there is none.
_Found = tuple[int, int, list[dcbor.Value]]


def helpers_for(records: int) -> int:
    """How many helpers to fork for a chain of ``records`` records on this machine (0: serial)."""
    return max(0, min(available_cpus(), records // MIN_SHARE) - 1)


def _open_share(messages: Sequence[Sign1], lo: int, hi: int, check: Callable[[int, Sign1], None]) -> _Found:
    """Check records ``lo``..``hi - 1``: every signature; decode payloads until the first that fails."""
    bad_sig = bad_payload = -1
    values: list[dcbor.Value] = []
    for index in range(lo, hi):
        msg = messages[index]
        try:
            check(index, msg)
        except VerificationError:
            bad_sig = index
            break  # nothing later in this share can matter: this is the earliest error it can hold
        if bad_payload < 0:
            try:
                values.append(dcbor.decode(msg.payload))
            except CborError:
                bad_payload = index
    return bad_sig, bad_payload, values


def _fork_share(messages: Sequence[Sign1], lo: int, hi: int,
                check: Callable[[int, Sign1], None]) -> tuple[int, int]:  # pragma: no cover - the helper side
    """Fork a helper opening ``lo``..``hi - 1``; return (pid, read end of its pipe)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(write_fd)
        return pid, read_fd
    code = 1
    try:
        os.close(read_fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent handles Ctrl-C; this one just dies
        data = marshal.dumps(_open_share(messages, lo, hi, check))
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
        code = 0
    finally:
        os._exit(code)


def _answer(pid: int, read_fd: int) -> _Found | None:
    """The helper's result, or None when it died or sent something that is not a whole answer."""
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return None
    try:
        found = marshal.loads(data)  # noqa: S302 - our own forked helper's bytes, never input
    except (EOFError, ValueError, TypeError):
        return None
    if (not isinstance(found, tuple) or len(found) != 3 or not isinstance(found[0], int)
            or not isinstance(found[1], int) or not isinstance(found[2], list)):
        return None
    return found


def open_records(messages: Sequence[Sign1], check: Callable[[int, Sign1], None],
                 parse: Callable[[dcbor.Value, int], _T], *, helpers: int | None = None) -> list[_T]:
    """Every record's signature checked (``check(index, msg)`` raises VerificationError), then its
    payload decoded and parsed (``parse(value, index)``), in the order a serial pass would raise.

    ``helpers`` forked helpers share the work (default :func:`helpers_for`; 0 opens serially).

    Raises:
        VerificationError: the earliest bad signature (check ``signature``); else the earliest payload
            that is not deterministic CBOR (check ``payload``); or what ``parse`` raises.
    """
    count = len(messages)
    workers = 1 + (helpers_for(count) if helpers is None else max(0, helpers))
    bounds = [count * w // workers for w in range(workers + 1)]
    running: list[tuple[int, int, int]] = []  # (share, pid, read fd)
    try:
        for share in range(1, workers):
            pid, read_fd = _fork_share(messages, bounds[share], bounds[share + 1], check)
            running.append((share, pid, read_fd))
        found = [_open_share(messages, bounds[0], bounds[1], check)]
        parsed: list[_T] = []
        late: VerificationError | None = None
        if found[0][0] < 0:  # parse this share while the helpers work; raise only once they are heard
            try:
                parsed.extend(parse(value, index) for index, value in enumerate(found[0][2]))
            except VerificationError as exc:
                late = exc
        while running:
            share, pid, read_fd = running.pop(0)
            answer = _answer(pid, read_fd)
            found.append(answer if answer is not None
                         else _open_share(messages, bounds[share], bounds[share + 1], check))
    finally:
        for _share, pid, read_fd in running:
            with contextlib.suppress(OSError):
                os.close(read_fd)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    for bad_sig, _bad_payload, _values in found:
        if bad_sig >= 0:
            check(bad_sig, messages[bad_sig])  # raises the exact error
            raise VerificationError("signature check disagrees with itself", check="signature",
                                    record=bad_sig)  # pragma: no cover - check is deterministic
    if late is not None:
        raise late
    for share, (_bad_sig, bad_payload, values) in enumerate(found):
        first = bounds[share]
        if share > 0:
            parsed.extend(parse(value, first + offset) for offset, value in enumerate(values))
        if bad_payload >= 0:
            try:
                dcbor.decode(messages[bad_payload].payload)
            except CborError as exc:
                raise VerificationError(str(exc), check="payload", record=bad_payload) from None
            raise VerificationError("payload decoding disagrees with itself", check="payload",
                                    record=bad_payload)  # pragma: no cover - decoding is deterministic
    return parsed
