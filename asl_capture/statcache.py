"""The stat cache: path -> SHA-256, trusted only while the file's identity is unchanged.

A record keeps the identity a file was hashed at (device, inode, size, mtime_ns, ctime_ns, mode)
and its digest. :func:`cached_digest`, the one hit rule, serves the digest only when the file's
``lstat`` has exactly that identity, so a file that was rewritten, replaced or re-permissioned is
read again.

Git's "racily clean" rule is applied when a digest is stored: a file whose mtime or ctime is not
older than the moment hashing began by more than :data:`RACY_NS` could still change within the
same timestamp without changing its identity, so its digest is not kept at all. The cache never
yields a stale digest; it is persisted in the provenance directory as an optimisation only.
"""

from __future__ import annotations

import hashlib
import os
import stat
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

    On disk: a base file (``statcache``) and a journal beside it (``statcache.log``). Saving
    appends only what changed since loading to the journal, as one self-checking segment; when
    the journal has grown as large as the base, the whole cache is rewritten as a new base (and
    the journal dropped). The cache holds at most :data:`MAX_ENTRIES`: beyond that, the entries
    stored longest ago are left out of the next base. Loading a missing or corrupt base gives an
    empty cache, and a journal is applied up to its first damaged segment: the cache is only an
    optimisation. Concurrent captures lose entries at worst, never correctness (every entry
    carries the identity it is valid for).
    """

    def __init__(self, entries: dict[bytes, CacheRecord] | None = None, *, base_size: int = 0,
                 journal_size: int = 0) -> None:
        self._entries: dict[bytes, CacheRecord] = entries if entries is not None else {}
        self._changed: dict[bytes, CacheRecord] = {}
        self._base_size = base_size
        self._journal_size = journal_size
        self.hits = 0
        self.misses = 0
        self.dirty = False

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, path: bytes, identity: Ident, digest: bytes, hashed_at: int) -> None:
        """Remember the digest of ``path``, whose identity was ``identity`` when hashing began at
        ``hashed_at`` (ns). The racy rule is applied here: a file whose mtime or ctime is not older
        than ``hashed_at`` by :data:`RACY_NS` could change again within the same timestamp, so its
        digest is not kept (and an older entry for the path is dropped)."""
        entries = self._entries
        old = entries.pop(path, None)  # re-inserted last: the dict's order is the order of storing
        if max(identity[3], identity[4]) + RACY_NS < hashed_at:
            record = IDENT.pack(*identity) + digest
            entries[path] = record
            self._changed[path] = record
        elif old is not None:
            self._changed[path] = _GONE
        self.dirty = True

    @property
    def table(self) -> dict[bytes, CacheRecord]:
        """The records by path, for :func:`cached_digest`; do not modify."""
        return self._entries

    @classmethod
    def load(cls, path: Path) -> StatCache:
        """Read a cache (base and journal); an absent, unreadable, truncated or corrupt base yields an
        empty cache, and the journal is applied up to its first damaged segment."""
        try:
            data = safeio.read_regular(path, limit=MAX_FILE_SIZE, what="stat cache")
        except OSError:
            return cls()
        entries = _parse(data, _CACHE_MAGIC)
        if entries is None:
            return cls()
        journal_size = 0
        try:
            journal = safeio.read_regular(_journal(path), limit=MAX_FILE_SIZE, what="stat cache journal")
        except OSError:
            journal = b""
        pos = 0
        while pos < len(journal):
            end = _segment_end(journal, pos)
            segment = None if end is None else _parse(journal[pos:end], _JOURNAL_MAGIC)
            if end is None or segment is None:
                break
            for name, record in segment.items():
                entries.pop(name, None)
                if record != _GONE:
                    entries[name] = record
            pos = journal_size = end
        return cls(entries, base_size=len(data), journal_size=journal_size)

    def save(self, path: Path) -> None:
        """Persist what changed (see the class docstring), if anything did. Errors are ignored:
        a temporary file is removed, and the cache on disk stays as it was."""
        if not self.dirty:
            return
        # without a base yet (a first capture) the changes are the whole cache: no journal segment
        segment = _encode(_JOURNAL_MAGIC, self._changed) if self._base_size else None
        try:
            if segment is not None and self._journal_size + len(segment) < self._base_size:
                _append(_journal(path), segment)
                self._journal_size += len(segment)
            else:
                keep = self._entries
                if len(keep) > MAX_ENTRIES:  # the entries stored longest ago go first
                    keep = dict(list(keep.items())[len(keep) - MAX_ENTRIES:])
                base = _encode(_CACHE_MAGIC, keep)
                safeio.replace_atomically(path, base, durable=False)
                _journal(path).unlink(missing_ok=True)
                self._base_size, self._journal_size = len(base), 0
        except OSError:
            return  # an optimisation only
        self._changed = {}
        self.dirty = False


#: Most entries a saved cache keeps (about 100 MB with typical paths).
MAX_ENTRIES = 1 << 20
_JOURNAL_MAGIC = b"ASLSJRN1"
#: A journal record that removes its path (an identity no file has: device 0, inode 0).
_GONE = bytes(_RECORD)


def _journal(path: Path) -> Path:
    return path.with_name(path.name + ".log")


def _encode(magic: bytes, entries: dict[bytes, CacheRecord]) -> bytes:
    """``magic``, count, the records, the NUL-joined names, then the SHA-256 of all that."""
    body = b"".join([magic, _COUNT.pack(len(entries)), *entries.values(), b"\0".join(entries)])
    if magic == _JOURNAL_MAGIC:  # a segment says how long it is, so the next one can be found
        body = magic + _COUNT.pack(len(body) + 32 + _COUNT.size) + body[len(magic):]
    return body + hashlib.sha256(body).digest()


def _segment_end(journal: bytes, pos: int) -> int | None:
    head = pos + len(_JOURNAL_MAGIC) + _COUNT.size
    if head > len(journal) or not journal.startswith(_JOURNAL_MAGIC, pos):
        return None
    (length,) = _COUNT.unpack_from(journal, pos + len(_JOURNAL_MAGIC))
    end = pos + length
    return end if pos < end <= len(journal) else None


def _parse(data: bytes, magic: bytes) -> dict[bytes, CacheRecord] | None:
    """The entries of one base file or journal segment, or None when it is damaged."""
    head = len(magic) + _COUNT.size * (2 if magic == _JOURNAL_MAGIC else 1)
    if len(data) < head + 32 or not data.startswith(magic):
        return None
    if hashlib.sha256(memoryview(data)[:-32]).digest() != data[-32:]:
        return None
    (count,) = _COUNT.unpack_from(data, head - _COUNT.size)
    table_end = head + count * _RECORD
    if table_end > len(data) - 32:
        return None
    names = data[table_end:-32].split(b"\0") if count else []
    if len(names) != count:
        return None
    records = [data[o : o + _RECORD] for o in range(head, table_end, _RECORD)]
    return dict(zip(names, records, strict=True))


def _append(journal: Path, segment: bytes) -> None:
    """Append one segment to the journal (a regular file, not through a symlink), in one write.

    Raises:
        OSError: it cannot be opened or written (a partial segment is cut back off).
    """
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 0o644)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "stat cache journal is not a regular file")
        try:
            safeio.write_all(fd, segment)
        except OSError:
            os.ftruncate(fd, st.st_size)
            raise
    finally:
        os.close(fd)


def cached_digest(record: CacheRecord | None, st: os.stat_result) -> bytes | None:
    """The digest in ``record`` if the file's ``lstat`` ``st`` still has the identity it was hashed at."""
    if record is not None and record.startswith(
            IDENT.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)):
        return record[IDENT.size :]
    return None
