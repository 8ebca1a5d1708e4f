"""The stat cache: path -> SHA-256, trusted only while the file's identity is unchanged.

A record keeps the identity a file was hashed at (device, inode, size, mtime_ns, ctime_ns, mode)
and its digest. A walker serves the digest only when the file's ``lstat`` has exactly that
identity, so a file that was rewritten, replaced or re-permissioned is read again.

Git's "racily clean" rule is applied when a digest is stored: a file whose mtime or ctime is not
older than the moment hashing began by more than :data:`RACY_NS` could still change within the
same timestamp without changing its identity, so its digest is not kept at all. The cache never
yields a stale digest; it is persisted in the provenance directory as an optimisation only.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from asl_capture import safeio

#: A digest is kept only when the file's mtime and ctime precede its hashing by this much.
RACY_NS = 2_000_000_000
_CACHE_MAGIC = b"ASLSTAT4"
#: The identity a cache record is valid for: dev, ino, size, mtime_ns, ctime_ns, mode.
IDENT = struct.Struct("<QQQqqI")
#: Bytes in one record (see :data:`CacheRecord`).
_RECORD = IDENT.size + 32
_COUNT = struct.Struct("<Q")
#: A cache file larger than this is not read (a hostile or runaway file); the cache starts empty.
MAX_FILE_SIZE = 4 << 30

#: A cache record: :data:`IDENT` packed, then the digest (bytes, so loading and saving are slices).
CacheRecord = bytes
#: What a file's ``lstat`` says about its identity: (dev, ino, size, mtime_ns, ctime_ns, mode).
Ident = tuple[int, int, int, int, int, int]


def ident(st: os.stat_result) -> Ident:
    """The identity fields of a stat result, as a plain (marshal-able) tuple."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class StatCache:
    """Path -> digest cache keyed on stat identity; persisted in the provenance directory.

    Loading a missing or corrupt file gives an empty cache: the cache is only an optimisation.
    Saving writes a new file and renames it into place, so concurrent captures never see a torn
    cache; the last writer wins, which loses entries but never correctness (every entry carries
    the identity it is valid for).
    """

    def __init__(self, entries: dict[bytes, CacheRecord] | None = None) -> None:
        self._entries: dict[bytes, CacheRecord] = entries if entries is not None else {}
        self.hits = 0
        self.misses = 0
        self.dirty = False

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, path: bytes, st: os.stat_result) -> bytes | None:
        """The cached digest of ``path`` if ``st`` proves it unchanged since a non-racy hash."""
        digest = cached_digest(self._entries.get(path), st)
        if digest is None:
            self.misses += 1
        else:
            self.hits += 1
        return digest

    def store(self, path: bytes, st: os.stat_result, digest: bytes, hashed_at: int) -> None:
        """Remember the digest of ``path`` whose stat was ``st`` when hashing began at ``hashed_at`` (ns)."""
        self.store_ident(path, ident(st), digest, hashed_at)

    def store_ident(self, path: bytes, identity: Ident, digest: bytes, hashed_at: int) -> None:
        """As :meth:`store`, from an :data:`Ident`. The racy rule is applied here: a file whose mtime
        or ctime is not older than ``hashed_at`` by :data:`RACY_NS` could change again within the
        same timestamp, so its digest is not kept (and an older entry for the path is dropped)."""
        if max(identity[3], identity[4]) + RACY_NS < hashed_at:
            self._entries[path] = IDENT.pack(*identity) + digest
        else:
            self._entries.pop(path, None)
        self.dirty = True

    @property
    def table(self) -> dict[bytes, CacheRecord]:
        """The records, for a walker that inlines :func:`cached_digest`; do not modify."""
        return self._entries

    @classmethod
    def load(cls, path: Path) -> StatCache:
        """Read a cache file; an absent, unreadable, truncated or corrupt one yields an empty cache."""
        try:
            data = safeio.read_regular(path, limit=MAX_FILE_SIZE, what="stat cache")
        except OSError:
            return cls()
        head = len(_CACHE_MAGIC) + _COUNT.size
        if len(data) < head + 32 or not data.startswith(_CACHE_MAGIC):
            return cls()
        if hashlib.sha256(memoryview(data)[:-32]).digest() != data[-32:]:
            return cls()
        (count,) = _COUNT.unpack_from(data, len(_CACHE_MAGIC))
        table_end = head + count * _RECORD
        if table_end > len(data) - 32:
            return cls()
        names = data[table_end:-32].split(b"\0") if count else []
        if len(names) != count:
            return cls()
        records = [data[o : o + _RECORD] for o in range(head, table_end, _RECORD)]
        return cls(dict(zip(names, records, strict=True)))

    def save(self, path: Path) -> None:
        """Write the cache atomically (temporary file, rename) if it changed. Errors are ignored."""
        if not self.dirty:
            return
        body = b"".join([_CACHE_MAGIC, _COUNT.pack(len(self._entries)), *self._entries.values(),
                         b"\0".join(self._entries)])
        try:
            safeio.replace_atomically(path, body + hashlib.sha256(body).digest(), durable=False)
        except OSError:
            pass  # an optimisation only: the temporary file is gone, the old cache still holds
        else:
            self.dirty = False


def cached_digest(record: CacheRecord | None, st: os.stat_result) -> bytes | None:
    """The digest in ``record`` if the file's ``lstat`` ``st`` still has the identity it was hashed at."""
    if record is not None and record.startswith(
            IDENT.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)):
        return record[IDENT.size :]
    return None
