"""Tree manifests and change lists: docs/FORMAT.md section 6.

A manifest lists, sorted by the raw bytes of the path, one entry per path under its roots:
``[path, kind, mode, size, extra]`` where ``kind`` is ``f`` (file; ``extra`` = SHA-256), ``d``
(directory), ``l`` (symlink; ``extra`` = target), ``c``/``b`` (device; ``extra`` = rdev), ``p``
(fifo) or ``s`` (socket). A path or target that is not valid UTF-8 is kept as a byte string.
Building one from a directory is :func:`asl_capture.manifest.snapshot`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.errors import FormatError
from asl_capture.format import _check as c
from asl_capture.format.constants import MANIFEST_VERSION
from asl_capture.frozen import frozen

KINDS = ("f", "d", "l", "c", "b", "p", "s")
MODE_BITS = 0o7777


class Entry(NamedTuple):
    """One path of a manifest. ``extra``: digest (file), target (symlink), rdev (device) or None."""

    path: bytes
    kind: str
    mode: int
    size: int
    extra: bytes | int | None

    def to_value(self) -> list[Value]:
        """The CBOR array of this entry (paths and targets as text when valid UTF-8)."""
        extra: Value = self.extra
        if self.kind == "l" and isinstance(self.extra, bytes):
            extra = c.as_text_or_bytes(self.extra)
        return [c.as_text_or_bytes(self.path), self.kind, self.mode, self.size, extra]

    @classmethod
    def from_value(cls, value: Value, where: str) -> Entry:
        """Check one entry: its kind, permission bits, size and ``extra`` as its kind requires.

        Raises:
            FormatError: names the offending item (``entries[4][3]``).
        """
        if type(value) is list and len(value) == 5:  # the common valid shapes, without naming each item
            path, kind, mode, size, extra = value
            if type(path) is str and type(mode) is int and 0 <= mode <= MODE_BITS and type(size) is int:
                if kind == "f" and type(extra) is bytes and len(extra) == c.DIGEST_SIZE and 0 <= size < 1 << 64:
                    return cls(path.encode(), "f", mode, size, extra)
                if kind == "d" and extra is None and size == 0:
                    return cls(path.encode(), "d", mode, 0, None)
        return cls._checked(value, where)

    @classmethod
    def _checked(cls, value: Value, where: str) -> Entry:
        """:meth:`from_value` for any value, naming the item that is wrong."""
        item = c.array(value, where)
        if len(item) != 5:
            raise FormatError(where, f"expected an array of 5, found {len(item)} item(s)")
        path = c.raw_path(item[0], c.index(where, 0))
        kind = c.one_of(item[1], c.index(where, 1), KINDS)
        mode = c.uint(item[2], c.index(where, 2))
        if mode & ~MODE_BITS:
            raise FormatError(c.index(where, 2), f"mode {mode:o} has bits outside the permission bits 7777")
        size = c.uint(item[3], c.index(where, 3))
        at_extra = c.index(where, 4)
        extra: bytes | int | None
        if kind == "f":
            extra = c.digest(item[4], at_extra)
        elif kind == "l":
            extra = c.raw_path(item[4], at_extra)
            if size != len(extra):
                raise FormatError(c.index(where, 3), f"size {size} is not the target's length {len(extra)}")
        else:
            if kind in ("c", "b"):
                extra = c.uint(item[4], at_extra)
            else:
                c.null(item[4], at_extra)
                extra = None
            if size != 0:
                raise FormatError(c.index(where, 3), f"size of a {kind!r} entry must be 0, found {size}")
        return cls(path, kind, mode, size, extra)


def _entries(value: Value, where: str) -> tuple[Entry, ...]:
    """``[* entry]``, sorted by path, each path once."""
    entries: tuple[Entry, ...] = c.array_of(Entry.from_value)(value, where)
    for i in range(1, len(entries)):
        if entries[i].path <= entries[i - 1].path:
            raise FormatError(c.index(where, i), "paths not sorted by their bytes or repeated")
    return entries


_paths = c.array_of(c.raw_path)


def _exclude(value: Value, where: str) -> tuple[str, ...]:
    """``exclude``: the patterns a snapshot applied, at least one (the field is omitted when none)."""
    patterns: tuple[str, ...] = c.array_of(c.text)(value, where)
    if not patterns:
        raise FormatError(where, "expected at least one pattern (omit the field when none applied)")
    return patterns


def _string(raw: bytes) -> bytes:
    """``raw`` encoded as a CBOR text string when valid UTF-8, else as a byte string."""
    if raw.isascii():
        return dcbor.head(3, len(raw)) + raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return dcbor.head(2, len(raw)) + raw
    return dcbor.head(3, len(raw)) + raw


_KIND_TEXT = {k: dcbor.encode(k) for k in KINDS}
_DIGEST_HEAD = dcbor.head(2, 32)
_ENTRY_HEAD = dcbor.head(4, 5)
_TINY_TEXT = [dcbor.head(3, 24)[:1] + bytes([n]) for n in range(256)]  # text heads for 24 <= n < 256
_NULL = dcbor.encode(None)


def _encode_entries(entries: Sequence[Entry]) -> list[bytes]:
    """``dcbor.encode(e.to_value())`` of each entry, without building the values (tested equal)."""
    out: list[bytes] = []
    add = out.append
    head = dcbor.head
    to_bytes = int.to_bytes
    for path, kind, mode, size, extra in entries:
        n = len(path)
        if kind == "f" and 24 <= n < 256 and 256 <= mode < 65536 and 256 <= size < 65536 and path.isascii():
            # the common case, in one piece: [text(24..255), "f", uint16 mode, uint16 size, bstr(32)]
            add(b"".join((_ENTRY_HEAD, _TINY_TEXT[n], path, b"\x61f\x19", to_bytes(mode, 2, "big"), b"\x19",
                          to_bytes(size, 2, "big"), _DIGEST_HEAD, extra)))  # type: ignore[arg-type]
            continue
        add(_ENTRY_HEAD)
        add(_string(path))
        add(_KIND_TEXT[kind])
        add(head(0, mode))
        add(head(0, size))
        if isinstance(extra, bytes):
            add(_string(extra) if kind == "l" else head(2, len(extra)) + extra)
        elif extra is None:
            add(_NULL)
        else:
            add(head(0, extra))
    return out


@dataclass(frozen=True)
class Manifest(c.Struct):
    """An immutable tree manifest. ``encode()`` is deterministic; ``digest`` is its SHA-256."""

    roots: tuple[bytes, ...]
    entries: tuple[Entry, ...]
    #: The exclusion patterns the walk applied (``--exclude``, then the project's), recorded so that a
    #: reader sees what a snapshot may have left out; empty (and then not encoded) when none applied.
    exclude: tuple[str, ...] = ()
    _encoded: list[bytes] = field(default_factory=list, repr=False, compare=False)

    VERSION: ClassVar[int | None] = MANIFEST_VERSION
    FIELDS: ClassVar[Mapping[str, c.Check]] = {"roots": _paths, "entries": _entries, "exclude": _exclude}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"exclude"})

    def to_value(self) -> dict[str, Value]:
        value: dict[str, Value] = {"v": MANIFEST_VERSION, "roots": [c.as_text_or_bytes(r) for r in self.roots],
                                   "entries": [e.to_value() for e in self.entries]}
        if self.exclude:
            value["exclude"] = list(self.exclude)
        return value

    def encode(self) -> bytes:
        """``dcbor.encode(self.to_value())``, built directly (the entries dominate; tested equal)."""
        if not self._encoded:
            # keys in deterministic order: "v", "roots", "entries", "exclude" (shorter first, then bytewise)
            first = dcbor.encode({"v": MANIFEST_VERSION, "roots": [c.as_text_or_bytes(r) for r in self.roots]})
            self._encoded.append(b"".join([
                dcbor.head(5, 4 if self.exclude else 3), first[1:], dcbor.encode("entries"),
                dcbor.head(4, len(self.entries)), *_encode_entries(self.entries),
                *((dcbor.encode("exclude"), dcbor.encode(list(self.exclude))) if self.exclude else ()),
            ]))
        return self._encoded[0]

    @property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`encode`."""
        return hashlib.sha256(self.encode()).digest()

    def by_path(self) -> dict[bytes, Entry]:
        """Entries keyed by path."""
        return {e.path: e for e in self.entries}

    @property
    def files(self) -> int:
        """How many regular files the manifest lists."""
        return sum(1 for e in self.entries if e.kind == "f")

    @classmethod
    def from_cbor(cls, data: bytes) -> Manifest:
        """Decode and check an encoded manifest: every entry, sorted by path, each path once.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 manifest.
        """
        return cls.from_value(dcbor.decode(data))


@frozen
class Changes(c.Struct):
    """What differs between two manifests of the same roots."""

    created: tuple[Entry, ...]
    modified: tuple[Entry, ...]
    deleted: tuple[bytes, ...]

    VERSION: ClassVar[int | None] = MANIFEST_VERSION
    FIELDS: ClassVar[Mapping[str, c.Check]] = {"created": _entries, "modified": _entries, "deleted": _paths}

    def to_value(self) -> dict[str, Value]:
        return {
            "v": MANIFEST_VERSION,
            "created": [e.to_value() for e in self.created],
            "modified": [e.to_value() for e in self.modified],
            "deleted": [c.as_text_or_bytes(p) for p in self.deleted],
        }

    def encode(self) -> bytes:
        """Deterministic CBOR ``{"v": 1, "created": [...], "modified": [...], "deleted": [...]}``."""
        return dcbor.encode(self.to_value())

    @classmethod
    def from_cbor(cls, data: bytes) -> Changes:
        """Decode and check an encoded change list.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 change list.
        """
        return cls.from_value(dcbor.decode(data))


def diff(before: Manifest, after: Manifest) -> Changes:
    """Created, modified (any field differs) and deleted paths from ``before`` to ``after``."""
    if before.entries == after.entries:
        return Changes(created=(), modified=(), deleted=())
    old, new = before.by_path(), after.by_path()
    created = tuple(e for e in after.entries if e.path not in old)
    modified = tuple(e for e in after.entries if e.path in old and old[e.path] != e)
    deleted = tuple(e.path for e in before.entries if e.path not in new)
    return Changes(created=created, modified=modified, deleted=deleted)
