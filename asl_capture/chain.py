"""The append-only chain file: a CBOR sequence (RFC 8742) of tagged COSE_Sign1 messages.

Appends are serialized across processes with ``flock`` on ``chain.lock``; each record is written
whole with one ``O_APPEND`` write and fsynced before the lock is released. The reader splits the
sequence into items and reports a partial last item (a crash mid-append) as a torn tail with its
byte offset; :func:`repair` is the only thing that removes such bytes, and it keeps a copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from asl_capture import cose, dcbor
from asl_capture.cose import MessageSigner
from asl_capture.errors import AslError, CborError, ChainError, TornTailError, TruncatedCbor
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE, Checkpoint, StepRecord
from asl_capture.store import ProvenanceDir


@dataclass(frozen=True, slots=True)
class Item:
    """One whole chain item: its offset, its exact bytes and (when split from a chain) its decoded value."""

    offset: int
    raw: bytes
    value: dcbor.Value = field(default=None, compare=False, repr=False)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


@dataclass(frozen=True, slots=True)
class Scan:
    """The chain split into items. ``torn`` is (offset, length) of a partial last item, if any."""

    items: tuple[Item, ...]
    torn: tuple[int, int] | None
    size: int


def split(data: bytes, *, start: int = 0, name: str = "chain") -> Scan:
    """Split chain bytes into whole items, from ``start``.

    Raises:
        ChainError: an item is not well-formed CBOR (a corrupt record, not a torn tail); the message
            names the record index and byte offset.
    """
    items: list[Item] = []
    pos, size = start, len(data)
    while pos < size:
        try:
            value, end = dcbor.decode_item(data, pos, tags=cose.COSE_TAGS)
        except TruncatedCbor:
            resume = _next_whole_message(data, pos + 1)
            if resume is not None:  # not a crash mid-append: a damaged item with whole records after it
                raise ChainError(f"{name}: item {len(items)} at byte offset {pos} is malformed: it runs past the "
                                 f"end of the chain, yet a whole record starts at byte offset {resume}") from None
            return Scan(items=tuple(items), torn=(pos, size - pos), size=size)
        except CborError as exc:
            raise ChainError(f"{name}: item {len(items)} at byte offset {pos} is malformed: {exc}") from None
        items.append(Item(pos, data[pos:end], value))
        pos = end
    return Scan(items=tuple(items), torn=None, size=size)


def _next_whole_message(data: bytes, start: int) -> int | None:
    """Offset of the first whole, well-formed COSE_Sign1 message at or after ``start``, if any.

    A crash leaves at most a prefix of one record at the end; a "torn tail" holding a whole record
    is a damaged length field earlier on, and must not be truncated away.
    """
    pos = data.find(b"\xd2\x84", start)
    while pos >= 0:
        try:
            cose.parse(dcbor.decode_item(data, pos, tags=cose.COSE_TAGS)[0])
        except AslError:
            pos = data.find(b"\xd2\x84", pos + 1)
            continue
        return pos
    return None


def read(path: Path) -> Scan:
    """Read and split a chain file.

    Raises:
        ChainError: the file cannot be read or holds a malformed item.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ChainError(f"{path}: cannot read chain: {exc.strerror}") from None
    return split(data, name=str(path))


@contextmanager
def locked(prov: ProvenanceDir) -> Iterator[None]:
    """Hold the chain's exclusive append lock.

    Raises:
        ChainError: the lock file cannot be opened.
    """
    try:
        fd = os.open(prov.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ChainError(f"{prov.lock}: cannot open lock file: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True, slots=True)
class Head:
    """Where the chain stands: the next seq, the previous item's digest, the chain id, the end offset."""

    chain: bytes | None
    next_seq: int
    prev: bytes | None
    end: int


def _head_from_item(item: Item) -> Head:
    msg = cose.parse(dcbor.decode_item(item.raw, tags=cose.COSE_TAGS)[0])
    record = StepRecord.from_cbor(msg.payload)
    return Head(chain=record.chain, next_seq=record.seq + 1, prev=item.digest, end=item.offset + len(item.raw))


def _read_cached_head(prov: ProvenanceDir, fd: int, size: int) -> Head | None:
    """The head cache, if it is consistent with the chain bytes (else None: rescan)."""
    try:
        value = dcbor.decode(prov.head.read_bytes())
    except (OSError, CborError):
        return None
    if not isinstance(value, dict):
        return None
    start, end, digest = value.get("start"), value.get("end"), value.get("digest")
    if not (isinstance(start, int) and isinstance(end, int) and isinstance(digest, bytes)) or not 0 <= start < end:
        return None
    if end != size:
        return None
    raw = os.pread(fd, end - start, start)
    if hashlib.sha256(raw).digest() != digest:
        return None
    try:
        return _head_from_item(Item(start, raw))
    except AslError:  # the cache is advisory: anything odd means "rescan"
        return None


def _write_head(prov: ProvenanceDir, item: Item) -> None:
    data = dcbor.encode({"start": item.offset, "end": item.offset + len(item.raw), "digest": item.digest})
    tmp = prov.head.with_name(f".head.{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, prov.head)
    except OSError:
        tmp.unlink(missing_ok=True)


def _write_checkpoint(prov: ProvenanceDir, signer: MessageSigner, record: StepRecord, item: Item) -> None:
    """Replace ``checkpoint.cose`` with a signed :class:`Checkpoint` of the chain's newest record.

    The chain alone cannot show that records were cut from its end; the checkpoint can, unless an
    older checkpoint is put back too (the signed release manifest anchors that case).

    Raises:
        ChainError: the checkpoint cannot be written (the record itself is already durable).
    """
    payload = Checkpoint(chain=record.chain, seq=record.seq, digest=item.digest).to_cbor()
    data = signer.sign_message(payload, content_type=CHECKPOINT_CONTENT_TYPE)
    tmp = prov.checkpoint.with_name(f".checkpoint.{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, prov.checkpoint)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ChainError(f"{prov.checkpoint}: cannot write checkpoint: {exc.strerror}") from None


def _current_head(prov: ProvenanceDir, fd: int) -> Head:
    size = os.fstat(fd).st_size
    if size == 0:
        return Head(chain=None, next_seq=0, prev=None, end=0)
    cached = _read_cached_head(prov, fd, size)
    if cached is not None:
        return cached
    data = os.pread(fd, size, 0)
    scan = split(data, name=str(prov.chain))
    if scan.torn is not None:
        raise TornTailError(str(prov.chain), offset=scan.torn[0], length=scan.torn[1], records=len(scan.items))
    try:
        return _head_from_item(scan.items[-1])
    except AslError as exc:
        raise ChainError(f"{prov.chain}: last record cannot be read: {exc}") from None


def check_appendable(prov: ProvenanceDir) -> Head:
    """Check, under the lock, that a record could be appended now; return the current head.

    Raises:
        TornTailError: the chain ends with a partial record.
        ChainError: the chain cannot be opened or its last record cannot be read.
    """
    with locked(prov):
        fd = _open_chain(prov)
        try:
            return _current_head(prov, fd)
        finally:
            os.close(fd)


def current_head(prov: ProvenanceDir) -> Head:
    """The chain's head as it is on disk now, *without* taking the append lock.

    For the signing agent, which checks a request against the head while the requesting capture
    holds the lock (taking it here would deadlock).

    Raises:
        TornTailError: the chain ends with a partial record.
        ChainError: the chain cannot be read or its last record cannot be read.
    """
    try:
        fd = os.open(prov.chain, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Head(chain=None, next_seq=0, prev=None, end=0)
    except OSError as exc:
        raise ChainError(f"{prov.chain}: cannot open chain: {exc.strerror}") from None
    try:
        return _current_head(prov, fd)
    finally:
        os.close(fd)


def _open_chain(prov: ProvenanceDir) -> int:
    try:
        return os.open(prov.chain, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ChainError(f"{prov.chain}: cannot open chain: {exc.strerror}") from None


def append(
    prov: ProvenanceDir,
    signer: MessageSigner,
    build: Callable[[Head], StepRecord],
    *,
    new_chain_id: Callable[[], bytes],
) -> tuple[StepRecord, Item]:
    """Append the record ``build(head)`` returns, signed; return it as appended and its item.

    The chain fields of the built record are ignored: ``chain``, ``seq`` and ``prev`` are set under
    the lock (:meth:`StepRecord.linked`), so concurrent appenders never fork the chain.

    Raises:
        TornTailError: the chain ends with a partial record; nothing is written.
        FormatError: the record breaks the format (a bug in the caller); nothing is written.
        ChainError: the chain cannot be opened or written.
    """
    with locked(prov):
        fd = _open_chain(prov)
        try:
            head = _current_head(prov, fd)
            record = build(head).linked(chain=head.chain if head.chain is not None else new_chain_id(),
                                  seq=head.next_seq, prev=head.prev)
            payload = record.to_cbor()
            StepRecord.from_cbor(payload)  # never sign what a verifier would reject
            raw = signer.sign_message(payload, content_type=STEP_CONTENT_TYPE)
            written = 0
            try:
                while written < len(raw):
                    written += os.write(fd, raw[written:])
                os.fsync(fd)
            except OSError as exc:
                raise ChainError(f"{prov.chain}: cannot append record: {exc.strerror}") from None
            item = Item(head.end, raw)
            _write_head(prov, item)
            _write_checkpoint(prov, signer, record, item)
            return record, item
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What :func:`repair` did: bytes removed, where, where a copy of them was kept, and the checkpoint."""

    removed: int
    offset: int
    records: int
    saved: Path | None
    #: "ok", "re-signed" (it vouched for the torn record; now for the last whole one) or "stale"
    #: (it vouches for a record that is gone and no signing key was available to re-sign it).
    checkpoint: str = "ok"


def _checkpoint_seq(prov: ProvenanceDir) -> int | None:
    """The seq the current checkpoint vouches for (unverified: repair only compares it), or None."""
    try:
        msg = cose.parse(dcbor.decode(prov.checkpoint.read_bytes(), tags=cose.COSE_TAGS))
        return Checkpoint.from_cbor(msg.payload).seq
    except (OSError, AslError):
        return None


def repair(prov: ProvenanceDir, *, signer: Callable[[], MessageSigner] | None = None) -> RepairResult:
    """Truncate a torn tail (after saving a copy of its bytes beside the chain).

    Whole records are never touched; a malformed record in the middle is refused. When the signed
    checkpoint vouches for a record that is no longer whole, it is re-signed for the last whole
    record with the key ``signer()`` loads; without one the checkpoint is left (and reported) stale.

    Raises:
        ChainError: the chain cannot be read or written, or is corrupt before its tail.
        KeyFileError: ``signer()`` could not load the key needed to re-sign the checkpoint.
    """
    with locked(prov):
        fd = _open_chain(prov)
        try:
            size = os.fstat(fd).st_size
            scan = split(os.pread(fd, size, 0), name=str(prov.chain))
            offset, length, saved = size, 0, None
            if scan.torn is not None:
                offset, length = scan.torn
                saved = prov.root / f"torn-at-{offset}.bin"
                try:
                    saved.write_bytes(os.pread(fd, length, offset))
                    os.ftruncate(fd, offset)
                    os.fsync(fd)
                except OSError as exc:
                    raise ChainError(f"{prov.chain}: cannot truncate torn tail: {exc.strerror}") from None
                prov.head.unlink(missing_ok=True)
            return RepairResult(removed=length, offset=offset, records=len(scan.items), saved=saved,
                                checkpoint=_reconcile_checkpoint(prov, scan.items, signer))
        finally:
            os.close(fd)


def _reconcile_checkpoint(
    prov: ProvenanceDir, items: tuple[Item, ...], signer: Callable[[], MessageSigner] | None,
) -> str:
    """Re-sign a checkpoint that vouches beyond the last whole record (see :class:`RepairResult`)."""
    vouched = _checkpoint_seq(prov)
    if vouched is None or vouched < len(items):
        return "ok"
    if not items:
        prov.checkpoint.unlink(missing_ok=True)
        return "re-signed"
    if signer is None:
        return "stale"
    last = items[-1]
    _write_checkpoint(prov, signer(), StepRecord.from_cbor(cose.parse(last.value).payload), last)
    return "re-signed"
