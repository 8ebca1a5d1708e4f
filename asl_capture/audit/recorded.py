"""What a verified chain recorded, as the ISO checks need it: manifests, subtrees, attachments.

Everything here reads objects of a chain that :func:`asl_capture.verify.verify_chain` has already
verified (signatures, linkage, objects present and matching their digests); a malformed object
still raises :class:`~asl_capture.errors.VerificationError` naming the record, never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from asl_capture import dcbor
from asl_capture.errors import CborError, StoreError, VerificationError
from asl_capture.format import Entry, Manifest, StepRecord
from asl_capture.frozen import frozen
from asl_capture.store import ObjectStore, ProvenanceDir
from asl_capture.verify import ChainReport

CONTENTS_TYPE = "asl-iso-contents"
CONTENTS_VERSION = 1


@frozen
class IsoContents:
    """The ``iso`` step's own account of its ISO (``pipeline/tools/isocontents.py`` writes it).

    ``tree``: the recorded output tree that is the ISO's root; ``added``: entries the ISO tool added
    (or replaced) beside that tree, paths relative to the ISO root; ``removed``: tree paths the ISO
    lacks; ``system_area``: SHA-256 of the first 32 KiB; ``squashfs``: the system image's path in the
    ISO, the recorded tree it was made from, and every owner that is not ``0:0``.
    """

    iso: bytes
    tree: bytes
    added: tuple[Entry, ...]
    removed: tuple[bytes, ...]
    system_area: bytes
    squashfs_path: bytes
    squashfs_tree: bytes
    owners: dict[bytes, tuple[int, int]]
    compression: str
    seq: int
    digest: bytes


def subtree(manifest: Manifest, label: bytes) -> dict[bytes, Entry]:
    """The entries of ``manifest`` at or under ``label``, keyed by their path relative to it (``.`` for
    the root itself)."""
    out: dict[bytes, Entry] = {}
    prefix = label.rstrip(b"/") + b"/"
    for e in manifest.entries:
        if e.path == label:
            out[b"."] = e
        elif e.path.startswith(prefix):
            out[e.path[len(prefix):]] = e
    return out


def relabelled(entries: dict[bytes, Entry]) -> Manifest:
    """A manifest of ``entries`` as :func:`asl_capture.manifest.snapshot` of the tree with the tree
    itself as base would write it (the build manifest's form)."""
    rows = sorted((Entry(p, e.kind, e.mode, e.size, e.extra) for p, e in entries.items()), key=lambda e: e.path)
    return Manifest(roots=(b".",), entries=tuple(rows))


@dataclass
class Recorded:
    """Read access to the records and objects of a verified chain."""

    prov: Path
    report: ChainReport
    manifests: dict[bytes, Manifest] = field(default_factory=dict)

    @property
    def records(self) -> tuple[StepRecord, ...]:
        return self.report.records

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(ProvenanceDir(Path(os.path.abspath(self.prov))))

    def object(self, digest: bytes, *, seq: int, what: str) -> bytes:
        """An object's bytes (checked against its digest).

        Raises:
            VerificationError: missing or damaged.
        """
        try:
            return self.store.read(digest)
        except StoreError as exc:
            raise VerificationError(f"{what}: {exc}", check="objects", record=seq) from None

    def manifest(self, digest: bytes, *, seq: int, what: str) -> Manifest:
        """The tree manifest stored under ``digest``.

        Raises:
            VerificationError: missing, damaged or not a version-1 manifest.
        """
        cached = self.manifests.get(digest)
        if cached is None:
            try:
                cached = Manifest.from_cbor(self.object(digest, seq=seq, what=what))
            except CborError as exc:
                raise VerificationError(f"{what}: {exc}", check="objects", record=seq) from None
            self.manifests[digest] = cached
        return cached

    def inputs(self, seq: int) -> Manifest:
        return self.manifest(self.records[seq].inputs.manifest, seq=seq, what="inputs manifest")

    def outputs(self, seq: int) -> Manifest:
        return self.manifest(self.records[seq].outputs.manifest, seq=seq, what="outputs manifest")

    def steps(self) -> list[int]:
        """Seqs of the records that did work (leaves of the step tree: records nothing nests under)."""
        parents = {r.parent for r in self.records if r.parent is not None}
        return [r.seq for r in self.records if r.id not in parents]

    def find_iso(self, name: str, digest: bytes) -> tuple[int, Entry]:
        """The record and output entry of the recorded ISO that ``name``/``digest`` should be: the one
        with this digest, else the one with this file name, else the only ``.iso`` output.

        Raises:
            VerificationError: the chain records no ISO, or several and none matches.
        """
        latest: dict[bytes, tuple[int, Entry]] = {}
        for seq in self.steps():
            for e in self.outputs(seq).entries:
                if e.kind == "f" and e.path.endswith(b".iso"):
                    latest[e.path] = (seq, e)
        if not latest:
            raise VerificationError("no step of this chain recorded an .iso output", check="iso-digest")
        for seq, e in latest.values():
            if e.extra == digest:
                return seq, e
        named = [v for p, v in latest.items() if os.path.basename(p) == os.fsencode(os.path.basename(name))]
        if len(named) == 1:
            return named[0]
        if len(latest) == 1:
            return next(iter(latest.values()))
        raise VerificationError(f"the chain records {len(latest)} ISOs and none has this digest or name",
                                check="iso-digest")

    def contents(self, seq: int, iso_label: bytes) -> IsoContents:
        """The ISO-contents object the step ``seq`` attached for ``iso_label``.

        Raises:
            VerificationError: the step attached none, or it is malformed.
        """
        record = self.records[seq]
        for item in record.attached or ():
            raw_path = os.fsencode(item.path) if isinstance(item.path, str) else item.path
            if not raw_path.endswith(b".cbor"):
                continue
            digest = item.digest
            data = self.object(digest, seq=seq, what=f"attached {os.fsdecode(raw_path)}")
            try:
                value = dcbor.decode(data)
            except CborError:
                continue
            if isinstance(value, dict) and value.get("type") == CONTENTS_TYPE:
                found = _parse_contents(value, seq, digest)
                if found.iso == iso_label:
                    return found
        raise VerificationError(
            f"step {record.step!r} stored no record of its ISO's contents ({CONTENTS_TYPE} attachment): the "
            f"files the ISO tool added cannot be accounted for", check="iso-files", record=seq)


def _raw(value: dcbor.Value, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise CborError(f"{where}: expected a path")


def _int(value: dcbor.Value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CborError(f"{where}: expected an unsigned integer")
    return value


def _parse_contents(value: dict[str, dcbor.Value], seq: int, digest: bytes) -> IsoContents:
    try:
        keys = {"v", "type", "iso", "tree", "added", "removed", "system_area", "squashfs"}
        if set(value) != keys or value["v"] != CONTENTS_VERSION:
            raise CborError(f"fields {sorted(value)} are not those of version {CONTENTS_VERSION}")
        added_raw = value["added"]
        if not isinstance(added_raw, list):
            raise CborError("added: expected an array")
        added = Manifest.from_cbor(dcbor.encode({"v": 1, "roots": ["."], "entries": added_raw})).entries
        removed_raw = value["removed"]
        if not isinstance(removed_raw, list):
            raise CborError("removed: expected an array")
        sq = value["squashfs"]
        if not isinstance(sq, dict) or set(sq) != {"path", "tree", "owners", "compression"}:
            raise CborError("squashfs: expected path, tree, owners and compression")
        owners: dict[bytes, tuple[int, int]] = {}
        owners_raw = sq["owners"]
        if not isinstance(owners_raw, list):
            raise CborError("squashfs.owners: expected an array")
        for row in owners_raw:
            if not isinstance(row, list) or len(row) != 3:
                raise CborError("squashfs.owners: expected [path, uid, gid] rows")
            owners[_raw(row[0], "owners")] = (_int(row[1], "owners uid"), _int(row[2], "owners gid"))
        area = value["system_area"]
        compression = sq["compression"]
        if not isinstance(area, bytes) or len(area) != 32 or not isinstance(compression, str):
            raise CborError("system_area or compression malformed")
        return IsoContents(
            iso=_raw(value["iso"], "iso"), tree=_raw(value["tree"], "tree"), added=added,
            removed=tuple(_raw(p, "removed") for p in removed_raw), system_area=area,
            squashfs_path=_raw(sq["path"], "squashfs.path"), squashfs_tree=_raw(sq["tree"], "squashfs.tree"),
            owners=owners, compression=compression, seq=seq, digest=digest,
        )
    except CborError as exc:
        raise VerificationError(f"{CONTENTS_TYPE} object {digest.hex()}: {exc}", check="iso-files",
                                record=seq) from None
