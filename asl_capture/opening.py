"""Checks 2 and 3 of ``asl-verify chain`` for every record: its signature, then its payload.

A record's payload is decoded only after its own signature held. Ed25519 verification holds the GIL
and is half the work of verifying a chain, so on a machine with more than one core a long chain is
cut into contiguous shares and each share past the first is opened by a forked helper, which checks
each signature, decodes each payload whose signature held, and sends back the decoded values with
the index of its first bad signature and of its first payload that is not deterministic CBOR (the
fork, pipe and reaping are :mod:`asl_capture.parallel`'s). Meanwhile this process opens
the first share and parses its records. Results are combined in record order, so the error raised
is exactly the one a serial pass raises: the earliest bad signature in the whole chain, else the
earliest payload that does not decode or parse. If a helper dies or fails, the shares are
opened here again: no helper is ever needed for a verdict, only for speed. ``bench/README.md``
has the serial-against-forked measurement that keeps this.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

from asl_capture import dcbor
from asl_capture.cose import Sign1
from asl_capture.errors import CborError, ImageError, VerificationError
from asl_capture.hashing import available_cpus
from asl_capture.parallel import start_shards

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
    shares = list(itertools.pairwise(bounds))

    def open_share(share: tuple[int, int]) -> _Found:
        return _open_share(messages, share[0], share[1], check)

    pending = start_shards(shares[1:], open_share)
    try:
        found = [open_share(shares[0])]
        parsed: list[_T] = []
        late: VerificationError | None = None
        if found[0][0] < 0:  # parse this share while the helpers work; raise only once they are heard
            try:
                parsed.extend(parse(value, index) for index, value in enumerate(found[0][2]))
            except VerificationError as exc:
                late = exc
        try:
            found += pending.collect()
        except ImageError:  # a helper died or failed: its shares are opened here
            found += [open_share(share) for share in shares[1:]]
    except BaseException:
        pending.cancel()
        raise
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
