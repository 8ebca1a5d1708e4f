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
from asl_capture.audit.isolayout import layout_problems, read_layout, tree_problems
from asl_capture.audit.limits import Limits
from asl_capture.audit.recorded import IsoContents, Recorded, relabelled, subtree
from asl_capture.errors import CborError, ImageError, VerificationError
from asl_capture.format import BuildManifest, Entry
from asl_capture.format.build import BuildSource

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


def read_iso(fd: int, name: str, recorded: Recorded, iso_seq: int, iso_label: bytes, *,
             size: int | None = None) -> IsoRead:
    """Read the ISO's tree and the recorded expectation of it: no more than the recorded ``size`` of the
    image, no more paths than the record allows room for.

    Raises:
        VerificationError: the ISO cannot be read, or the step stored no contents record.
    """
    contents = recorded.contents(iso_seq, iso_label)
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
    try:
        image = IsoImage(fd, name=os.path.basename(name), limit=size)
        nodes = {n.path: n for n in image.walk(Limits.from_record({}, list(expected)))}
    except ImageError as exc:
        raise VerificationError(str(exc), check="iso-files", record=iso_seq) from None
    return IsoRead(fd=fd, name=name, image=image, nodes=nodes, contents=contents, expected=expected, digests={},
                   iso_seq=iso_seq, problems=[])


def _found(node: IsoNode, digest: bytes | None = None) -> Seen:
    return Seen(node.kind, node.mode, node.size, digest=digest, target=node.target, rdev=node.rdev)


def check_iso_files(r: IsoRead) -> str:
    """Check 3: every path of the ISO is the recorded tree plus the recorded additions, same bytes."""
    found = {p: _found(n) for p, n in r.nodes.items()}
    problems = differences(r.expected, found, hashed=False)
    bad = {line.split(": ", 1)[0] for line in problems}
    by_extents: dict[tuple[tuple[int, int], ...], bytes] = {}  # two names of one extent: hashed once
    try:
        for path, node in r.nodes.items():
            if node.kind == "f" and ("/" + os.fsdecode(path)) not in bad:
                digest = by_extents.get(node.extents)
                if digest is None:
                    digest = by_extents[node.extents] = r.image.extent_digest(node)
                r.digests[path] = digest
                found[path] = _found(node, digest)
        area = hashlib.sha256(os.pread(r.fd, SYSTEM_AREA, 0)).digest()
    except (ImageError, OSError) as exc:
        raise VerificationError(f"cannot read the ISO: {exc}", check="iso-files", record=r.iso_seq) from None
    problems = differences(r.expected, found)
    try:
        layout, joliet, hfs = read_layout(r.image, r.nodes, os.fstat(r.fd).st_size,
                                          Limits.from_record({}, list(r.expected)))
    except (ImageError, OSError) as exc:
        raise VerificationError(f"cannot read the ISO's other trees or boot records: {exc}", check="iso-files",
                                record=r.iso_seq) from None
    problems += tree_problems(r.nodes, joliet, hfs)
    if r.contents.layout is not None:
        problems += layout_problems(layout, r.contents.layout, r.fd, r.image.size)
    if area != r.contents.system_area:
        problems.insert(0, f"system area (first 32 KiB, the boot code and partition tables): sha256 "
                           f"{area.hex()} found, {r.contents.system_area.hex()} recorded")
    if problems:
        raise VerificationError(summary(problems, "the ISO's files"), check="iso-files", record=r.iso_seq)
    added = len(r.contents.added)
    files = sum(1 for n in r.nodes.values() if n.kind == "f")
    other = "".join(f", {t} ({n} names)" for t, n in (("Joliet", len(joliet)), ("HFS+", len(hfs))) if n)
    layout_note = (f"; volume descriptors ({len(layout.descriptors)}), El Torito catalog and {len(layout.boot)} boot "
                   f"image(s), regions outside the files (tail, backup GPT) as recorded"
                   if r.contents.layout is not None else "; (a version-1 record: layout not recorded)")
    return (f"{len(r.nodes)} paths ({files} files) = recorded tree {os.fsdecode(r.contents.tree)} + {added} "
            f"added by the ISO tool (record {r.iso_seq}), same bytes{other} naming Rock Ridge paths; system area "
            f"matches{layout_note}")


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
