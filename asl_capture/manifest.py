"""Tree manifests: a deterministic record of files, directories and symlinks from an ``lstat`` walk.

A manifest lists, sorted by the raw bytes of the path, one entry per path under its roots:
``[path, kind, mode, size, extra]`` where ``kind`` is ``f`` (file; ``extra`` = SHA-256), ``d``
(directory), ``l`` (symlink; ``extra`` = target), ``c``/``b`` (device; ``extra`` = rdev), ``p``
(fifo) or ``s`` (socket). Symlinks are never followed and nothing outside the roots is read.
Paths are relative to the capture's base directory (``/``-separated) or absolute when a root lies
outside it; a path that is not valid UTF-8 is kept as a byte string.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from asl_capture import dcbor, gcpause
from asl_capture.errors import CborError
from asl_capture.hashing import Hasher
from asl_capture.scan import Row, Skip, scan

MANIFEST_VERSION = 1
KINDS = ("f", "d", "l", "c", "b", "p", "s")


class Entry(NamedTuple):
    """One path of a manifest. ``extra``: digest (file), target (symlink), rdev (device) or None."""

    path: bytes
    kind: str
    mode: int
    size: int
    extra: bytes | int | None

    def to_value(self) -> list[dcbor.Value]:
        """The CBOR array of this entry (paths and targets as text when valid UTF-8)."""
        extra: dcbor.Value = self.extra
        if self.kind == "l" and isinstance(self.extra, bytes):
            extra = _text_or_bytes(self.extra)
        return [_text_or_bytes(self.path), self.kind, self.mode, self.size, extra]


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


_TINY = [bytes([b]) for b in range(256)]
_KIND_TEXT = {k: bytes([0x61]) + k.encode() for k in KINDS}


def _head(major: int, n: int) -> bytes:
    """A minimal CBOR head: ``major`` is the type already shifted (0x00, 0x40, 0x60, 0x80)."""
    if n < 24:
        return _TINY[major | n]
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x10000:
        return bytes((major | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    if n < 1 << 64:
        return bytes((major | 27,)) + n.to_bytes(8, "big")
    raise CborError(f"integer {n} outside the 64-bit CBOR range")


def _string(raw: bytes) -> bytes:
    """``raw`` as a CBOR text string when valid UTF-8, else as a byte string."""
    if raw.isascii():
        return _head(0x60, len(raw)) + raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return _head(0x40, len(raw)) + raw
    return _head(0x60, len(raw)) + raw


def _encode_entries(entries: Sequence[Entry]) -> list[bytes]:
    """The deterministic CBOR of each entry's :meth:`Entry.to_value`, without building the values."""
    out: list[bytes] = []
    add = out.append
    digest_head = b"\x85"  # array of 5
    file_head = b"\x58\x20"
    to_bytes = int.to_bytes
    for path, kind, mode, size, extra in entries:
        n = len(path)
        if kind == "f" and 24 <= n < 256 and 256 <= mode < 65536 and 256 <= size < 65536 and path.isascii():
            # the common case, in one piece: [text(24..255), "f", uint16 mode, uint16 size, bstr(32)]
            add(b"".join((b"\x85\x78", _TINY[n], path, b"\x61f\x19", to_bytes(mode, 2, "big"), b"\x19",
                          to_bytes(size, 2, "big"), file_head, extra)))  # type: ignore[arg-type]
            continue
        add(digest_head)
        add(_string(path))
        add(_KIND_TEXT[kind])
        add(_head(0, mode))
        add(_head(0, size))
        if isinstance(extra, bytes):
            if kind == "l":
                add(_string(extra))
            else:
                add(_head(0x40, len(extra)) if len(extra) != 32 else file_head)
                add(extra)
        elif extra is None:
            add(b"\xf6")
        elif extra >= 0:
            add(_head(0, extra))
        else:
            add(_head(0x20, -1 - extra))
    return out


def _raw(value: dcbor.Value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise CborError("manifest path is neither text nor bytes")


@dataclass(frozen=True)
class Manifest:
    """An immutable tree manifest. ``encode()`` is deterministic; ``digest`` is its SHA-256."""

    roots: tuple[bytes, ...]
    entries: tuple[Entry, ...]
    _encoded: list[bytes] = field(default_factory=list, repr=False, compare=False)

    def encode(self) -> bytes:
        """The deterministic CBOR of ``{"v": 1, "roots": [...], "entries": [...]}``."""
        if not self._encoded:
            # Same bytes as dcbor.encode({"v", "roots", "entries": [e.to_value() ...]}), built directly:
            # keys in deterministic order (shorter first), entries through the fast path below.
            head = dcbor.encode({"v": MANIFEST_VERSION, "roots": [_text_or_bytes(r) for r in self.roots]})
            self._encoded.append(b"".join([
                bytes([0xA3]), head[1:], b"\x67entries", _head(0x80, len(self.entries)),
                *_encode_entries(self.entries),
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
        """Parse an encoded manifest.

        Raises:
            CborError: not a well-formed version-1 manifest.
        """
        value = dcbor.decode(data)
        if (not isinstance(value, dict) or set(value) != {"v", "roots", "entries"}
                or value["v"] != MANIFEST_VERSION or isinstance(value["v"], bool)):
            raise CborError("not a version-1 tree manifest")
        roots, raw_entries = value["roots"], value["entries"]
        if not isinstance(roots, list) or not isinstance(raw_entries, list):
            raise CborError("manifest roots and entries must be arrays")
        entries: list[Entry] = []
        for item in raw_entries:
            if not isinstance(item, list) or len(item) != 5:
                raise CborError("manifest entry is not an array of 5")
            path, kind, mode, size, extra = item
            if (kind not in KINDS or not isinstance(mode, int) or not isinstance(size, int)
                    or isinstance(mode, bool) or isinstance(size, bool)):
                raise CborError("manifest entry has a bad kind, mode or size")
            if kind == "l":
                extra = _raw(extra)
            if not (extra is None or isinstance(extra, bytes | int)) or isinstance(extra, bool):
                raise CborError("manifest entry has a bad extra field")
            entries.append(Entry(_raw(path), str(kind), mode, size, extra))
        return cls(roots=tuple(_raw(r) for r in roots), entries=tuple(entries))


@dataclass(frozen=True, slots=True)
class Changes:
    """What differs between two manifests of the same roots."""

    created: tuple[Entry, ...]
    modified: tuple[Entry, ...]
    deleted: tuple[bytes, ...]

    def encode(self) -> bytes:
        """Deterministic CBOR ``{"v": 1, "created": [...], "modified": [...], "deleted": [...]}``."""
        return dcbor.encode({
            "v": MANIFEST_VERSION,
            "created": [e.to_value() for e in self.created],
            "modified": [e.to_value() for e in self.modified],
            "deleted": [_text_or_bytes(p) for p in self.deleted],
        })


def diff(before: Manifest, after: Manifest) -> Changes:
    """Created, modified (any field differs) and deleted paths from ``before`` to ``after``."""
    if before.entries == after.entries:
        return Changes(created=(), modified=(), deleted=())
    old, new = before.by_path(), after.by_path()
    created = tuple(e for e in after.entries if e.path not in old)
    modified = tuple(e for e in after.entries if e.path in old and old[e.path] != e)
    deleted = tuple(e.path for e in before.entries if e.path not in new)
    return Changes(created=created, modified=modified, deleted=deleted)


def label_for(root: Path, base: Path) -> bytes:
    """How a root is named in a manifest: relative to ``base`` when inside it, else absolute."""
    absolute = os.path.abspath(root)
    base_abs = os.path.abspath(base)
    if absolute == base_abs:
        return b"."
    if absolute.startswith(base_abs.rstrip("/") + "/"):
        return os.fsencode(os.path.relpath(absolute, base_abs))
    return os.fsencode(absolute)


@dataclass(frozen=True, slots=True)
class Excluder:
    """Which paths a snapshot skips, each with its subtree: those a glob pattern matches (by label
    or name) and the ``absolute`` paths. The walk (``scan.py``) also always skips ``.git``."""

    patterns: tuple[str, ...] = ()
    absolute: frozenset[bytes] = frozenset()

    def matches(self, abs_path: bytes, label: bytes, name: bytes) -> bool:
        """True when a glob pattern matches the path's label or name."""
        if not self.patterns:
            return False
        text_label, text_name = os.fsdecode(label), os.fsdecode(name)
        return any(fnmatch.fnmatchcase(text_label, p) or fnmatch.fnmatchcase(text_name, p) for p in self.patterns)


def snapshot(
    roots: Sequence[Path],
    *,
    base: Path | None = None,
    excluder: Excluder | None = None,
    hasher: Hasher | None = None,
    progress: Callable[[int], None] | None = None,
    missing_ok: bool = False,
) -> Manifest:
    """Walk ``roots`` with ``lstat`` and return their manifest, hashing regular files.

    With ``missing_ok``, a root that does not exist contributes no entries (an output not made yet).

    Raises:
        SnapshotError: a root or path cannot be read, or a file changed while being hashed.
    """
    with gcpause.paused():
        return _snapshot(roots, base if base is not None else Path.cwd(),
                         excluder if excluder is not None else Excluder(),
                         hasher if hasher is not None else Hasher(), progress, missing_ok)


def _snapshot(roots: Sequence[Path], base: Path, excluder: Excluder, hasher: Hasher,
              progress: Callable[[int], None] | None, missing_ok: bool) -> Manifest:
    labels: list[bytes] = []
    pairs: list[tuple[bytes, bytes]] = []
    for root in roots:
        label = label_for(root, base)
        labels.append(label)
        if missing_ok and not os.path.lexists(root):
            continue
        pairs.append((os.fsencode(os.path.abspath(root)), label))
    skip = Skip(excluder.absolute, excluder.matches if excluder.patterns else None)
    rows, misses = scan(pairs, skip=skip, cache=hasher.cache, workers=hasher.workers)
    if misses:
        known = sum(1 for row in rows if row[1] == "f") if progress is not None else 0
        digests = hasher.hash_files([(abs_path, identity) for _label, abs_path, identity in misses],
                                    progress=progress, done=known)
        rows.extend((label, "f", identity[5] & 0o7777, identity[2], digest)
                    for (label, _abs_path, identity), digest in zip(misses, digests, strict=True))
    if len(pairs) > 1:  # roots may overlap: one row per label
        rows = list({row[0]: row for row in rows}.values())
    rows.sort(key=_LABEL)
    return Manifest(roots=tuple(sorted(set(labels))), entries=tuple(map(_AS_ENTRY, rows)))


_LABEL = operator.itemgetter(0)
#: A row as an :class:`Entry` without the per-call overhead of ``Entry._make`` (same object).
_AS_ENTRY: Callable[[Row], Entry] = functools.partial(tuple.__new__, Entry)
