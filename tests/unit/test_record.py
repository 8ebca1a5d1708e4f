"""The step record: one parse path that checks every field and wraps decoder errors."""

from __future__ import annotations

import copy

import cbor2
import pytest

from asl_capture import dcbor
from asl_capture.errors import CborError
from asl_capture.record import _OPTIONAL, _REQUIRED, STATUSES, StepRecord
from tests.unit.bodies import digest, full_body


def parse(body: dict[str, dcbor.Value]) -> StepRecord:
    return StepRecord.from_cbor(dcbor.encode(body))


def test_valid_record_round_trip() -> None:
    body = full_body(seq=3, prev=digest("prev"))
    encoded = dcbor.encode(body)
    record = StepRecord.from_cbor(encoded)
    assert record.body == body
    assert record.to_cbor() == encoded
    assert cbor2.dumps(cbor2.loads(encoded), canonical=True) == encoded
    assert (record.chain, record.seq, record.prev, record.id, record.parent) == (
        b"C" * 16, 3, digest("prev"), (3).to_bytes(16, "big"), None)
    assert (record.step, record.status, record.exit) == ("step", "ok", 0)
    assert record.started == 1_700_000_000_000_000_003 and record.finished == 1_700_000_001_000_000_003
    assert record.object_digests() == [digest("in3"), digest("out3"), digest("before3"), digest("changes3"),
                                       digest("stdout3"), digest("stderr3")]


def test_optional_fields_accepted() -> None:
    body = full_body()
    body.update({
        "parent": b"\x07" * 16, "source_date_epoch": 1_700_000_000, "error": "output snapshot failed",
        "signals": [15], "vcs": {"type": "git", "commit": "a" * 40, "tree": "b" * 40, "dirty": False},
        "sources": [{"uri": "http://deb.debian.org/x.deb", "sha256": digest("deb"), "kind": "deb"}],
        "cwd": b"/non-utf8-\xff",
    })
    body["argv"] = ["tool", b"\xff"]
    record = parse(body)
    assert record.parent == b"\x07" * 16
    assert record.body["cwd"] == b"/non-utf8-\xff"
    assert set(record.body) == _REQUIRED | _OPTIONAL


def test_required_fields_match_the_contract() -> None:
    contract = {"v", "chain", "seq", "prev", "id", "parent", "step", "argv", "cwd", "env", "started", "finished",
                "exit", "status", "inputs", "outputs", "stdout", "stderr", "host"}
    assert contract == _REQUIRED
    assert set(full_body()) == _REQUIRED


@pytest.mark.parametrize("name", sorted(_REQUIRED))
def test_missing_field(name: str) -> None:
    body = full_body()
    del body[name]
    with pytest.raises(CborError, match=f"lacks field.*{name}"):
        parse(body)


@pytest.mark.parametrize("name", ["extra", "Seq", "signature", ""])
def test_unknown_field(name: str) -> None:
    body = full_body()
    body[name] = 1
    with pytest.raises(CborError, match="unknown field"):
        parse(body)


def mutate(path: str, value: dcbor.Value) -> dict[str, dcbor.Value]:
    body = copy.deepcopy(full_body())
    target: dict[str, dcbor.Value] = body
    *parents, last = path.split(".")
    for part in parents:
        child = target[part]
        assert isinstance(child, dict)
        target = child
    target[last] = value
    return body


def drop(path: str) -> dict[str, dcbor.Value]:
    body = copy.deepcopy(full_body())
    section, name = path.split(".")
    part = body[section]
    assert isinstance(part, dict)
    del part[name]
    return body


WRONG: list[tuple[str, dcbor.Value]] = [
    ("v", 2), ("v", 0), ("v", True), ("v", "1"), ("v", None),
    ("chain", "C" * 16), ("chain", b"C" * 15), ("chain", b"C" * 17), ("chain", None),
    ("seq", -1), ("seq", True), ("seq", "0"), ("seq", None), ("seq", b"\x00"),
    ("prev", b"p" * 31), ("prev", b"p" * 33), ("prev", "p" * 32), ("prev", False),
    ("id", b"i" * 15), ("id", b"i" * 32), ("id", None),
    ("parent", b"q" * 15), ("parent", "q" * 16), ("parent", False),
    ("step", b"step"), ("step", None), ("step", 1),
    ("status", "OK"), ("status", "success"), ("status", ""), ("status", b"ok"), ("status", None),
    ("started", "now"), ("started", None), ("started", False),
    ("finished", "later"), ("exit", True), ("exit", None), ("exit", "0"),
    ("argv", "cmd"), ("argv", {"0": "cmd"}), ("argv", None),
    ("cwd", 1), ("cwd", None), ("cwd", ["/"]),
    ("env", []), ("env", None), ("host", "h"), ("host", []),
    ("inputs", []), ("outputs", None), ("stdout", b""), ("stderr", []),
    ("inputs.manifest", b"m" * 31), ("inputs.manifest", None), ("inputs.manifest", "m" * 32),
    ("outputs.manifest", b"m" * 33), ("outputs.before", b""), ("outputs.changes", 5),
    ("stdout.digest", b"d" * 31), ("stdout.size", "0"), ("stdout.size", True), ("stderr.digest", None),
    ("stderr.size", None),
    ("sources", {}), ("sources", "uri"),
    ("source_date_epoch", "1700000000"), ("source_date_epoch", None), ("source_date_epoch", True),
    ("error", 1), ("error", None), ("error", ["x"]),
    ("signals", 15), ("signals", "TERM"), ("signals", None),
    ("vcs", "git"), ("vcs", []),
]


@pytest.mark.parametrize(("path", "value"), WRONG, ids=[f"{p}={v!r}" for p, v in WRONG])
def test_wrong_type_or_value(path: str, value: dcbor.Value) -> None:
    with pytest.raises(CborError):
        parse(mutate(path, value))


@pytest.mark.parametrize("path", ["inputs.manifest", "outputs.manifest", "outputs.before", "outputs.changes",
                                  "stdout.digest", "stdout.size", "stderr.digest", "stderr.size"])
def test_missing_nested_field(path: str) -> None:
    with pytest.raises(CborError, match=f"lacks field '{path.split('.')[1]}'"):
        parse(drop(path))


@pytest.mark.parametrize("status", STATUSES)
def test_each_status_accepted(status: str) -> None:
    assert parse(mutate("status", status)).status == status
    assert STATUSES == ("ok", "failed", "interrupted")


def test_wrong_sizes_are_named() -> None:
    with pytest.raises(CborError, match="'chain' should be 16 bytes, is 15"):
        parse(mutate("chain", b"C" * 15))
    with pytest.raises(CborError, match="stdout field 'digest' should be 32 bytes, is 31"):
        parse(mutate("stdout.digest", b"d" * 31))


def test_from_cbor_wraps_decoder_errors() -> None:
    body = full_body()
    with pytest.raises(CborError, match="not a map"):
        StepRecord.from_cbor(dcbor.encode([body]))
    with pytest.raises(CborError, match="trailing"):
        StepRecord.from_cbor(dcbor.encode(body) + b"\x00")
    with pytest.raises(CborError):
        StepRecord.from_cbor(dcbor.encode(body)[:-1])
    non_canonical = cbor2.dumps(dict(reversed(list(body.items()))))
    with pytest.raises(CborError, match="order"):
        StepRecord.from_cbor(non_canonical)
    with pytest.raises(CborError):
        StepRecord.from_cbor(b"")


def test_payload_with_float_rejected() -> None:
    encoded = cbor2.dumps({**full_body(), "exit": 0.0}, canonical=True)
    with pytest.raises(CborError, match="floating-point"):
        StepRecord.from_cbor(encoded)
