"""Deterministic CBOR: round trips, byte equality with cbor2's canonical encoder, strict rejection."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asl_capture import dcbor
from asl_capture.dcbor import MAX_DEPTH, Tag
from asl_capture.errors import AslError, CborError, TruncatedCbor

ALL_TEST_TAGS = frozenset({0, 1, 18, 24, 55799, 1000, 2**32, 2**64 - 1})

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40) | st.text(max_size=40)
)


def _containers(children: st.SearchStrategy[dcbor.Value]) -> st.SearchStrategy[dcbor.Value]:
    return (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=30), children, max_size=6)
        | st.builds(Tag, st.sampled_from(sorted(ALL_TEST_TAGS)), children)
    )


values: st.SearchStrategy[dcbor.Value] = st.recursive(scalars, _containers, max_leaves=25)
untagged: st.SearchStrategy[dcbor.Value] = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=30), c, max_size=6),
    max_leaves=25,
)


def to_cbor2(value: dcbor.Value) -> Any:
    """The same value in cbor2's data model."""
    if isinstance(value, Tag):
        return cbor2.CBORTag(value.tag, to_cbor2(value.value))
    if isinstance(value, list):
        return [to_cbor2(v) for v in value]
    if isinstance(value, dict):
        return {k: to_cbor2(v) for k, v in value.items()}
    return value


def same(a: dcbor.Value, b: dcbor.Value) -> bool:
    """Equality that also tells bool from int (``True == 1`` in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Tag):
        assert isinstance(b, Tag)
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


# ----------------------------------------------------------------------------------------------------
# Known encodings (RFC 8949 appendix A) and round trips


@pytest.mark.parametrize(("value", "hex_"), [
    (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65535, "19ffff"),
    (65536, "1a00010000"), (2**32 - 1, "1affffffff"), (2**32, "1b0000000100000000"),
    (2**64 - 1, "1bffffffffffffffff"), (-1, "20"), (-24, "37"), (-25, "3818"), (-(2**64), "3bffffffffffffffff"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"), ("", "60"), ("a", "6161"), ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"), ([], "80"), ([1, [2, 3], [4, 5]], "8301820203820405"), ({}, "a0"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"), (False, "f4"), (True, "f5"), (None, "f6"),
    (Tag(18, [b"", {}, b"", b""]), "d28440a04040"),
])
def test_known_encodings(value: dcbor.Value, hex_: str) -> None:
    assert dcbor.encode(value).hex() == hex_
    assert same(dcbor.decode(bytes.fromhex(hex_), tags=ALL_TEST_TAGS), value)


def test_map_keys_sorted_length_first_then_bytewise() -> None:
    encoded = dcbor.encode({"bb": 1, "a": 2, "ab": 3, "b": 4, "": 5})
    assert encoded == bytes.fromhex("a5" "6005" "616102" "616204" "62616203" "62626201")
    assert list(dcbor.decode(encoded)) == ["", "a", "b", "ab", "bb"]  # type: ignore[arg-type]


def test_encoder_accepts_tuple_bytearray_memoryview() -> None:
    assert dcbor.encode((1, 2)) == bytes.fromhex("820102")  # type: ignore[arg-type]
    assert dcbor.encode(bytearray(b"ab")) == dcbor.encode(memoryview(b"ab")) == bytes.fromhex("426162")  # type: ignore[arg-type]


@given(values)
@settings(max_examples=300, deadline=None, database=None)
def test_round_trip(value: dcbor.Value) -> None:
    encoded = dcbor.encode(value)
    decoded = dcbor.decode(encoded, tags=ALL_TEST_TAGS)
    assert same(decoded, value)
    assert dcbor.encode(decoded) == encoded
    assert dcbor.decode_item(encoded + b"\x00", 0, tags=ALL_TEST_TAGS)[1] == len(encoded)


@given(values)
@settings(max_examples=300, deadline=None, database=None)
def test_byte_equal_to_cbor2_canonical(value: dcbor.Value) -> None:
    """Text-key maps only: cbor2's length-first canonical order then equals RFC 8949 4.2.1 order."""
    assert dcbor.encode(value) == cbor2.dumps(to_cbor2(value), canonical=True)


@given(untagged)
@settings(max_examples=200, deadline=None, database=None)
def test_cbor2_reads_back_what_we_write(value: dcbor.Value) -> None:
    assert cbor2.loads(dcbor.encode(value)) == to_cbor2(value)


@given(values)
@settings(max_examples=150, deadline=None, database=None)
def test_every_proper_prefix_is_truncated(value: dcbor.Value) -> None:
    encoded = dcbor.encode(value)
    for cut in range(len(encoded)):
        with pytest.raises(TruncatedCbor) as info:
            dcbor.decode(encoded[:cut], tags=ALL_TEST_TAGS)
        assert info.value.offset is not None and 0 <= info.value.offset <= cut


def test_every_proper_prefix_of_a_rich_item_is_truncated() -> None:
    rich: dcbor.Value = Tag(18, [
        {"a": 2**64 - 1, "bb": -(2**64), "text": "x" * 300, "bytes": b"\x00" * 70000, "n": None},
        [True, False, [[[]]], {"k": {"l": b""}}], 24, 256, 65536, 2**32,
    ])
    encoded = dcbor.encode(rich)
    cuts = [*range(0, 400), *range(len(encoded) - 400, len(encoded))]
    for cut in cuts:
        with pytest.raises(TruncatedCbor):
            dcbor.decode(encoded[:cut], tags=frozenset({18}))
    assert same(dcbor.decode(encoded, tags=frozenset({18})), rich)


# ----------------------------------------------------------------------------------------------------
# Rejection: each case with the offset it must name


def reject(hex_: str, offset: int, *, tags: frozenset[int] = frozenset(), match: str = "") -> CborError:
    with pytest.raises(CborError, match=match) as info:
        dcbor.decode(bytes.fromhex(hex_), tags=tags)
    assert info.value.offset == offset
    assert f"at byte {offset}" in str(info.value)
    return info.value


@pytest.mark.parametrize(("hex_", "offset"), [
    ("f93c00", 0), ("fa3f800000", 0), ("fb3ff0000000000000", 0), ("8201f93c00", 2), ("a16161f90000", 3),
])
def test_rejects_floats(hex_: str, offset: int) -> None:
    error = reject(hex_, offset, match="floating-point")
    assert not isinstance(error, TruncatedCbor)


@pytest.mark.parametrize(("hex_", "offset"), [
    ("9f01ff", 0), ("5f4101ff", 0), ("7f6161ff", 0), ("bf616101ff", 0), ("1f", 0), ("8201" "9fff", 2),
])
def test_rejects_indefinite_lengths(hex_: str, offset: int) -> None:
    reject(hex_, offset, match="indefinite")


@pytest.mark.parametrize(("hex_", "offset"), [
    ("1817", 0), ("190017", 0), ("1900ff", 0), ("1a0000ffff", 0), ("1b00000000ffffffff", 0),
    ("3800", 0), ("3900ff", 0), ("5801ff", 0), ("780161", 0), ("980101", 0), ("b8016161f6", 0),
    ("d81200", 0), ("820119000a", 2),
])
def test_rejects_non_minimal_heads(hex_: str, offset: int) -> None:
    reject(hex_, offset, tags=frozenset({18}), match="shortest form")


@pytest.mark.parametrize(("hex_", "value"), [
    ("1818", 24), ("190100", 256), ("1a00010000", 65536), ("1b0000000100000000", 2**32), ("3818", -25),
    ("d81800", Tag(24, 0)),
])
def test_accepts_minimal_boundaries(hex_: str, value: dcbor.Value) -> None:
    assert dcbor.decode(bytes.fromhex(hex_), tags=frozenset({24})) == value
    zero_wide = bytes.fromhex(hex_[:2] + "00" * (len(hex_) // 2 - 1))  # same width, value 0: not minimal
    with pytest.raises(CborError, match="shortest form"):
        dcbor.decode(zero_wide, tags=frozenset({0}))


def test_rejects_reserved_additional_information() -> None:
    for first in ("1c", "1d", "1e", "5c", "9c", "bc", "dc"):
        reject(first, 0, match="reserved")


def test_rejects_unsorted_keys() -> None:
    reject("a2616201616102", 4, match="order")  # {"b", "a"}
    reject("a262616101616202", 5, match="order")  # {"aa", "b"}: shorter key must come first
    unsorted = cbor2.dumps({"zz": 1, "a": 2})  # insertion order, not canonical
    with pytest.raises(CborError, match="order"):
        dcbor.decode(unsorted)


def test_rejects_duplicate_keys() -> None:
    reject("a2616101616102", 4, match="duplicated")
    reject("a3616101616202616202", 7, match="duplicated")


@pytest.mark.parametrize(("hex_", "offset"), [
    ("a10102", 1), ("a1416101", 1), ("a1f6f6", 1), ("a18001", 1), ("a16161a1200f", 4), ("a120f5", 1),
])
def test_rejects_non_text_keys(hex_: str, offset: int) -> None:
    reject(hex_, offset, match="not a text string")


@pytest.mark.parametrize(("hex_", "offset"), [
    ("62c328", 0), ("63eda080", 0), ("62c0af", 0), ("61ff", 0), ("8263616263" "61fe", 5), ("a161ff01", 1),
])
def test_rejects_invalid_utf8(hex_: str, offset: int) -> None:
    reject(hex_, offset, match="UTF-8")


@pytest.mark.parametrize(("hex_", "offset"), [
    ("f7", 0), ("e0", 0), ("f0", 0), ("f3", 0), ("f820", 0), ("f8ff", 0), ("ff", 0), ("8201f7", 2),
])
def test_rejects_undefined_and_simple_values(hex_: str, offset: int) -> None:
    reject(hex_, offset, match="simple value")


def test_rejects_disallowed_tags() -> None:
    reject("c074323031332d30332d32315432303a30343a30305a", 0, match="tag 0")
    reject("d28440a04040", 0, match="tag 18")  # tags must be allowed explicitly
    reject("d28440a04040", 0, tags=frozenset({24}), match="tag 18")
    reject("8201d818f6", 2, tags=frozenset({18}), match="tag 24")
    reject("d2d81801", 1, tags=frozenset({18}), match="tag 24")  # nested tags are checked too
    assert dcbor.decode(bytes.fromhex("d2d81801"), tags=frozenset({18, 24})) == Tag(18, Tag(24, 1))


def test_rejects_trailing_bytes() -> None:
    error = reject("0102", 1, match="1 trailing byte")
    assert not isinstance(error, TruncatedCbor)
    reject("a0" "000000", 1, match="3 trailing byte")
    value, end = dcbor.decode_item(bytes.fromhex("0102"), 0)
    assert (value, end) == (1, 1)
    assert dcbor.decode_item(bytes.fromhex("0102"), 1) == (2, 2)


def test_nesting_limit() -> None:
    deepest: dcbor.Value = 0
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    assert dcbor.decode(dcbor.encode(deepest)) == deepest
    too_deep: dcbor.Value = [deepest]
    with pytest.raises(CborError, match="too deeply"):
        dcbor.encode(too_deep)
    raw = b"\x81" * (MAX_DEPTH + 1) + b"\x00"
    error = reject(raw.hex(), MAX_DEPTH + 1, match="nesting")
    assert not isinstance(error, TruncatedCbor)
    maps = b"\xa1\x61a" * (MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(CborError, match="nesting"):
        dcbor.decode(maps)


def test_enormous_nesting_is_a_cbor_error_not_recursion() -> None:
    for opener in (b"\x81", b"\xd2", b"\xa1\x61a"):
        with pytest.raises(CborError) as info:
            dcbor.decode(opener * 200_000 + b"\x00", tags=frozenset({18}))
        assert not isinstance(info.value, TruncatedCbor)


def test_huge_declared_lengths_are_truncation_not_memory() -> None:
    for hex_ in ("5bffffffffffffffff", "7bffffffffffffffff", "9bffffffffffffffff", "bbffffffffffffffff",
                 "9a000f4240" "00", "ba000f4240" "616100"):
        with pytest.raises(TruncatedCbor) as info:
            dcbor.decode(bytes.fromhex(hex_))
        assert info.value.offset == 0


def test_offsets_are_absolute_in_decode_item() -> None:
    data = bytes.fromhex("00" "01" "f93c00")
    with pytest.raises(CborError) as info:
        dcbor.decode_item(data, 2)
    assert info.value.offset == 2
    with pytest.raises(TruncatedCbor) as info2:
        dcbor.decode_item(bytes.fromhex("0043aabb"), 1)
    assert info2.value.offset == 1


@pytest.mark.parametrize("value", [
    1.0, float("nan"), {1: 2}, {b"k": 1}, {("a",): 1}, 2**64, -(2**64) - 1, "\ud800", {"\udfff": 1}, {1, 2},
    object(), Tag(-1, 0), Tag(2**64, 0), [1.5],
])
def test_encoder_rejects_values_outside_the_model(value: Any) -> None:
    with pytest.raises(CborError):
        dcbor.encode(value)


def test_errors_are_asl_errors() -> None:
    assert issubclass(TruncatedCbor, CborError)
    assert issubclass(CborError, AslError)
    with pytest.raises(AslError):
        dcbor.decode(b"")


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_decode_or_raise_cbor_error_and_accepted_bytes_are_canonical(data: bytes) -> None:
    try:
        value = dcbor.decode(data, tags=ALL_TEST_TAGS)
    except CborError:
        return
    assert dcbor.encode(value) == data


def _both_ways(data: bytes) -> tuple[object, object]:
    """What the decoder gives with its array fast path and without: a value, or (error type, message)."""
    out: list[object] = []
    for inline in (True, False):
        try:
            value, end = dcbor._decoder(data, ALL_TEST_TAGS, inline=inline)(0, 0)
            out.append((value, end))
        except CborError as exc:
            out.append((type(exc).__name__, str(exc)))
        except RecursionError:
            out.append("recursion")
    return out[0], out[1]


@given(values, st.data())
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_array_fast_path_decodes_and_fails_as_the_general_path(value: dcbor.Value, data: st.DataObject) -> None:
    """Valid encodings, and each one with a byte changed, cut short or extended: same answer both ways."""
    encoded = dcbor.encode([value, value] if not isinstance(value, list) else value)
    fast, general = _both_ways(encoded)
    assert fast == general
    at = data.draw(st.integers(0, len(encoded) - 1))
    byte = data.draw(st.integers(0, 255))
    for mutated in (encoded[:at] + bytes([byte]) + encoded[at + 1:], encoded[:at], encoded + bytes([byte])):
        fast, general = _both_ways(mutated)
        assert fast == general, mutated.hex()


@pytest.mark.parametrize("hex_", [
    "83 17 18 18 19 0100",                   # 23, 24, 256: the shortest forms
    "82 18 17 19 00ff",                      # 8 and 16-bit heads not in their shortest form
    "82 78 17 " + "61" * 23 + " 58 01 00",   # a 1-byte length below 24
    "81 78 18 " + "61" * 23,                 # a string cut short
    "81 62 c3 28",                           # not UTF-8
    "83 f6 58 18 " + "00" * 24 + " 40",      # null, 24 bytes, empty bytes
    "82 19 01",                              # a 16-bit head cut short
])
def test_array_fast_path_edges(hex_: str) -> None:
    fast, general = _both_ways(bytes.fromhex(hex_.replace(" ", "")))
    assert fast == general
