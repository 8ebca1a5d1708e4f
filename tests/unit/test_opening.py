"""Checks 2 and 3 shared with forked helpers (asl_capture.opening): the same verdict and the same first
error as a serial pass, whichever share holds the problem, and a helper that dies changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asl_capture import cose, dcbor, opening
from asl_capture.errors import AslError, CborError, VerificationError
from asl_capture.format import StepRecord
from asl_capture.hashing import available_cpus
from asl_capture.keys import load_trust
from asl_capture.verify import verify_chain
from tests.assets import make_assets
from tests.unit.bodies import minimal_record

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
ASSETS = Path(make_assets.__file__).resolve().parent
CASES = sorted(json.loads((ASSETS / "cases.json").read_text()))


def message(payload: bytes, *, bad_signature: bool = False) -> cose.Sign1:
    msg = cose.parse(dcbor.decode(cose.sign(payload, KEY), tags=cose.COSE_TAGS))
    if bad_signature:
        flipped = bytes([msg.signature[0] ^ 1]) + msg.signature[1:]
        msg = cose.Sign1(msg.protected, msg.kid, msg.content_type, msg.payload, flipped)
    return msg


GOOD = [minimal_record(run=n).to_cbor() for n in range(8)]
NOT_CBOR = b"\xff"
NOT_A_RECORD = dcbor.encode({"v": 1})


def check(index: int, msg: cose.Sign1) -> None:
    try:
        cose.verify(msg, PUBLIC)
    except VerificationError as exc:
        raise VerificationError(str(exc), check="signature", record=index) from None


def parse(value: dcbor.Value, index: int) -> StepRecord:
    try:
        return StepRecord.from_value(value)
    except CborError as exc:
        raise VerificationError(str(exc), check="payload", record=index) from None


def outcome(messages: list[cose.Sign1], helpers: int) -> tuple[str, str | None, int | None, str] | list[StepRecord]:
    try:
        return opening.open_records(messages, check, parse, helpers=helpers)
    except VerificationError as exc:
        return ("error", exc.check, exc.record, str(exc))


def chain(*bad: tuple[int, str]) -> list[cose.Sign1]:
    """Eight records, record ``i`` broken as ``kind`` for each (i, kind) in ``bad``."""
    broken = dict(bad)
    out = []
    for index, payload in enumerate(GOOD):
        kind = broken.get(index)
        out.append(message(NOT_CBOR if kind == "cbor" else NOT_A_RECORD if kind == "record" else payload,
                           bad_signature=kind == "signature"))
    return out


@pytest.mark.parametrize(("bad", "expected"), [
    ((), None),
    (((6, "signature"), (1, "cbor")), ("signature", 6)),  # a later bad signature outranks an earlier payload
    (((6, "signature"), (2, "record")), ("signature", 6)),
    (((6, "signature"), (1, "signature")), ("signature", 1)),
    (((5, "cbor"), (7, "signature")), ("signature", 7)),
    (((5, "cbor"),), ("payload", 5)),
    (((5, "record"), (6, "cbor")), ("payload", 5)),
    (((6, "record"), (5, "cbor")), ("payload", 5)),
    (((2, "cbor"), (5, "record")), ("payload", 2)),
    (((0, "record"),), ("payload", 0)),
    (((7, "record"),), ("payload", 7)),
], ids=repr)
@pytest.mark.parametrize("helpers", [1, 2, 3, 9])
def test_shared_checks_answer_as_a_serial_pass(bad: tuple[tuple[int, str], ...], expected: tuple[str, int] | None,
                                               helpers: int) -> None:
    messages = chain(*bad)
    serial = outcome(messages, 0)
    shared = outcome(messages, helpers)
    assert shared == serial
    if expected is None:
        assert [r.id for r in shared] == [minimal_record(run=n).id for n in range(8)]  # type: ignore[union-attr]
    else:
        assert isinstance(shared, tuple) and shared[1:3] == expected


def test_a_helper_that_dies_has_its_share_opened_here() -> None:
    parent = os.getpid()

    def dies_in_helpers(index: int, msg: cose.Sign1) -> None:
        if os.getpid() != parent:
            os._exit(3)
        check(index, msg)

    messages = chain((6, "signature"))
    with pytest.raises(VerificationError) as info:
        opening.open_records(messages, dies_in_helpers, parse, helpers=1)
    assert (info.value.check, info.value.record) == ("signature", 6)
    records = opening.open_records(chain(), dies_in_helpers, parse, helpers=3)
    assert len(records) == 8


def test_helpers_are_only_forked_for_long_chains() -> None:
    assert opening.helpers_for(opening.MIN_SHARE - 1) == 0
    assert opening.helpers_for(100 * opening.MIN_SHARE) == available_cpus() - 1


def verdict(directory: Path, helpers: int) -> object:
    """What verify_chain answered, with the checks it reported passed before that."""
    passed: list[tuple[int, str, str]] = []
    try:
        report = verify_chain(directory, load_trust([ASSETS / "keys" / "trusted.pub"]),
                              log=lambda *line: passed.append(line), helpers=helpers)
    except AslError as exc:
        return passed, (type(exc).__name__, str(exc), getattr(exc, "check", None), getattr(exc, "record", None))
    return passed, (report.records, report.kids, report.head_seq, report.head_digest)


@pytest.mark.parametrize("name", CASES)
def test_every_asset_chain_gets_the_same_verdict_shared(name: str) -> None:
    directory = ASSETS / "chains" / name
    serial = verdict(directory, 0)
    assert verdict(directory, 1) == serial
    assert verdict(directory, 4) == serial
