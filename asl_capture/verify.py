"""Strict verification of a provenance chain: the checks of docs/FORMAT.md section 9.

Checks, in order, each logged as one numbered line: 1 decode, 2 signature (by a trusted key id),
3 payload (the record schema, decoded only after its signature held), 4 linkage (chain id, seq,
prev), 5 objects (every referenced object present and matching its digest; tree manifests and change
lists well-formed and agreeing with the record's counts), 6 status (every step ``ok``, every session
finished). The first failing check raises :class:`VerificationError` naming
the record and the check; success returns a :class:`ChainReport`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture import chain, cose, dcbor, opening, safeio
from asl_capture.errors import CborError, ChainError, StoreError, VerificationError
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE, Changes, Checkpoint, Manifest, StepRecord
from asl_capture.frozen import frozen
from asl_capture.store import ObjectStore, ProvenanceDir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CHECKS = ("decode", "signature", "payload", "linkage", "objects", "status")


@frozen
class StepNode:
    """A record in the step tree."""

    seq: int
    record: StepRecord
    children: tuple[StepNode, ...]


@frozen
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
    manifests: dict[bytes, Manifest] | None = None,
    helpers: int | None = None,
) -> ChainReport:
    """Verify the chain in a provenance directory against trusted keys.

    ``log(number, check, detail)`` is called once per passed check. When ``manifests`` is given, every
    tree manifest check 5 decoded is left there by digest (callers that read them again save the work).
    ``helpers`` forked processes share checks 2 and 3 (default: one per extra core on a long chain; 0:
    none), with the same result and the same first error either way (:mod:`asl_capture.opening`).

    Raises:
        StoreError: the directory or its chain is missing (unreadable input).
        VerificationError: a check failed (names the record and the check).
    """
    emit: Log = log if log is not None else (lambda _n, _c, _d: None)
    prov = ProvenanceDir.existing(directory)
    try:
        scan = chain.read(prov.chain)
    except ChainError as exc:
        raise VerificationError(str(exc), check="decode", record=exc.record) from None
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
        what = ("a zero-filled tail of {length} bytes (an unclean shutdown)" if scan.zeros
                else "a torn tail of {length} bytes (an interrupted append)").format(length=length)
        raise VerificationError(
            f"{len(scan.items)} whole record(s) end at byte offset {offset}, then {what}; 'asl-chain repair' "
            f"truncates it", check="decode", record=len(scan.items))
    emit(1, "decode", f"{len(scan.items)} COSE_Sign1 records, {scan.size} bytes")

    def check(index: int, msg: cose.Sign1) -> None:
        problem = _trust_problem(msg, trusted, STEP_CONTENT_TYPE, "a step record")
        if problem is not None:
            raise VerificationError(problem, check="signature", record=index)

    def parse(value: dcbor.Value, index: int) -> StepRecord:
        try:
            return StepRecord.from_value(value)
        except CborError as exc:
            raise VerificationError(str(exc), check="payload", record=index) from None

    kids = tuple(sorted({m.kid for m in messages}))

    def signatures_held() -> None:
        emit(2, "signature", f"{len(messages)} signatures by {len(kids)} trusted key(s): "
                             + ", ".join(k.hex()[:16] for k in kids))

    try:
        records = opening.open_records(messages, check, parse, helpers=helpers)
    except VerificationError as exc:
        if exc.check == "payload":  # raised only once every signature held
            signatures_held()
        raise
    signatures_held()
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

    objects = _Objects(ObjectStore(prov), manifests)
    for index, record in enumerate(records):
        objects.check_record(index, record)
    emit(5, "objects", f"{len(objects.checked)} referenced objects present, matching their digests, "
                       f"manifests and change lists well-formed")

    tree = _status(records)
    emit(6, "status", f"{len(records)} steps ok, {len(tree)} top-level session(s) finished")
    head = scan.items[-1]
    return ChainReport(
        path=prov.chain, chain_id=chain_id, records=tuple(records), head_seq=records[-1].seq,
        head_digest=hashlib.sha256(head.raw).digest(), size=scan.size, kids=kids, objects=len(objects.checked),
        tree=tree,
    )


def _check_checkpoint(
    prov: ProvenanceDir, trusted: dict[bytes, Ed25519PublicKey], chain_id: bytes, items: tuple[chain.Item, ...],
) -> str:
    """Check the signed checkpoint names a record of this chain; return a description."""
    def fail(message: str) -> VerificationError:
        return VerificationError(f"{prov.checkpoint.name}: {message}", check="linkage")

    try:
        raw = chain.read_checkpoint(prov)
    except FileNotFoundError:
        hint = ("; an interrupted append left its signed checkpoint in a temporary file: run 'asl-chain repair'"
                if chain.pending_checkpoints(prov) else "")
        raise fail(f"no signed checkpoint: records cut from the end of the chain could not be detected{hint}") from None
    except OSError as exc:
        raise fail(f"cannot be read: {safeio.describe(exc)}") from None
    try:
        msg = cose.parse(dcbor.decode(raw, tags=cose.COSE_TAGS))
    except (CborError, VerificationError) as exc:
        raise fail(f"malformed: {exc}") from None
    problem = _trust_problem(msg, trusted, CHECKPOINT_CONTENT_TYPE, "a checkpoint")
    if problem is not None:
        raise fail(problem)
    try:
        checkpoint = Checkpoint.from_cbor(msg.payload)
    except CborError as exc:
        raise fail(f"payload is not a version-1 checkpoint: {exc}") from None
    seq, digest = checkpoint.seq, checkpoint.digest
    if checkpoint.chain != chain_id:
        raise fail("belongs to another chain")
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


class _Objects:
    """Check 5: each referenced object once (present, matching its digest, well-formed for its field)."""

    def __init__(self, store: ObjectStore, keep: dict[bytes, Manifest] | None = None) -> None:
        self.store = store
        self.keep = keep
        self.checked: set[bytes] = set()
        self.manifests: dict[bytes, tuple[int, int]] = {}  # digest -> (entries, files)
        self.changes: dict[bytes, tuple[int, int, int]] = {}  # digest -> (created, modified, deleted)

    def check_record(self, index: int, record: StepRecord) -> None:
        """Raises VerificationError (check ``objects``) naming the record and the field."""
        def fail(field: str, message: str) -> VerificationError:
            return VerificationError(f"{field}: {message}", check="objects", record=index)

        ins, outs = record.inputs, record.outputs
        for field, digest, counts in (("inputs", ins.manifest, (ins.entries, ins.files)),
                                      ("outputs", outs.manifest, (outs.entries, outs.files)),
                                      ("outputs", outs.before, None)):
            name = "before" if counts is None else "manifest"
            found = self._manifest(digest, f"{field}.{name}", fail)
            if counts is not None and found != counts:
                raise fail(field, f"entries {counts[0]}, files {counts[1]}, but the manifest lists "
                                  f"{found[0]} entries, {found[1]} files")
        changes = self._changes(outs.changes, fail)
        if changes != (outs.created, outs.modified, outs.deleted):
            raise fail("outputs", f"created {outs.created}, modified {outs.modified}, deleted {outs.deleted}, "
                                  f"but the change list has {changes[0]}, {changes[1]}, {changes[2]}")
        logs = [("stdout.digest", record.stdout.digest, record.stdout.size),
                ("stderr.digest", record.stderr.digest, record.stderr.size)]
        attached = [(f"attached[{i}].digest", a.digest, a.size) for i, a in enumerate(record.attached or ())]
        for field, digest, size in logs + attached:
            if digest not in self.checked:
                problem = self.store.check(digest, size=size)
                if problem is not None:
                    raise fail(field, problem)
                self.checked.add(digest)

    def _read(self, digest: bytes, field: str, fail: Callable[[str, str], VerificationError]) -> bytes:
        try:
            data = self.store.read(digest)
        except StoreError as exc:
            raise fail(field, str(exc)) from None
        self.checked.add(digest)
        return data

    def _manifest(self, digest: bytes, field: str, fail: Callable[[str, str], VerificationError]) -> tuple[int, int]:
        if digest not in self.manifests:
            try:
                manifest = Manifest.from_cbor(self._read(digest, field, fail))
            except CborError as exc:
                raise fail(field, f"not a version-1 tree manifest: {exc}") from None
            self.manifests[digest] = (len(manifest.entries), manifest.files)
            if self.keep is not None:
                self.keep[digest] = manifest
        return self.manifests[digest]

    def _changes(self, digest: bytes, fail: Callable[[str, str], VerificationError]) -> tuple[int, int, int]:
        if digest not in self.changes:
            try:
                changes = Changes.from_cbor(self._read(digest, "outputs.changes", fail))
            except CborError as exc:
                raise fail("outputs.changes", f"not a version-1 change list: {exc}") from None
            self.changes[digest] = (len(changes.created), len(changes.modified), len(changes.deleted))
        return self.changes[digest]


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

    # Children land before their parent, so building nodes in seq order finds every child built
    # already: no recursion, whatever the nesting depth.
    nodes: dict[int, StepNode] = {}
    for index, record in enumerate(records):
        nodes[index] = StepNode(seq=index, record=record,
                                children=tuple(nodes.pop(c) for c in children.get(record.id, [])))
    return tuple(nodes[i] for i, r in enumerate(records) if r.parent is None)
