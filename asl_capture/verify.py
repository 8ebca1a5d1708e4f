"""Strict verification of a provenance chain (DESIGN.md section 4, the checks that apply to a chain).

Checks, in order, each logged as one numbered line: 1 decode, 2 signature (by a trusted key id),
3 payload (the record schema, decoded only after its signature held), 4 linkage (chain id, seq,
prev), 5 objects (every referenced object present and matching its digest), 6 status (every step
``ok``, every session finished). The first failing check raises :class:`VerificationError` naming
the record and the check; success returns a :class:`ChainReport`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture import chain, cose, dcbor
from asl_capture.errors import CborError, ChainError, VerificationError
from asl_capture.hashing import available_cpus
from asl_capture.record import StepRecord
from asl_capture.store import ObjectStore, ProvenanceDir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_PARALLEL_MIN_RECORDS = 1000
CHECKS = ("decode", "signature", "payload", "linkage", "objects", "status")


@dataclass(frozen=True, slots=True)
class StepNode:
    """A record in the step tree."""

    seq: int
    record: StepRecord
    children: tuple[StepNode, ...]


@dataclass(frozen=True, slots=True)
class ChainReport:
    """A verified chain: its records, head, signing keys and step tree."""

    path: Path
    chain_id: bytes
    records: tuple[StepRecord, ...]
    head_seq: int
    head_digest: bytes
    size: int
    kids: tuple[bytes, ...]
    objects: int
    tree: tuple[StepNode, ...]


Log = Callable[[int, str, str], None]


def verify_chain(
    directory: Path,
    trusted: dict[bytes, Ed25519PublicKey],
    *,
    log: Log | None = None,
) -> ChainReport:
    """Verify the chain in a provenance directory against trusted keys.

    ``log(number, check, detail)`` is called once per passed check.

    Raises:
        StoreError: the directory or its chain is missing (unreadable input).
        VerificationError: a check failed (names the record and the check).
    """
    emit: Log = log if log is not None else (lambda _n, _c, _d: None)
    prov = ProvenanceDir.existing(directory)
    try:
        scan = chain.read(prov.chain)
    except ChainError as exc:
        raise VerificationError(str(exc), check="decode") from None
    if not scan.items:
        if scan.torn is not None:
            raise VerificationError(f"chain holds no whole record; torn tail of {scan.torn[1]} bytes at byte "
                                    f"offset 0", check="decode")
        raise VerificationError("chain is empty: nothing to verify", check="decode")
    messages: list[cose.Sign1] = []
    for index, item in enumerate(scan.items):
        try:
            messages.append(cose.parse(item.value))
        except (CborError, VerificationError) as exc:
            raise VerificationError(f"at byte offset {item.offset}: {exc}", check="decode", record=index) from None
    if scan.torn is not None:
        offset, length = scan.torn
        raise VerificationError(
            f"{len(scan.items)} whole record(s) end at byte offset {offset}, then a torn tail of {length} bytes "
            f"(an interrupted append); 'asl-chain repair' truncates it", check="decode", record=len(scan.items))
    emit(1, "decode", f"{len(scan.items)} COSE_Sign1 records, {scan.size} bytes")

    _check_signatures(messages, trusted)
    payloads = [m.payload for m in messages]
    kids = tuple(sorted({m.kid for m in messages}))
    emit(2, "signature", f"{len(messages)} signatures by {len(kids)} trusted key(s): "
                         + ", ".join(k.hex()[:16] for k in kids))

    records: list[StepRecord] = []
    for index, payload in enumerate(payloads):
        try:
            records.append(StepRecord.from_cbor(payload))
        except CborError as exc:
            raise VerificationError(str(exc), check="payload", record=index) from None
    emit(3, "payload", f"{len(records)} version-1 step records")

    chain_id = records[0].chain
    for index, (record, item) in enumerate(zip(records, scan.items, strict=True)):
        if record.chain != chain_id:
            raise VerificationError(f"chain id {record.chain.hex()} differs from {chain_id.hex()}",
                                    check="linkage", record=index)
        if record.seq != index:
            raise VerificationError(f"seq is {record.seq}, expected {index} (record removed, duplicated or "
                                    f"reordered)", check="linkage", record=index)
        expected = None if index == 0 else scan.items[index - 1].digest
        if record.prev != expected:
            raise VerificationError("prev does not match the digest of the previous record", check="linkage",
                                    record=index)
        del item
    checkpoint = _check_checkpoint(prov, trusted, chain_id, scan.items)
    emit(4, "linkage", f"chain {chain_id.hex()}, seq 0..{len(records) - 1}, every prev matches; {checkpoint}")

    store = ObjectStore(prov)
    checked: set[bytes] = set()
    for index, record in enumerate(records):
        for digest in record.object_digests():
            if digest in checked:
                continue
            problem = store.check(digest)
            if problem is not None:
                raise VerificationError(problem, check="objects", record=index)
            checked.add(digest)
    emit(5, "objects", f"{len(checked)} referenced objects present and matching their digests")

    tree = _status(records)
    emit(6, "status", f"{len(records)} steps ok, {len(tree)} top-level session(s) finished")
    head = scan.items[-1]
    return ChainReport(
        path=prov.chain, chain_id=chain_id, records=tuple(records), head_seq=records[-1].seq,
        head_digest=hashlib.sha256(head.raw).digest(), size=scan.size, kids=kids, objects=len(checked), tree=tree,
    )


def _check_checkpoint(
    prov: ProvenanceDir, trusted: dict[bytes, Ed25519PublicKey], chain_id: bytes, items: tuple[chain.Item, ...],
) -> str:
    """Check the signed checkpoint names a record of this chain; return a description."""
    def fail(message: str) -> VerificationError:
        return VerificationError(f"{prov.checkpoint.name}: {message}", check="linkage")

    try:
        raw = prov.checkpoint.read_bytes()
    except OSError:
        raise fail("no signed checkpoint: records cut from the end of the chain could not be detected") from None
    try:
        msg = cose.parse(dcbor.decode(raw, tags=cose.COSE_TAGS))
    except (CborError, VerificationError) as exc:
        raise fail(f"malformed: {exc}") from None
    problem = _trust_problem(msg, trusted, chain.CHECKPOINT_CONTENT_TYPE, "a checkpoint")
    if problem is not None:
        raise fail(problem)
    try:
        body = dcbor.decode(msg.payload)
    except CborError as exc:
        raise fail(f"malformed payload: {exc}") from None
    if not isinstance(body, dict) or set(body) != {"v", "chain", "seq", "digest"} or body["v"] != 1:
        raise fail("payload is not a version-1 checkpoint")
    seq, digest = body["seq"], body["digest"]
    if body["chain"] != chain_id:
        raise fail("belongs to another chain")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(digest, bytes):
        raise fail("payload has a bad seq or digest")
    if seq >= len(items):
        raise fail(f"vouches for seq {seq} but the chain ends at seq {len(items) - 1}: records were removed "
                   f"from its end")
    if items[seq].digest != digest:
        raise fail(f"digest of record {seq} differs from the one it vouches for")
    after = len(items) - 1 - seq
    return f"signed checkpoint at seq {seq}" + (f" ({after} later record(s) appended after it)" if after else "")


def _trust_problem(msg: cose.Sign1, trusted: dict[bytes, Ed25519PublicKey], content_type: str,
                   what: str) -> str | None:
    """Why ``msg`` is not a valid signature by a trusted key over ``what``, or None when it is."""
    key = trusted.get(msg.kid)
    if key is None:
        return f"signed by untrusted key id {msg.kid.hex()}"
    if msg.content_type != content_type:
        return f"content type {msg.content_type!r} is not {what}"
    try:
        cose.verify(msg, key)
    except VerificationError:
        return "Ed25519 signature does not verify"
    return None


def _check_one(index: int, msg: cose.Sign1, trusted: dict[bytes, Ed25519PublicKey]) -> None:
    problem = _trust_problem(msg, trusted, cose.STEP_CONTENT_TYPE, "a step record")
    if problem is not None:
        raise VerificationError(problem, check="signature", record=index)


def _first_bad(messages: list[cose.Sign1], start: int, trusted: dict[bytes, Ed25519PublicKey]) -> int | None:
    for index in range(start, len(messages)):
        try:
            _check_one(index, messages[index], trusted)
        except VerificationError:
            return index
    return None


def _check_signatures(messages: list[cose.Sign1], trusted: dict[bytes, Ed25519PublicKey]) -> None:
    """Verify every signature, raising for the earliest bad one.

    Ed25519 verification holds the GIL, so a long chain is split with one forked helper process per
    extra core; a helper reports only the index of its first failure, which is then checked again
    here to raise the exact error.
    """
    workers = min(available_cpus(), len(messages) // _PARALLEL_MIN_RECORDS)
    if workers < 2 or not hasattr(os, "fork"):
        for index, msg in enumerate(messages):
            _check_one(index, msg, trusted)
        return
    bounds = [len(messages) * w // workers for w in range(workers + 1)]
    helpers: list[tuple[int, int, int]] = []
    for w in range(1, workers):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the helper
            code = 1
            try:
                os.close(read_fd)
                bad = _first_bad(messages[: bounds[w + 1]], bounds[w], trusted)
                os.write(write_fd, b"ok" if bad is None else str(bad).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        helpers.append((pid, read_fd, w))
    failures: list[int] = []
    for index in range(bounds[0], bounds[1]):
        try:
            _check_one(index, messages[index], trusted)
        except VerificationError:
            failures.append(index)
            break
    for pid, read_fd, w in helpers:
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        if answer != b"ok":
            # a failure, or a helper that died: check its whole share here, raising the exact error
            bad = int(answer) if answer.isdigit() and status == 0 else bounds[w]
            failures.append(bad)
    for index in sorted(failures):
        for again in range(index, len(messages)):
            _check_one(again, messages[again], trusted)


def _status(records: list[StepRecord]) -> tuple[StepNode, ...]:
    """Check every step is ``ok`` and every session finished; return the step tree."""
    seq_of: dict[bytes, int] = {}
    for index, record in enumerate(records):
        if record.id in seq_of:
            raise VerificationError(f"record id {record.id.hex()} repeats record {seq_of[record.id]}",
                                    check="status", record=index)
        seq_of[record.id] = index
    children: dict[bytes, list[int]] = {}
    for index, record in enumerate(records):
        if record.status != "ok":
            raise VerificationError(f"step {record.step!r} is {record.status} (exit {record.exit})",
                                    check="status", record=index)
        parent = record.parent
        if parent is None:
            continue
        if parent not in seq_of:
            raise VerificationError(f"step {record.step!r} belongs to session {parent.hex()} that never finished "
                                    f"(its record is missing: interrupted or still running)",
                                    check="status", record=index)
        if seq_of[parent] < index:
            raise VerificationError(f"step {record.step!r} lands after its parent record {seq_of[parent]}",
                                    check="status", record=index)
        children.setdefault(parent, []).append(index)

    def node(index: int) -> StepNode:
        record = records[index]
        return StepNode(seq=index, record=record, children=tuple(node(c) for c in children.get(record.id, [])))

    return tuple(node(i) for i, r in enumerate(records) if r.parent is None)
