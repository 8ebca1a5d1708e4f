"""The append-only chain file: a CBOR sequence (RFC 8742) of tagged COSE_Sign1 messages.

Appends are serialized across processes with ``flock`` on ``chain.lock``; each record is written
whole with one ``O_APPEND`` write and fsynced before the lock is released. The reader splits the
sequence into items and reports a partial last item (a crash mid-append) or a zero-filled end (an
unclean shutdown) as a torn tail with its byte offset; :func:`repair` is the only thing that
removes such bytes, it keeps a copy, and it refuses to remove a record the signed checkpoint
vouches for (a crash cannot have torn that record).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path

from asl_capture import cose, dcbor, safeio
from asl_capture.cose import MessageSigner
from asl_capture.errors import (
    AslError,
    CborError,
    ChainError,
    CheckpointError,
    TornTailError,
    TruncatedCbor,
)
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE, Checkpoint, StepRecord
from asl_capture.frozen import frozen
from asl_capture.store import ProvenanceDir


@frozen
class Item:
    """One whole chain item: its offset, its exact bytes and (when split from a chain) its decoded value."""

    offset: int
    raw: bytes
    value: dcbor.Value = field(default=None, compare=False, repr=False)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


@frozen
class Scan:
    """The chain split into items. ``torn`` is (offset, length) of a partial last item, if any;
    ``zeros`` says the torn tail is only zero bytes (what an unclean shutdown can leave)."""

    items: tuple[Item, ...]
    torn: tuple[int, int] | None
    size: int
    zeros: bool = False


def split(data: bytes, *, start: int = 0, name: str = "chain") -> Scan:
    """Split chain bytes into whole items, from ``start``, in time and memory linear in their size.

    Every item must start a tagged COSE_Sign1 message; anything else is checked before it is
    decoded, so no input makes this materialise more than the bytes it holds.

    Raises:
        ChainError: an item is not well-formed CBOR (a corrupt record, not a torn tail); the message
            names the record index and byte offset.
    """
    items: list[Item] = []
    pos, size = start, len(data)
    while pos < size:
        if data[pos] != _SIGN1_FIRST_BYTE:
            if data.count(0, pos) == size - pos:  # a zero-filled tail: allocated, never written
                return Scan(items=tuple(items), torn=(pos, size - pos), size=size, zeros=True)
            raise ChainError(f"{name}: item {len(items)} at byte offset {pos} is malformed: item is not a "
                                f"tagged COSE_Sign1 message (tag 18)", record=len(items))
        try:
            value, end = dcbor.decode_item(data, pos, tags=cose.COSE_TAGS)
        except TruncatedCbor:
            resume = _next_whole_message(data, pos + 1)
            if resume is not None:  # not a crash mid-append: a damaged item with whole records after it
                raise ChainError(f"{name}: item {len(items)} at byte offset {pos} is malformed: it runs past the "
                                    f"end of the chain, yet a whole record starts at byte offset {resume}",
                                    record=len(items)) from None
            return Scan(items=tuple(items), torn=(pos, size - pos), size=size)
        except CborError as exc:
            raise ChainError(f"{name}: item {len(items)} at byte offset {pos} is malformed: {exc}",
                                record=len(items)) from None
        items.append(Item(pos, data[pos:end], value))
        pos = end
    return Scan(items=tuple(items), torn=None, size=size)


#: The first byte of every chain item: tag 18 (COSE_Sign1).
_SIGN1_FIRST_BYTE = 0xD2
#: The start of every message we write: tag 18, an array of 4, then the protected header as a byte
#: string holding the map ``{1: -8, 3: ...}``.
_SIGN1_START = b"\xd2\x84"
_PROTECTED_START = b"\xa3\x01\x27\x03"


def _bstr_end(data: bytes, pos: int) -> int | None:
    """End offset of the byte string whose head is at ``pos``, when it fits in ``data``; else None."""
    size = len(data)
    if pos >= size or data[pos] >> 5 != 2:
        return None
    info = data[pos] & 0x1F
    if info < 24:
        start, length = pos + 1, info
    elif info <= 27:
        width = 1 << (info - 24)
        start = pos + 1 + width
        if start > size:
            return None
        length = int.from_bytes(data[pos + 1 : start], "big")
    else:
        return None
    end = start + length
    return end if end <= size else None


def _fits_message(data: bytes, pos: int) -> bool:
    """Whether a COSE_Sign1 message shaped like ours (protected header, ``{}``, payload, 64-byte
    signature) starts at ``pos`` and fits in ``data``: a constant-time look at its four heads."""
    protected = _bstr_end(data, pos + 2)
    if protected is None or not data.startswith(_PROTECTED_START, pos + 2 + _head_len(data[pos + 2])):
        return False
    if protected >= len(data) or data[protected] != 0xA0:
        return False
    payload = _bstr_end(data, protected + 1)
    return payload is not None and data.startswith(b"\x58\x40", payload) and payload + 66 <= len(data)


def _head_len(initial: int) -> int:
    """Bytes in a CBOR head whose first byte is ``initial`` (additional information up to 27)."""
    info = initial & 0x1F
    return 1 if info < 24 else 1 + (1 << (info - 24))


def _next_whole_message(data: bytes, start: int) -> int | None:
    """Offset of the first COSE_Sign1 message that fits whole at or after ``start``, if any.

    A crash leaves at most a prefix of one record at the end; a "torn tail" holding a whole record
    is a damaged length field earlier on, and must not be truncated away. Each candidate is
    looked at in constant time (its heads only), so the search is linear in the tail's size.
    """
    pos = data.find(_SIGN1_START, start)
    while pos >= 0:
        if _fits_message(data, pos):
            return pos
        pos = data.find(_SIGN1_START, pos + 1)
    return None


#: The most a head cache or a checkpoint can hold (both are a few hundred bytes).
HEAD_LIMIT = 512
CHECKPOINT_LIMIT = 4096


def read(path: Path) -> Scan:
    """Read and split a chain file (a regular file, not through a symlink).

    Raises:
        ChainError: the file cannot be read, is not a regular file, or holds a malformed item.
    """
    try:
        fd, size = safeio.open_regular(path, what="chain")
        try:
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ChainError(f"{path}: cannot read chain: {safeio.describe(exc)}") from None
    return split(data, name=str(path))


@contextmanager
def locked(prov: ProvenanceDir) -> Iterator[None]:
    """Hold the chain's exclusive append lock.

    Raises:
        ChainError: the lock file cannot be opened (or is a symlink or not a regular file).
    """
    fd = lock(prov)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def lock(prov: ProvenanceDir, *, wait: bool = True) -> int:
    """Take the chain's exclusive append lock; return the descriptor whose closing releases it.

    Raises:
        BlockingIOError: ``wait`` is false and another process holds the lock.
        ChainError: the lock file cannot be opened (or is a symlink or not a regular file).
    """
    try:
        fd = os.open(prov.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ChainError(f"{prov.lock}: cannot open lock file: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ChainError(f"{prov.lock}: lock file is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


@frozen
class Head:
    """Where the chain stands: the next seq, the previous item's digest, the chain id, the end offset."""

    chain: bytes | None
    next_seq: int
    prev: bytes | None
    end: int


def head_after(item: Item) -> Head:
    """The head after ``item``, which must be exactly one COSE_Sign1 message (no trailing bytes).

    Raises:
        CborError, FormatError, VerificationError: the item is not a well-formed record.
    """
    msg = cose.parse(dcbor.decode(item.raw, tags=cose.COSE_TAGS))
    record = StepRecord.from_cbor(msg.payload)
    return Head(chain=record.chain, next_seq=record.seq + 1, prev=item.digest, end=item.offset + len(item.raw))


def _read_cached_head(prov: ProvenanceDir, fd: int, size: int) -> Head | None:
    """The head cache, if it is consistent with the chain bytes (else None: rescan).

    The cached range must end at the chain's end and hold exactly one whole message whose digest
    the cache names; anything else (a range of two items, a bad digest) means "rescan".
    """
    try:
        value = dcbor.decode(safeio.read_regular(prov.head, limit=HEAD_LIMIT, what="head cache"))
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
        return head_after(Item(start, raw))
    except AslError:  # the cache is advisory: anything odd means "rescan"
        return None


def forget_head(prov: ProvenanceDir) -> None:
    """Remove the head cache (the next reader rescans the chain)."""
    with contextlib.suppress(FileNotFoundError):
        prov.head.unlink()


def _write_head(prov: ProvenanceDir, item: Item) -> None:
    data = dcbor.encode({"start": item.offset, "end": item.offset + len(item.raw), "digest": item.digest})
    with contextlib.suppress(OSError):  # advisory: a missing or stale cache only means a rescan
        safeio.replace_atomically(prov.head, data, durable=False)


def read_checkpoint(prov: ProvenanceDir) -> bytes:
    """The bytes of ``checkpoint.cose`` (a regular file of at most :data:`CHECKPOINT_LIMIT` bytes).

    Raises:
        OSError: it is missing, unreadable, not a regular file, a symlink or too large.
    """
    return safeio.read_regular(prov.checkpoint, limit=CHECKPOINT_LIMIT, what="checkpoint")


def head_of(prov: ProvenanceDir, fd: int) -> Head:
    """The head of the chain open as ``fd`` (the head cache when it is consistent, else a scan).

    Raises:
        TornTailError: the chain ends with a partial record.
        ChainError: its last record cannot be read.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return Head(chain=None, next_seq=0, prev=None, end=0)
    cached = _read_cached_head(prov, fd, size)
    if cached is not None:
        return cached
    data = os.pread(fd, size, 0)
    scan = split(data, name=str(prov.chain))
    if scan.torn is not None:
        raise TornTailError(str(prov.chain), offset=scan.torn[0], length=scan.torn[1], records=len(scan.items),
                            zeros=scan.zeros)
    try:
        return head_after(scan.items[-1])
    except AslError as exc:
        raise ChainError(f"{prov.chain}: last record cannot be read: {exc}") from None


def check_appendable(prov: ProvenanceDir) -> Head:
    """Check, under the lock, that a record could be appended now; return the current head.

    Raises:
        TornTailError: the chain ends with a partial record.
        ChainError: the chain cannot be opened or its last record cannot be read.
    """
    with locked(prov):
        fd = open_for_append(prov)
        try:
            return head_of(prov, fd)
        finally:
            os.close(fd)


def open_for_append(prov: ProvenanceDir) -> int:
    """Open (creating) the chain for appending (``O_APPEND``), refusing a symlink or a non-regular file.

    Raises:
        ChainError: it cannot be opened or is not a regular file.
    """
    try:
        fd = os.open(prov.chain, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644)
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise ChainError(f"{prov.chain}: cannot open chain: {reason}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ChainError(f"{prov.chain}: chain is not a regular file")
    os.set_blocking(fd, True)
    return fd


def append(
    prov: ProvenanceDir,
    signer: MessageSigner,
    build: Callable[[Head], StepRecord],
    *,
    new_chain_id: Callable[[], bytes],
) -> tuple[StepRecord, Item]:
    """Append the record ``build(head)`` returns, signed; return it as appended and its item.

    The chain fields of the built record are ignored: ``chain``, ``seq`` and ``prev`` are set under
    the lock (:meth:`StepRecord.linked`), so concurrent appenders never fork the chain. A write that
    fails part-way (a full disk) is cut back, so the chain ends where it did.

    Raises:
        TornTailError: the chain ends with a partial record; nothing is written.
        FormatError: the record breaks the format (a bug in the caller); nothing is written.
        ChainError: the chain cannot be opened or written (it is left as it was).
        CheckpointError: the record was appended but the checkpoint could not be updated.
    """
    with locked(prov):
        fd = open_for_append(prov)
        try:
            head = head_of(prov, fd)
            record, item, checkpoint = append_at(prov, fd, head, signer, build(head), new_chain_id=new_chain_id)
            if checkpoint is None:
                raise checkpoint_failed(prov, record)
            return record, item
        finally:
            os.close(fd)


def append_at(
    prov: ProvenanceDir, fd: int, head: Head, signer: MessageSigner, draft: StepRecord, *,
    new_chain_id: Callable[[], bytes],
) -> tuple[StepRecord, Item, bytes | None]:
    """Place ``draft`` after ``head``, sign it and its checkpoint, and write both: the chain is open
    as ``fd`` (``O_APPEND``), the caller holding the lock and vouching that ``head`` is where it ends.

    The checkpoint is written to a temporary file and fsynced *before* the record is appended, then
    renamed into place: a full disk stops the append with the chain unchanged, never leaves a record
    without the checkpoint that vouches for it. Returns the record, its item and the checkpoint's
    bytes, or None when only the final rename failed (the record is durable, the previous checkpoint
    still holds: the caller reports it).

    Raises:
        FormatError: the record breaks the format; nothing is written.
        ChainError: nothing could be written (the chain is left as it was).
    """
    record = draft.linked(chain=head.chain if head.chain is not None else new_chain_id(),
                          seq=head.next_seq, prev=head.prev)
    payload = record.to_cbor()
    StepRecord.from_cbor(payload)  # never sign what a verifier would reject
    raw = signer.sign_message(payload, content_type=STEP_CONTENT_TYPE)
    item = Item(head.end, raw)
    checkpoint = signer.sign_message(Checkpoint(chain=record.chain, seq=record.seq, digest=item.digest).to_cbor(),
                                     content_type=CHECKPOINT_CONTENT_TYPE)
    try:
        tmp_fd, tmp = safeio.new_temp(prov.root, PENDING_PREFIX)
    except OSError as exc:
        raise ChainError(f"{prov.checkpoint}: cannot prepare the checkpoint: {exc.strerror}; the chain is "
                         f"unchanged") from None
    try:
        try:
            try:
                safeio.write_all(tmp_fd, checkpoint)
                os.fchmod(tmp_fd, 0o644)
                os.fsync(tmp_fd)
            finally:
                os.close(tmp_fd)
        except OSError as exc:
            raise ChainError(f"{prov.checkpoint}: cannot prepare the checkpoint: {exc.strerror}; the chain is "
                             f"unchanged") from None
        try:
            safeio.write_all(fd, raw)
            os.fsync(fd)
        except OSError as exc:
            _cut_back(fd, head.end)
            raise ChainError(f"{prov.chain}: cannot append record: {exc.strerror}; the chain is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_head(prov, item)
    try:
        os.replace(tmp, prov.checkpoint)
    except OSError:
        tmp.unlink(missing_ok=True)
        return record, item, None
    return record, item, checkpoint


#: The temporary name a checkpoint is written under before the record it vouches for is appended.
PENDING_PREFIX = ".checkpoint.cose."


def pending_checkpoints(prov: ProvenanceDir) -> list[Path]:
    """Checkpoints an interrupted append left in temporary files (a crash between the record and the
    rename that puts its checkpoint in place)."""
    try:
        return sorted(p for p in prov.root.iterdir() if p.name.startswith(PENDING_PREFIX))
    except OSError:
        return []


def complete_interrupted(prov: ProvenanceDir, head: Head) -> bool:
    """Under the lock: put in place the checkpoint an interrupted append signed for the chain's last
    record, when ``checkpoint.cose`` does not vouch for it already; remove the other pending ones.
    Returns whether one was put in place. Nothing is signed here.

    Raises:
        ChainError: the rename fails.
    """
    adopted = False
    for path in pending_checkpoints(prov):
        if not adopted and head.chain is not None and _vouches(path, head) and not _vouches(prov.checkpoint, head):
            try:
                os.replace(path, prov.checkpoint)
            except OSError as exc:
                raise ChainError(f"{path}: cannot put the interrupted append's checkpoint in place: "
                                 f"{exc.strerror}") from None
            adopted = True
            continue
        with contextlib.suppress(OSError):
            path.unlink()
    return adopted


def _vouches(path: Path, head: Head) -> bool:
    """Whether ``path`` holds a checkpoint naming exactly ``head``'s last record (unverified: the
    reader verifies; this only decides which file to keep)."""
    try:
        msg = cose.parse(dcbor.decode(safeio.read_regular(path, limit=CHECKPOINT_LIMIT, what="checkpoint"),
                                      tags=cose.COSE_TAGS))
        checkpoint = Checkpoint.from_cbor(msg.payload)
    except (OSError, AslError):
        return False
    return (msg.content_type == CHECKPOINT_CONTENT_TYPE and checkpoint.chain == head.chain
            and checkpoint.seq == head.next_seq - 1 and checkpoint.digest == head.prev)


def checkpoint_failed(prov: ProvenanceDir, record: StepRecord) -> CheckpointError:
    """The error for a record appended whose checkpoint could not be put in place."""
    return CheckpointError(f"record seq {record.seq} was appended, but {prov.checkpoint} could not be updated "
                           f"(the previous checkpoint still holds)", seq=record.seq)


def _cut_back(fd: int, end: int) -> None:
    """Remove what a failed append wrote past ``end`` (truncating frees space, so it succeeds on a
    full disk); if even that fails, the bytes stay and are found as a torn tail."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, end)
        os.fsync(fd)


@frozen
class RepairResult:
    """What :func:`repair` did: bytes removed, where, and where a copy of them was kept."""

    removed: int
    offset: int
    records: int
    saved: Path | None
    zeros: bool = False


def _checkpoint_seq(prov: ProvenanceDir) -> int | None:
    """The seq the current checkpoint vouches for (unverified: repair only compares it), or None."""
    try:
        msg = cose.parse(dcbor.decode(read_checkpoint(prov), tags=cose.COSE_TAGS))
        return Checkpoint.from_cbor(msg.payload).seq
    except (OSError, AslError):
        return None


def repair(prov: ProvenanceDir, *, kid: bytes | None = None) -> RepairResult:
    """Truncate a torn tail (after saving a copy of its bytes beside the chain).

    Only bytes a crash mid-append can leave are removed: a partial last record, or zero bytes. A
    record the signed checkpoint vouches for was complete and fsynced before the checkpoint was
    written, so a crash cannot have torn it: such damage is refused, never cut. Repair never signs
    anything. With ``kid``, the chain's last whole record must be signed by that key.

    Raises:
        ChainError: the chain cannot be read or written, is corrupt before its tail, its checkpoint
            vouches for records that are missing or damaged, or ``kid`` did not sign it.
    """
    with locked(prov):
        fd = open_for_append(prov)
        try:
            size = os.fstat(fd).st_size
            scan = split(os.pread(fd, size, 0), name=str(prov.chain))
            if kid is not None and scan.items:
                signed_by = cose.parse(scan.items[-1].value).kid
                if signed_by != kid:
                    raise ChainError(f"{prov.chain}: the key given (id {kid.hex()[:16]}) did not sign this chain "
                                     f"(its last record is signed by {signed_by.hex()[:16]})")
            vouched = _checkpoint_seq(prov)
            if vouched is not None and vouched >= len(scan.items):
                where = (f"the damaged bytes at byte offset {scan.torn[0]}" if scan.torn is not None
                         else "the end of the chain")
                raise ChainError(
                    f"{prov.chain}: the signed checkpoint vouches for record seq {vouched}, but only "
                    f"{len(scan.items)} whole record(s) precede {where}: a record the checkpoint vouches for was "
                    f"complete when it was written, so this is damage or tampering, not a crash; repair refuses "
                    f"to remove it")
            if scan.torn is None:
                if scan.items:
                    complete_interrupted(prov, head_after(scan.items[-1]))
                return RepairResult(removed=0, offset=size, records=len(scan.items), saved=None)
            offset, length = scan.torn
            try:
                saved = _save_torn(prov, os.pread(fd, length, offset), offset)
                os.ftruncate(fd, offset)
                os.fsync(fd)
            except OSError as exc:
                raise ChainError(f"{prov.chain}: cannot truncate torn tail: {exc.strerror}") from None
            with contextlib.suppress(FileNotFoundError):
                prov.head.unlink()
            return RepairResult(removed=length, offset=offset, records=len(scan.items), saved=saved, zeros=scan.zeros)
        finally:
            os.close(fd)


def _save_torn(prov: ProvenanceDir, data: bytes, offset: int) -> Path:
    """Keep the torn bytes in a new file ``torn-at-<offset>[.N].bin`` (never an existing one)."""
    for n in range(1000):
        path = prov.root / (f"torn-at-{offset}.bin" if n == 0 else f"torn-at-{offset}.{n}.bin")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        try:
            safeio.write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return path
    raise OSError(17, "too many earlier copies of torn bytes at this offset")
