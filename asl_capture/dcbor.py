"""Deterministic CBOR (RFC 8949 section 4.2.1) for the record contract, encoder and strict decoder.

The data model is deliberately small: unsigned and negative integers, byte strings, UTF-8 text
strings, arrays, maps whose keys are all text strings, ``false``/``true``/``null`` and tags
(:class:`Tag`). Floats, undefined, other simple values, indefinite lengths, non-minimal heads,
unsorted or duplicate map keys are rejected by the decoder, so every accepted value has exactly
one encoding. The decoder is written here, not taken from ``cbor2``, so that hostile bytes can
only ever raise :class:`~asl_capture.errors.CborError` and so that encoding does not depend on the
``cbor2`` release installed (Debian 12 ships 5.4, PyPI 6.x, and they differ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

from asl_capture.errors import CborError, TruncatedCbor
from asl_capture.frozen import frozen

#: Values this module encodes and decodes.
Value = Union[int, bytes, str, bool, None, list["Value"], dict[str, "Value"], "Tag"]

MAX_DEPTH = 64
_U64 = 1 << 64


@frozen
class Tag:
    """A CBOR tag (major type 6) around a value."""

    tag: int
    value: Value


_TINY = [bytes([b]) for b in range(256)]


def head(major: int, arg: int) -> bytes:
    """The shortest head of major type ``major`` (0-7) with argument ``arg`` (a value, length or tag).

    Raises:
        CborError: ``arg`` does not fit in 64 bits.
    """
    mt = major << 5
    if arg < 24:
        return _TINY[mt | arg]
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return bytes((mt | 25,)) + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return bytes((mt | 26,)) + arg.to_bytes(4, "big")
    if arg < _U64:
        return bytes((mt | 27,)) + arg.to_bytes(8, "big")
    raise CborError(f"integer {arg} outside the 64-bit CBOR range")


def _enc(value: Value, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CborError("value nested too deeply to encode")
    # bool before int: bool is a subclass of int.
    if value is False:
        out.append(0xF4)
    elif value is True:
        out.append(0xF5)
    elif value is None:
        out.append(0xF6)
    elif isinstance(value, int):
        out += head(0, value) if value >= 0 else head(1, -1 - value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out += head(2, len(raw))
        out += raw
    elif isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise CborError("text is not encodable as UTF-8") from None
        out += head(3, len(raw))
        out += raw
    elif isinstance(value, list | tuple):
        out += head(4, len(value))
        for item in value:
            _enc(item, out, depth + 1)
    elif isinstance(value, dict):
        items: list[tuple[bytes, Value]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise CborError(f"map key {key!r} is not a text string")
            try:
                raw_key = key.encode("utf-8")
            except UnicodeEncodeError:
                raise CborError("map key is not encodable as UTF-8") from None
            items.append((raw_key, item))
        # RFC 8949 4.2.1: bytewise order of the encoded keys; for text keys, that is
        # shorter first, then bytewise.
        items.sort(key=lambda kv: (len(kv[0]), kv[0]))
        out += head(5, len(items))
        for raw_key, item in items:
            out += head(3, len(raw_key))
            out += raw_key
            _enc(item, out, depth + 1)
    elif isinstance(value, Tag):
        if value.tag < 0:
            raise CborError(f"tag {value.tag} is negative")
        out += head(6, value.tag)
        _enc(value.value, out, depth + 1)
    else:
        raise CborError(f"cannot encode a {type(value).__name__} in deterministic CBOR")


def encode(value: Value) -> bytes:
    """Return the one deterministic encoding of ``value``.

    Raises:
        CborError: the value is outside the data model (float, non-text map key, ...).
    """
    out = bytearray()
    _enc(value, out, 0)
    return bytes(out)


def _arg(data: bytes, pos: int, info: int, start: int) -> tuple[int, int]:
    """Read the argument of a head whose first byte is at ``start``; return (arg, next pos)."""
    if info < 24:
        return info, pos
    if info > 27:
        if info == 31:
            raise CborError("indefinite length is not deterministic CBOR", offset=start)
        raise CborError(f"reserved additional information {info}", offset=start)
    size = 1 << (info - 24)
    end = pos + size
    if end > len(data):
        raise TruncatedCbor("input ends inside an item head", offset=start)
    arg = int.from_bytes(data[pos:end], "big")
    minimum = 24 if size == 1 else 1 << (4 * size)  # smallest value that needs this width
    if arg < minimum:
        raise CborError("integer or length not in its shortest form", offset=start)
    return arg, end


def _decoder(data: bytes, tags: frozenset[int], *, inline: bool = True) -> Callable[[int, int], tuple[Value, int]]:
    """A decoding function bound to ``data`` (closures keep the hot path free of attribute look-ups).

    With ``inline``, an array's commonest items (what a tree manifest is made of: small and 8- or
    16-bit unsigned integers, text and byte strings shorter than 256 bytes, null) are read in its
    loop rather than by a call each; anything else, and any item that is not exactly right
    (truncated, not in its shortest form, not UTF-8), goes through the general path, which raises.
    The two paths give the same values and the same errors (a test decodes both ways).
    """
    size = len(data)

    def dec(pos: int, depth: int) -> tuple[Value, int]:
        if pos >= size:
            raise TruncatedCbor("input ends where an item should start", offset=pos)
        start = pos
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if major == 7:
            if info == 20:
                return False, pos
            if info == 21:
                return True, pos
            if info == 22:
                return None, pos
            if info in (25, 26, 27):
                raise CborError("floating-point values are not allowed", offset=start)
            raise CborError(f"simple value {info} is not allowed", offset=start)
        if info < 24:
            arg = info
        else:
            arg, pos = _arg(data, pos, info, start)
        if major == 0:
            return arg, pos
        if major in (2, 3):
            end = pos + arg
            if end > size:
                raise TruncatedCbor("input ends inside a string", offset=start)
            if major == 2:
                return data[pos:end], end
            try:
                return data[pos:end].decode("utf-8"), end
            except UnicodeDecodeError:
                raise CborError("text string is not valid UTF-8", offset=start) from None
        if major == 1:
            return -1 - arg, pos
        if depth >= MAX_DEPTH and (arg or major == 6):  # its first child would be too deep
            raise CborError("nesting deeper than the limit", offset=pos)
        if major == 4:
            if arg > size - pos:  # every item takes at least one byte
                raise TruncatedCbor("array longer than the remaining input", offset=start)
            items: list[Value] = []
            append = items.append
            for _ in range(arg):
                b = data[pos] if inline and pos < size else 0xFF  # 0xFF: the general path
                if b < 0x18:  # uint 0..23
                    append(b)
                    pos += 1
                    continue
                if 0x40 <= b <= 0x58 or 0x60 <= b <= 0x78:  # a byte or text string, length < 256
                    first, n = pos + 1, b & 0x1F
                    if n == 24:
                        n = data[first] if first < size else 0
                        first += 1
                        n = n if n >= 24 else -1  # not the shortest form: the general path
                    end = first + n
                    if n >= 0 and end <= size:
                        if b < 0x60:
                            append(data[first:end])
                            pos = end
                            continue
                        try:
                            append(data[first:end].decode("utf-8"))
                            pos = end
                            continue
                        except UnicodeDecodeError:
                            pass
                elif b in (0x18, 0x19):  # uint of 8 or 16 bits
                    end = pos + (2 if b == 0x18 else 3)
                    if end <= size:
                        value = int.from_bytes(data[pos + 1:end], "big")
                        if value >= (24 if b == 0x18 else 0x100):
                            append(value)
                            pos = end
                            continue
                elif b == 0xF6:
                    append(None)
                    pos += 1
                    continue
                item, pos = dec(pos, depth + 1)
                append(item)
            return items, pos
        if major == 5:
            if 2 * arg > size - pos:
                raise TruncatedCbor("map longer than the remaining input", offset=start)
            result: dict[str, Value] = {}
            previous = b""
            for _ in range(arg):
                key_start = pos
                if pos < size and data[pos] >> 5 != 3:
                    raise CborError("map key is not a text string", offset=pos)
                key, pos = dec(pos, depth + 1)
                # RFC 8949 4.2.1: keys sorted by their encoded bytes, no duplicates
                encoded_key = data[key_start:pos]
                if encoded_key <= previous:
                    raise CborError("map keys not in deterministic order or duplicated", offset=key_start)
                previous = encoded_key
                result[key], pos = dec(pos, depth + 1)  # type: ignore[index]
            return result, pos
        # major == 6
        if arg not in tags:
            raise CborError(f"tag {arg} is not allowed here", offset=start)
        inner, pos = dec(pos, depth + 1)
        return Tag(arg, inner), pos

    return dec


def decode_item(data: bytes, offset: int = 0, *, tags: frozenset[int] = frozenset()) -> tuple[Value, int]:
    """Decode one item of a CBOR sequence starting at ``offset``; return it and its end offset.

    Raises:
        TruncatedCbor: the input ends inside the item.
        CborError: the item is not deterministic CBOR of the data model, or uses a tag not in ``tags``.
    """
    try:
        return _decoder(data, tags)(offset, 0)
    except RecursionError:
        raise CborError("nesting too deep", offset=offset) from None


def decode(data: bytes, *, tags: frozenset[int] = frozenset()) -> Value:
    """Decode bytes that must hold exactly one deterministic CBOR item.

    Raises:
        CborError: as :func:`decode_item`, or bytes follow the item.
    """
    value, end = decode_item(data, 0, tags=tags)
    if end != len(data):
        raise CborError(f"{len(data) - end} trailing byte(s) after the item", offset=end)
    return value
