"""The step record (asl_capture.format.record): typed, round-tripping, and strict field by field.

Every field of FORMAT.md section 5, nested ones included, is broken here one way or more; the
parser must refuse each and name the field.
"""

from __future__ import annotations

import copy

import cbor2
import pytest

from asl_capture import dcbor
from asl_capture.errors import CborError, FormatError
from asl_capture.format import RECORD_VERSION, STATUSES, Attachment, Host, RunAs, Source, StepRecord, Vcs
from tests.unit.bodies import digest, full_body, full_record

FieldPath = tuple[str | int, ...]


@pytest.fixture(autouse=True)
def _both_parser_paths(parser_path: str) -> str:
    """Every test here runs with the interpreted and with the compiled parsers (conftest.py)."""
    return parser_path


REQUIRED = ("v", *(name for name in StepRecord.FIELDS if name not in StepRecord.OPTIONAL))


def parse(body: dcbor.Value) -> StepRecord:
    return StepRecord.from_cbor(dcbor.encode(body))


def optional_body() -> dict[str, dcbor.Value]:
    """A record with every optional field, and bytes where text is not valid UTF-8."""
    body = full_body()
    body.update({
        "parent": b"\x07" * 16, "source_date_epoch": 1_700_000_000, "error": "output snapshot failed",
        "signals": [15], "vcs": {"type": "git", "commit": "a" * 40, "tree": "b" * 40, "dirty": False},
        "sources": [{"uri": "http://deb.debian.org/x.deb", "sha256": digest("deb"), "kind": "deb",
                     "via": "http://deb.debian.org/InRelease", "name": "x", "version": "1", "size": 7}],
        "cwd": b"/non-utf8-\xff", "argv": ["tool", b"\xff"], "ephemeral_key": b"E" * 32,
        "attached": [{"path": "out/InRelease", "digest": digest("inrelease"), "size": 12}],
        "env_bytes": [[b"N\xff", None], [b"P\xfe", b"v\xff"]],
        "user": {"uid": 999, "gid": 995, "name": "asl-build"},
    })
    return body


def test_valid_record_round_trip() -> None:
    record = full_record(seq=3, prev=digest("prev"))
    encoded = record.to_cbor()
    assert StepRecord.from_cbor(encoded) == record
    assert cbor2.dumps(cbor2.loads(encoded), canonical=True) == encoded
    assert (record.chain, record.seq, record.prev, record.id, record.parent) == (
        b"C" * 16, 3, digest("prev"), (3).to_bytes(16, "big"), None)
    assert (record.inputs.manifest, record.outputs.changes, record.stderr.digest) == (
        digest("in3"), digest("changes3"), digest("stderr3"))


def test_optional_fields_typed_and_round_trip() -> None:
    body = optional_body()
    record = parse(body)
    assert record.to_value() == body
    assert record.cwd == b"/non-utf8-\xff" and record.argv == ("tool", b"\xff")
    assert record.vcs == Vcs(commit="a" * 40, tree="b" * 40, dirty=False)
    assert record.sources == (Source(uri="http://deb.debian.org/x.deb", sha256=digest("deb"), kind="deb",
                                     via="http://deb.debian.org/InRelease", name="x", version="1", size=7),)
    assert record.signals == (15,) and record.source_date_epoch == 1_700_000_000
    assert record.ephemeral_key == b"E" * 32
    assert record.attached == (Attachment(path="out/InRelease", digest=digest("inrelease"), size=12),)
    assert record.env_bytes == ((b"N\xff", None), (b"P\xfe", b"v\xff"))
    assert record.user == RunAs(uid=999, gid=995, name="asl-build")
    assert set(body) == {"v"} | set(StepRecord.FIELDS)


def test_empty_optional_arrays_are_kept() -> None:
    body = full_body()
    body.update({"sources": [], "signals": []})
    assert parse(body).to_value() == body


def test_required_fields_match_the_contract() -> None:
    contract = {"v", "chain", "seq", "prev", "id", "parent", "step", "argv", "cwd", "env", "started", "finished",
                "exit", "status", "inputs", "outputs", "stdout", "stderr", "host"}
    assert set(REQUIRED) == contract == set(full_body())
    assert full_body()["v"] == RECORD_VERSION == 1


def at(body: dcbor.Value, path: FieldPath) -> dcbor.Value:
    for part in path:
        body = body[part]  # type: ignore[index]
    return body


def mutate(path: FieldPath, value: dcbor.Value) -> dict[str, dcbor.Value]:
    body = copy.deepcopy(optional_body())
    at(body, path[:-1])[path[-1]] = value  # type: ignore[index]
    return body


def drop(path: FieldPath) -> dict[str, dcbor.Value]:
    body = copy.deepcopy(optional_body())
    del at(body, path[:-1])[path[-1]]  # type: ignore[union-attr,arg-type]
    return body


def name(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@pytest.mark.parametrize("path", [(n,) for n in REQUIRED] + [
    ("inputs", "manifest"), ("inputs", "entries"), ("inputs", "files"),
    ("outputs", "manifest"), ("outputs", "before"), ("outputs", "changes"), ("outputs", "entries"),
    ("outputs", "files"), ("outputs", "created"), ("outputs", "modified"), ("outputs", "deleted"),
    ("stdout", "digest"), ("stdout", "size"), ("stderr", "digest"), ("stderr", "size"),
    ("host", "hostname"), ("host", "kernel"), ("host", "machine"), ("host", "tool"), ("host", "python"),
    ("vcs", "type"), ("vcs", "commit"), ("vcs", "tree"), ("vcs", "dirty"),
    ("sources", 0, "uri"), ("sources", 0, "sha256"), ("sources", 0, "kind"),
], ids=name)
def test_missing_field_named(path: FieldPath) -> None:
    with pytest.raises(FormatError) as info:
        parse(drop(path))
    assert str(info.value) == f"{name(path)}: missing"
    assert info.value.field == name(path)


@pytest.mark.parametrize("path", [("extra",), ("Seq",), ("",), ("inputs", "digest"), ("outputs", "x"),
                                  ("stdout", "bytes"), ("host", "user"), ("vcs", "branch"),
                                  ("sources", 0, "url")], ids=name)
def test_unknown_field_named(path: FieldPath) -> None:
    with pytest.raises(FormatError, match="unknown field") as info:
        parse(mutate(path, 1))
    assert info.value.field == name(path)


#: (field, bad value): every field of section 5 in a shape the CDDL forbids.
WRONG: list[tuple[FieldPath, dcbor.Value]] = [
    (("v",), 2), (("v",), 0), (("v",), True), (("v",), "1"), (("v",), None),
    (("chain",), "C" * 16), (("chain",), b"C" * 15), (("chain",), b"C" * 17), (("chain",), None),
    (("seq",), -1), (("seq",), True), (("seq",), "0"), (("seq",), None), (("seq",), b"\x00"),
    (("prev",), b"p" * 31), (("prev",), b"p" * 33), (("prev",), "p" * 32), (("prev",), False),
    (("id",), b"i" * 15), (("id",), b"i" * 32), (("id",), None),
    (("parent",), b"q" * 15), (("parent",), "q" * 16), (("parent",), False),
    (("step",), b"step"), (("step",), None), (("step",), 1),
    (("status",), "OK"), (("status",), "success"), (("status",), ""), (("status",), b"ok"), (("status",), None),
    (("started",), "now"), (("started",), None), (("started",), False),
    (("finished",), "later"), (("exit",), True), (("exit",), None), (("exit",), "0"),
    (("argv",), "cmd"), (("argv",), {"0": "cmd"}), (("argv",), None),
    (("argv", 0), 1), (("argv", 1), None), (("argv", 0), ["x"]), (("argv", 0), b"valid-utf8"),
    (("cwd",), 1), (("cwd",), None), (("cwd",), ["/"]), (("cwd",), b"/valid"),
    (("env",), []), (("env",), None), (("env", "PATH"), 5), (("env", "PATH"), b"/usr/bin"),
    (("env", "API_TOKEN"), False), (("env", "NEW"), ["x"]),
    (("host",), "h"), (("host",), []), (("host",), None),
    (("host", "hostname"), 1), (("host", "kernel"), None), (("host", "machine"), b"x"), (("host", "tool"), []),
    (("host", "python"), 3),
    (("inputs",), []), (("outputs",), None), (("stdout",), b""), (("stderr",), []),
    (("inputs", "manifest"), b"m" * 31), (("inputs", "manifest"), None), (("inputs", "manifest"), "m" * 32),
    (("inputs", "entries"), -1), (("inputs", "entries"), "1"), (("inputs", "files"), None),
    (("outputs", "manifest"), b"m" * 33), (("outputs", "before"), b""), (("outputs", "changes"), 5),
    (("outputs", "entries"), True), (("outputs", "files"), -2), (("outputs", "created"), "1"),
    (("outputs", "modified"), None), (("outputs", "deleted"), b"\x00"),
    (("stdout", "digest"), b"d" * 31), (("stdout", "size"), "0"), (("stdout", "size"), True),
    (("stdout", "size"), -1), (("stderr", "digest"), None), (("stderr", "size"), None),
    (("sources",), {}), (("sources",), "uri"), (("sources", 0), "x"), (("sources", 0), None),
    (("sources", 0, "uri"), b"http://x"), (("sources", 0, "sha256"), "ab" * 32), (("sources", 0, "sha256"), b"\x00"),
    (("sources", 0, "kind"), 1), (("sources", 0, "via"), None), (("sources", 0, "name"), 1),
    (("sources", 0, "version"), b"1"), (("sources", 0, "size"), -1), (("sources", 0, "size"), "7"),
    (("source_date_epoch",), "1700000000"), (("source_date_epoch",), None), (("source_date_epoch",), True),
    (("error",), 1), (("error",), None), (("error",), ["x"]),
    (("signals",), 15), (("signals",), "TERM"), (("signals",), None), (("signals", 0), -15),
    (("signals", 0), "TERM"),
    (("ephemeral_key",), b"E" * 31), (("ephemeral_key",), "E" * 32), (("ephemeral_key",), None),
    (("vcs",), "git"), (("vcs",), []), (("vcs",), None), (("vcs", "type"), "hg"), (("vcs", "type"), None),
    (("vcs", "commit"), b"a"), (("vcs", "tree"), 1), (("vcs", "dirty"), 0), (("vcs", "dirty"), "no"),
    (("attached",), "x"), (("attached",), None), (("attached", 0), "x"), (("attached", 0, "path"), 5),
    (("attached", 0, "digest"), b"short"), (("attached", 0, "digest"), None), (("attached", 0, "size"), -1),
]


@pytest.mark.parametrize(("path", "value"), WRONG, ids=[f"{name(p)}={v!r}" for p, v in WRONG])
def test_wrong_field_refused_and_named(path: FieldPath, value: dcbor.Value) -> None:
    with pytest.raises(FormatError) as info:
        parse(mutate(path, value))
    assert info.value.field == name(path)
    assert str(info.value).startswith(f"{name(path)}: ")


@pytest.mark.parametrize(("body", "message"), [
    ({"argv": [1, None]}, "argv[0]: expected text or bytes, found uint"),
    ({"env": {"A": 5}}, "env.A: expected text or bytes, found uint"),
    ({"host": {}}, "host.hostname: missing"),
    ({"inputs": {"manifest": digest("m")}}, "inputs.entries: missing"),
    ({"sources": ["x"]}, "sources[0]: expected a map, found text"),
], ids=["argv", "env", "host", "inputs", "sources"])
def test_issue_shapes_named_exactly(body: dict[str, dcbor.Value], message: str) -> None:
    with pytest.raises(FormatError) as info:
        parse({**full_body(), **body})
    assert str(info.value) == message


@pytest.mark.parametrize("status", STATUSES)
def test_each_status_accepted(status: str) -> None:
    assert parse(mutate(("status",), status)).status == status
    assert STATUSES == ("ok", "failed", "interrupted")


def test_sizes_and_versions_are_named() -> None:
    with pytest.raises(FormatError, match=r"^chain: expected 16 bytes, found 15$"):
        parse(mutate(("chain",), b"C" * 15))
    with pytest.raises(FormatError, match=r"^stdout\.digest: expected 32 bytes, found 31$"):
        parse(mutate(("stdout", "digest"), b"d" * 31))
    with pytest.raises(FormatError, match=r"^v: version 2 is not 1$"):
        parse(mutate(("v",), 2))


def test_from_cbor_wraps_decoder_errors() -> None:
    body = full_body()
    with pytest.raises(FormatError, match="expected a map, found array"):
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


def test_parts_round_trip_alone() -> None:
    host = Host(hostname="h", kernel="k", machine="m", tool="t", python="p")
    assert Host.from_value(host.to_value()) == host
    vcs = Vcs(commit="c", tree="t", dirty=True)
    assert Vcs.from_value(vcs.to_value()) == vcs
    source = Source(uri="u", sha256=digest("s"), kind="deb")
    assert Source.from_value(source.to_value(), "sources[0]") == source
    assert source.to_value() == {"uri": "u", "sha256": digest("s"), "kind": "deb"}
