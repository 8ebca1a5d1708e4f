"""Check 4 of ``asl-verify iso``: the squashfs system image equals the recorded system tree.

The image is read only after checks 1 and 2 (a verified chain, the ISO's size and digest compared), and
within bounds the record sets (:class:`~asl_capture.audit.limits.Limits`): a file is hashed only when
its type, mode, owner and claimed size are the recorded ones, and an inode once however many names link
to it. Beyond the paths, the check compares what the ``iso`` step recorded of how the image was made:
the compressor, and (ISO-contents version 2) the block size, the superblock flags, the compressor
options and the hard-link groups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asl_capture.audit.checks import IsoRead, seen_from_entry
from asl_capture.audit.compare import Seen, differences, summary
from asl_capture.audit.limits import Limits
from asl_capture.audit.recorded import IsoContents, Recorded, subtree
from asl_capture.audit.squashfs import Node, SquashImage, shard
from asl_capture.errors import ImageError, VerificationError
from asl_capture.format import Entry
from asl_capture.hashing import available_cpus
from asl_capture.parallel import Pending, run_shards, start_shards

_FLAGS = {0x0001: "uncompressed inodes", 0x0002: "uncompressed data", 0x0008: "uncompressed fragments",
          0x0010: "no fragments", 0x0020: "always fragments", 0x0040: "duplicates", 0x0080: "exportable",
          0x0100: "uncompressed xattrs", 0x0200: "no xattrs", 0x0400: "compressor options",
          0x0800: "uncompressed ids"}


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
class SquashRead:
    """The system image as walked, its recorded expectation, and the files (one per inode) to hash."""

    where: str
    image: SquashImage
    nodes: list[Node]
    tree: dict[bytes, Entry]
    files: list[Node]


def read_squashfs(r: IsoRead, recorded: Recorded) -> SquashRead:
    """Walk the system image within the bounds of the recorded tree and choose what to hash.

    Raises:
        VerificationError: the image is missing, unreadable or exceeds what the record allows.
    """
    seq, c = r.iso_seq, r.contents
    node = r.nodes.get(c.squashfs_path)
    where = f"/{os.fsdecode(c.squashfs_path)}"
    if node is None or node.kind != "f":
        raise VerificationError(f"{where} is not in the ISO", check="squashfs", record=seq)
    tree = subtree(recorded.inputs(seq), c.squashfs_tree)
    if not tree:
        raise VerificationError(f"step {recorded.records[seq].step!r} read no tree {os.fsdecode(c.squashfs_tree)}",
                                check="squashfs", record=seq)
    sizes = {p: e.size for p, e in tree.items() if e.kind == "f"}
    try:
        start, length = r.image.file_extent(node)
        image = SquashImage(r.fd, offset=start, length=length, name=where)
        nodes = image.walk(Limits.from_record(sizes, list(tree)))
    except ImageError as exc:
        raise VerificationError(str(exc), check="squashfs", record=seq) from None
    files: list[Node] = []  # a block list is read only for a recorded size: hashing is bounded by the record
    refs: set[int] = set()
    for n in nodes:
        if n.kind == "f" and n.data is not None and n.ref not in refs:
            refs.add(n.ref)
            files.append(n)
    return SquashRead(where, image, nodes, tree, files)


def _expected(tree: dict[bytes, Entry], c: IsoContents) -> dict[bytes, Seen]:
    expected: dict[bytes, Seen] = {}
    for path, e in tree.items():
        s = seen_from_entry(e)
        expected[path] = Seen(s.kind, s.mode, s.size, s.digest, s.target, s.rdev, c.owners.get(path, (0, 0)))
    return expected


def _seen(n: Node, digest: bytes | None = None) -> Seen:
    return Seen(n.kind, n.mode, n.size, digest=digest, target=n.target, rdev=n.rdev, owner=(n.uid, n.gid))


@dataclass
class SquashPrefetch:
    """The system image walked, and its files being hashed by helper processes while checks 3, 5 and 6 run."""

    read: SquashRead
    pending: Pending[list[tuple[int, bytes | str]]]

    @classmethod
    def start(cls, r: IsoRead, recorded: Recorded, *, workers: int | None = None) -> SquashPrefetch | None:
        """Start hashing; None when the image cannot be read (check 4 then reads it itself and says why)."""
        try:
            sq = read_squashfs(r, recorded)
        except VerificationError:
            return None
        parts = shard(sq.image, sq.files, workers if workers is not None else available_cpus())
        return cls(sq, start_shards(parts, lambda part: _hash_shard(sq.image, sq.files, part)))


def check_squashfs(r: IsoRead, recorded: Recorded, *, workers: int | None = None,
                   prefetch: SquashPrefetch | None = None) -> str:
    """Check 4: the squashfs system image equals the recorded system tree, owners and make-up included."""
    seq, c = r.iso_seq, r.contents
    try:
        if prefetch is not None:
            sq = prefetch.read
            results = prefetch.pending.collect()
        else:
            sq = read_squashfs(r, recorded)
            parts = shard(sq.image, sq.files, workers if workers is not None else available_cpus())
            results = run_shards(parts, lambda part: _hash_shard(sq.image, sq.files, part))
        made = _make_up(sq.image, c)
    except ImageError as exc:
        raise VerificationError(str(exc), check="squashfs", record=seq) from None
    digests: dict[int, bytes] = {}
    problems: list[str] = []
    for part in results:
        for i, digest in part:
            n = sq.files[i]
            if isinstance(digest, str):
                problems.append(f"/{os.fsdecode(n.path)}: {digest}")
            else:
                digests[n.ref] = digest
    found: dict[bytes, Seen] = {}
    xattrs: list[str] = []
    for n in sq.nodes:
        found[n.path] = _seen(n, digests.get(n.ref) if n.kind == "f" else None)
        if n.xattrs:
            xattrs.append(f"/{os.fsdecode(n.path)}: extended attributes present, none recorded")
    problems = sorted(set(problems) | set(differences(_expected(sq.tree, c), found)))
    problems = made + problems + xattrs + _links(sq.nodes, c)
    if problems:
        raise VerificationError(summary(problems, f"the squashfs {sq.where} (paths relative to its root)"),
                                check="squashfs", record=seq)
    files = [n for n in sq.nodes if n.kind == "f"]
    total = sum(n.size for n in files)
    owned = sum(1 for n in sq.nodes if (n.uid, n.gid) != (0, 0))
    links = f", hard links ({len(c.links)} groups)" if c.links is not None else ""
    return (f"{sq.where} ({sq.image.compression}, as recorded): {len(sq.nodes)} paths ({len(files)} files, "
            f"{total} bytes) = recorded tree {os.fsdecode(c.squashfs_tree)}: types, modes incl. set-id bits, "
            f"owners ({owned} not 0:0), sizes, digests, symlink targets, device numbers{links}")


def flag_names(flags: int) -> str:
    """The superblock flags as words."""
    return ", ".join(name for bit, name in _FLAGS.items() if flags & bit) or "none"


def _make_up(image: SquashImage, c: IsoContents) -> list[str]:
    """How the image was made, against what the ``iso`` step recorded."""
    out: list[str] = []
    if image.compression != c.compression:
        out.append(f"compressor {image.compression} found, {c.compression} recorded (the image was re-made)")
    if c.squashfs_block_size is not None and image.block_size != c.squashfs_block_size:
        out.append(f"block size {image.block_size} found, {c.squashfs_block_size} recorded")
    if c.squashfs_flags is not None and image.flags != c.squashfs_flags:
        out.append(f"superblock flags {image.flags:#06x} ({flag_names(image.flags)}) found, "
                   f"{c.squashfs_flags:#06x} ({flag_names(c.squashfs_flags)}) recorded")
    if c.squashfs_options is not None and not out:
        options = image.compressor_options()
        if options != c.squashfs_options:
            out.append(f"compressor options {options.hex() or 'none'} found, {c.squashfs_options.hex() or 'none'} "
                       f"recorded")
    return out


def link_groups(nodes: list[Node]) -> set[tuple[bytes, ...]]:
    """The paths that share one file inode (hard links), each group sorted."""
    groups: dict[int, list[bytes]] = {}
    for n in nodes:
        if n.kind != "d":
            groups.setdefault(n.ref, []).append(n.path)
    return {tuple(sorted(paths)) for paths in groups.values() if len(paths) > 1}


def _links(nodes: list[Node], c: IsoContents) -> list[str]:
    if c.links is None:  # a version-1 record lists no groups
        return []
    found = link_groups(nodes)
    recorded = set(c.links)
    out = [f"hard links {' = '.join('/' + os.fsdecode(p) for p in g)} recorded, not one inode in the image"
           for g in sorted(recorded - found)]
    out += [f"hard links {' = '.join('/' + os.fsdecode(p) for p in g)} in the image (one inode), not recorded"
            for g in sorted(found - recorded)]
    return out
