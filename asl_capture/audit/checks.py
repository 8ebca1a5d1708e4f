"""Checks 3, 4 and 7 of ``asl-verify iso``: the ISO's files, the squashfs system image, the build manifest.

Each check function returns a one-line detail on success and raises
:class:`~asl_capture.errors.VerificationError` naming the check, the record and the paths otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from asl_capture.audit.compare import Seen, differences, summary
from asl_capture.audit.iso9660 import SYSTEM_AREA, IsoImage, IsoNode
from asl_capture.audit.recorded import IsoContents, Recorded, relabelled, subtree
from asl_capture.audit.squashfs import Node, SquashImage, shard
from asl_capture.errors import CborError, ImageError, VerificationError
from asl_capture.format import BuildManifest, Entry
from asl_capture.format.build import BuildSource
from asl_capture.hashing import available_cpus
from asl_capture.parallel import Pending, run_shards, start_shards

MAX_BUILD_MANIFEST = 16 << 20
BUILD_MANIFEST = b"asl/build-manifest.cbor"
SOURCE_KINDS = ("release", "index", "deb")
_NO_DIR = Entry(b"", "-", 0, 0, None)
_ARCHIVE_PATH = re.compile(r"/((?:dists|pool)/.*)$")


def iso_mode(kind: str, mode: int) -> int:
    """The Rock Ridge mode ``grub-mkrescue`` (xorriso ``-r``) gives a path of this recorded mode:
    write and set-id bits cleared, read for all, execute for all on directories and on files with any
    execute bit."""
    if kind == "d" or mode & 0o111:
        return 0o555
    return 0o444


def seen_from_entry(e: Entry) -> Seen:
    """A manifest entry as comparable fields."""
    if e.kind == "f":
        return Seen("f", e.mode, e.size, digest=e.extra if isinstance(e.extra, bytes) else None)
    if e.kind == "l":
        return Seen("l", e.mode, e.size, target=e.extra if isinstance(e.extra, bytes) else None)
    if e.kind in ("c", "b") and isinstance(e.extra, int):
        return Seen(e.kind, e.mode, e.size, rdev=(os.major(e.extra), os.minor(e.extra)))
    return Seen(e.kind, e.mode, e.size)


@dataclass
class IsoRead:
    """The ISO as read for check 3, shared by the later checks."""

    fd: int
    name: str
    image: IsoImage
    nodes: dict[bytes, IsoNode]
    contents: IsoContents
    expected: dict[bytes, Seen]
    digests: dict[bytes, bytes]
    iso_seq: int
    problems: list[str]


def read_iso(fd: int, name: str, recorded: Recorded, iso_seq: int, iso_label: bytes) -> IsoRead:
    """Read the ISO's tree and the recorded expectation of it.

    Raises:
        VerificationError: the ISO cannot be read, or the step stored no contents record.
    """
    contents = recorded.contents(iso_seq, iso_label)
    try:
        image = IsoImage(fd, name=os.path.basename(name))
        nodes = {n.path: n for n in image.walk()}
    except ImageError as exc:
        raise VerificationError(str(exc), check="iso-files", record=iso_seq) from None
    tree = subtree(recorded.outputs(iso_seq), contents.tree)
    if not tree:
        raise VerificationError(f"the recorded outputs hold no tree {os.fsdecode(contents.tree)}", check="iso-files",
                                record=iso_seq)
    expected: dict[bytes, Seen] = {}
    for path, e in tree.items():
        s = seen_from_entry(e)
        expected[path] = Seen(s.kind, iso_mode(s.kind, s.mode), s.size, s.digest, s.target, s.rdev)
    for path in contents.removed:
        expected.pop(path, None)
    for e in contents.added:
        expected[e.path] = seen_from_entry(e)
    return IsoRead(fd=fd, name=name, image=image, nodes=nodes, contents=contents, expected=expected, digests={},
                   iso_seq=iso_seq, problems=[])


def _found(node: IsoNode, digest: bytes | None = None) -> Seen:
    return Seen(node.kind, node.mode, node.size, digest=digest, target=node.target, rdev=node.rdev)


def check_iso_files(r: IsoRead) -> str:
    """Check 3: every path of the ISO is the recorded tree plus the recorded additions, same bytes."""
    found = {p: _found(n) for p, n in r.nodes.items()}
    problems = differences(r.expected, found, hashed=False)
    bad = {line.split(": ", 1)[0] for line in problems}
    try:
        for path, node in r.nodes.items():
            if node.kind == "f" and ("/" + os.fsdecode(path)) not in bad:
                r.digests[path] = r.image.extent_digest(node)
                found[path] = _found(node, r.digests[path])
        area = hashlib.sha256(os.pread(r.fd, SYSTEM_AREA, 0)).digest()
    except (ImageError, OSError) as exc:
        raise VerificationError(f"cannot read the ISO: {exc}", check="iso-files", record=r.iso_seq) from None
    problems = differences(r.expected, found)
    if area != r.contents.system_area:
        problems.insert(0, f"system area (first 32 KiB, the boot code and partition tables): sha256 "
                           f"{area.hex()} found, {r.contents.system_area.hex()} recorded")
    if problems:
        raise VerificationError(summary(problems, "the ISO's files"), check="iso-files", record=r.iso_seq)
    added = len(r.contents.added)
    files = sum(1 for n in r.nodes.values() if n.kind == "f")
    return (f"{len(r.nodes)} paths ({files} files) = recorded tree {os.fsdecode(r.contents.tree)} + {added} "
            f"added by the ISO tool (record {r.iso_seq}), same bytes; system area matches")


def iso_file_bytes(r: IsoRead, path: bytes, limit: int) -> bytes:
    """The bytes of a small file of the ISO.

    Raises:
        VerificationError: missing, not a file, larger than ``limit`` or unreadable.
    """
    node = r.nodes.get(path)
    if node is None or node.kind != "f":
        raise VerificationError(f"/{os.fsdecode(path)} is not in the ISO", check="build-manifest", record=r.iso_seq)
    if node.size > limit:
        raise VerificationError(f"/{os.fsdecode(path)}: {node.size} bytes, more than {limit}: refused",
                                check="build-manifest", record=r.iso_seq)
    try:
        return b"".join(os.pread(r.fd, length, start) for start, length in node.extents)
    except OSError as exc:
        raise VerificationError(f"/{os.fsdecode(path)}: cannot read: {exc.strerror}", check="build-manifest",
                                record=r.iso_seq) from None


def sources_rows(recorded: Recorded) -> tuple[BuildSource, ...]:
    """The build manifest's ``sources`` as the chain's records say: ``[kind, archive path, sha256]`` of every
    pinned Debian source, sorted, mirror host stripped."""
    rows: set[BuildSource] = set()
    for record in recorded.records:
        for source in record.sources or ():
            m = _ARCHIVE_PATH.search(source.uri)
            if source.kind in SOURCE_KINDS and m is not None:
                rows.add(BuildSource(kind=source.kind, path=m.group(1), sha256=source.sha256))
    return tuple(sorted(rows))


def check_build_manifest(r: IsoRead, recorded: Recorded) -> tuple[str, bytes]:
    """Check 7: ``/asl/build-manifest.cbor`` is the recorded one and says what the chain says.

    Returns the detail line and the image identity (SHA-256 of the build manifest's bytes).
    """
    seq = r.iso_seq

    def fail(message: str) -> VerificationError:
        return VerificationError(f"/{os.fsdecode(BUILD_MANIFEST)}: {message}", check="build-manifest", record=seq)

    data = iso_file_bytes(r, BUILD_MANIFEST, MAX_BUILD_MANIFEST)
    identity = hashlib.sha256(data).digest()
    want = r.expected.get(BUILD_MANIFEST)
    if want is None or want.digest != identity:
        raise fail(f"sha256 {identity.hex()} is not the one step {recorded.records[seq].step!r} recorded")
    try:
        doc = BuildManifest.from_cbor(data)
    except CborError as exc:
        raise fail(f"not a version-1 build manifest: {exc}") from None
    record = recorded.records[seq]
    if doc.source_date_epoch != record.source_date_epoch:
        raise fail(f"source_date_epoch {doc.source_date_epoch} but the record says {record.source_date_epoch}")
    rows = sources_rows(recorded)
    if doc.sources != rows:
        raise fail(f"its {len(doc.sources)} sources are not the {len(rows)} Debian sources the chain pinned")
    if not doc.files:
        raise fail("lists no files")
    for name, digest in doc.files.items():
        got = r.digests.get(name.encode())
        if got is None or got != digest:
            raise fail(f"files[{name!r}] does not match /{name} in the ISO")
    inputs = recorded.inputs(seq)
    sq_tree = subtree(inputs, r.contents.squashfs_tree)
    if doc.system.manifest != relabelled(sq_tree).digest:
        raise fail(f"system manifest is not the digest of the recorded tree {os.fsdecode(r.contents.squashfs_tree)}")
    if doc.system.paths != len(sq_tree):
        raise fail(f"system paths {doc.system.paths} but the recorded tree has {len(sq_tree)}")
    matches = [root for root in inputs.roots if relabelled(subtree(inputs, root)).digest == doc.overlay.manifest]
    if not matches:
        raise fail("overlay manifest is the digest of no tree the step read")
    modules = [f"{prefix}lib/modules/{doc.kernel}".encode() for prefix in ("", "usr/")]
    if not any(sq_tree.get(m, _NO_DIR).kind == "d" for m in modules):
        raise fail(f"kernel {doc.kernel!r} has no lib/modules directory in the system tree")
    return (f"sha256 {identity.hex()} recorded by step {record.step!r}; sources ({len(rows)}), system tree, "
            f"overlay ({os.fsdecode(matches[0])}), files and source_date_epoch agree with the chain; "
            f"{doc.name} {doc.version}"), identity


def _hash_shard(image: SquashImage, files: list[Node], indexes: list[int]) -> list[tuple[int, bytes | str]]:
    out: list[tuple[int, bytes | str]] = []
    for i in indexes:
        data = files[i].data
        assert data is not None
        try:
            out.append((i, image.file_digest(data)))
        except ImageError as exc:
            out.append((i, str(exc)))
    return out


@dataclass
class SquashPrefetch:
    """The squashfs image of the ISO, walked and being hashed by helper processes while the other checks
    run (reading an image needs no record; what it must equal is decided in check 4)."""

    path: bytes
    image: SquashImage
    nodes: list[Node]
    files: list[Node]
    pending: Pending[list[tuple[int, bytes | str]]]

    @classmethod
    def start(cls, fd: int, *, workers: int | None = None) -> SquashPrefetch | None:
        """Start hashing the ISO's one ``*.squashfs`` file; None when there is not exactly one or it cannot
        be read (check 4 then reads it itself and reports why)."""
        try:
            iso = IsoImage(fd)
            found = [n for n in iso.walk() if n.kind == "f" and n.path.endswith(b".squashfs")]
            if len(found) != 1:
                return None
            start, length = iso.file_extent(found[0])
            image = SquashImage(fd, offset=start, length=length, name=f"/{os.fsdecode(found[0].path)}")
            nodes = image.walk()
        except ImageError:
            return None
        files = [n for n in nodes if n.kind == "f"]
        parts = shard(image, files, workers if workers is not None else available_cpus())
        pending = start_shards(parts, lambda part: _hash_shard(image, files, part))
        return cls(found[0].path, image, nodes, files, pending)


def check_squashfs(r: IsoRead, recorded: Recorded, *, workers: int | None = None,
                   prefetch: SquashPrefetch | None = None) -> str:
    """Check 4: the squashfs system image equals the recorded system tree, owners included."""
    seq = r.iso_seq
    c = r.contents
    node = r.nodes.get(c.squashfs_path)
    where = f"/{os.fsdecode(c.squashfs_path)}"
    if node is None or node.kind != "f":
        raise VerificationError(f"{where} is not in the ISO", check="squashfs", record=seq)
    tree = subtree(recorded.inputs(seq), c.squashfs_tree)
    if not tree:
        raise VerificationError(f"step {recorded.records[seq].step!r} read no tree {os.fsdecode(c.squashfs_tree)}",
                                check="squashfs", record=seq)
    try:
        if prefetch is not None and prefetch.path == c.squashfs_path:
            image, nodes, files = prefetch.image, prefetch.nodes, prefetch.files
            results = prefetch.pending.collect()
        else:
            start, length = r.image.file_extent(node)
            image = SquashImage(r.fd, offset=start, length=length, name=where)
            nodes = image.walk()
            files = [n for n in nodes if n.kind == "f"]
            parts = shard(image, files, workers if workers is not None else available_cpus())
            results = run_shards(parts, lambda part: _hash_shard(image, files, part))
    except ImageError as exc:
        raise VerificationError(str(exc), check="squashfs", record=seq) from None
    expected: dict[bytes, Seen] = {}
    for path, e in tree.items():
        s = seen_from_entry(e)
        expected[path] = Seen(s.kind, s.mode, s.size, s.digest, s.target, s.rdev, c.owners.get(path, (0, 0)))
    found: dict[bytes, Seen] = {}
    xattrs: list[str] = []
    for n in nodes:
        found[n.path] = Seen(n.kind, n.mode, n.size, target=n.target, rdev=n.rdev, owner=(n.uid, n.gid))
        if n.xattrs:
            xattrs.append(f"{where}/{os.fsdecode(n.path)}: extended attributes present, none recorded")
    problems: list[str] = []
    for part in results:
        for i, digest in part:
            n = files[i]
            if isinstance(digest, str):
                problems.append(f"/{os.fsdecode(n.path)}: {digest}")
            else:
                found[n.path] = Seen(n.kind, n.mode, n.size, digest=digest, owner=(n.uid, n.gid))
    problems = sorted(set(problems) | set(differences(expected, found))) + xattrs
    if problems:
        raise VerificationError(summary(problems, f"the squashfs {where} (paths relative to its root)"),
                                check="squashfs", record=seq)
    total = sum(n.size for n in files)
    owned = sum(1 for n in nodes if (n.uid, n.gid) != (0, 0))
    return (f"{where} ({image.compression}): {len(nodes)} paths ({len(files)} files, {total} bytes) = recorded tree "
            f"{os.fsdecode(c.squashfs_tree)}: types, modes incl. set-id bits, owners ({owned} not 0:0), sizes, "
            f"digests, symlink targets, device numbers")
