"""A read-only SquashFS 4.0 reader: metadata, ownership and file digests, without mounting or extracting.

Reads the superblock, the inode and directory tables (8 KiB metadata blocks), the id table and the
fragment table of an image that may sit at any offset inside another file (the ISO), and hashes
every regular file's bytes straight from its compressed blocks. Compressors: gzip (``zlib``), xz
(``lzma``), both from the standard library, and zstd (the ``zstandard`` package, imported only for
zstd images). Written here rather than taken from PyPI: ``dissect.squashfs`` is AGPL-licensed, and
nothing else on PyPI exposes owners, setuid bits, device numbers and symlink targets together.

Hostile images: every offset and length is checked against the image bounds, every decompressed
size against what the format allows (8 KiB metadata blocks, ``block_size`` data blocks), directory
cycles are refused, and the total metadata decompressed is capped (:data:`MAX_METADATA`), so a
header that claims gigabytes is refused instead of allocated. Every problem raises
:class:`~asl_capture.errors.ImageError` with one line naming it.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol

from asl_capture.errors import ImageError
from asl_capture.frozen import frozen

MAGIC = 0x73717368
SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
METADATA_SIZE = 8192
#: Cap on inode + directory metadata decompressed for one image (a Debian root needs ~2 MiB).
MAX_METADATA = 256 << 20
MAX_SYMLINK = 4096
NO_INDEX = 0xFFFFFFFF
_UNCOMPRESSED_BLOCK = 1 << 24
COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_FLAG_UNCOMPRESSED_IDS = 0x0800
_KIND = {1: "d", 2: "f", 3: "l", 4: "b", 5: "c", 6: "p", 7: "s"}
_HEADER = struct.Struct("<HHHHII")
_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


class FileData(NamedTuple):
    """Where a regular file's bytes are: consecutive blocks from ``start``, then a fragment tail."""

    start: int
    blocks: tuple[int, ...]
    fragment: int
    frag_offset: int
    size: int


@frozen
class Node:
    """One path of the image. ``size``: file size, symlink target length, else 0."""

    path: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    xattrs: bool = False
    data: FileData | None = None
    inode: int = 0


class _Stream(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


def _bounded(make: Callable[[], _Stream], error: type[Exception], name: str) -> Callable[[bytes, int], bytes]:
    """``decompress(raw, limit)`` through a fresh streaming decompressor of the standard library."""
    def decompress(raw: bytes, limit: int) -> bytes:
        d = make()
        try:
            out = d.decompress(raw, limit + 1)
        except error as exc:
            raise ImageError(f"corrupt {name} block: {exc}") from None
        if len(out) > limit:
            raise ImageError(f"{name} block expands beyond {limit} bytes")
        if not d.eof:
            raise ImageError(f"truncated {name} block")
        return out
    return decompress


def _decompressor(compressor: int) -> Callable[[bytes, int], bytes]:
    """``decompress(raw, limit)`` for the image's compressor; output longer than ``limit`` raises."""
    name = COMPRESSORS.get(compressor, f"#{compressor}")
    if name == "gzip":
        return _bounded(zlib.decompressobj, zlib.error, "gzip")
    if name == "xz":
        return _bounded(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ), lzma.LZMAError, "xz")
    if name == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ImageError("the squashfs image is zstd-compressed: install the 'zstandard' Python package "
                             "(pip install zstandard, or Debian's python3-zstandard)") from None
        dctx = zstandard.ZstdDecompressor()

        def zstd(raw: bytes, limit: int) -> bytes:
            try:
                claimed = zstandard.frame_content_size(raw)
                if claimed > limit:
                    raise ImageError(f"zstd block claims {claimed} bytes, more than {limit}")
                out: bytes = dctx.decompress(raw, max_output_size=limit)
            except zstandard.ZstdError as exc:
                raise ImageError(f"corrupt zstd block: {exc}") from None
            if len(out) > limit:
                raise ImageError(f"zstd block expands beyond {limit} bytes")
            return out
        return zstd
    raise ImageError(f"squashfs compressor {name} is not supported (gzip, xz and zstd are)")


class SquashImage:
    """A squashfs image at ``offset`` (``length`` bytes) of the open file ``fd``."""

    def __init__(self, fd: int, *, offset: int = 0, length: int | None = None, name: str = "squashfs") -> None:
        self.fd = fd
        self.base = offset
        self.name = name
        if length is None:
            length = os.fstat(fd).st_size - offset
        self.length = length
        raw = self._pread(0, SUPERBLOCK.size)
        (magic, self.inode_count, _mtime, self.block_size, self.frag_count, self.compressor, block_log,
         self.flags, self.id_count, major, minor, self.root_ref, self.bytes_used, self.id_table,
         self.xattr_table, self.inode_table, self.dir_table, self.frag_table, _export) = SUPERBLOCK.unpack(raw)
        if magic != MAGIC:
            raise ImageError(f"{name}: not a squashfs image (bad magic)")
        if (major, minor) != (4, 0):
            raise ImageError(f"{name}: squashfs version {major}.{minor} is not 4.0")
        if not 4096 <= self.block_size <= 1 << 20 or self.block_size != 1 << block_log:
            raise ImageError(f"{name}: absurd block size {self.block_size} (log {block_log})")
        if self.bytes_used > length:
            raise ImageError(f"{name}: truncated: the superblock says {self.bytes_used} bytes, "
                             f"{length} are there")
        for what, start in (("inode table", self.inode_table), ("directory table", self.dir_table),
                            ("id table", self.id_table)):
            if not SUPERBLOCK.size <= start < self.bytes_used:
                raise ImageError(f"{name}: {what} offset {start} lies outside the image")
        if self.inode_table >= self.dir_table:
            raise ImageError(f"{name}: inode table does not precede the directory table")
        if self.inode_count == 0 or self.inode_count > self.bytes_used:
            raise ImageError(f"{name}: absurd inode count {self.inode_count}")
        self.decompress = _decompressor(self.compressor)
        self._meta_budget = MAX_METADATA
        self._meta: dict[int, tuple[bytes, int]] = {}
        self._frag_cache: tuple[int, bytes] | None = None
        self.ids = self._read_ids()

    @property
    def compression(self) -> str:
        return COMPRESSORS.get(self.compressor, f"#{self.compressor}")

    # -- raw access ------------------------------------------------------------------------------
    def _pread(self, pos: int, n: int) -> bytes:
        if pos < 0 or n < 0 or pos + n > self.length:
            raise ImageError(f"{self.name}: read of {n} bytes at offset {pos} runs past the end of the image "
                             f"({self.length} bytes): truncated or corrupt")
        try:
            data = os.pread(self.fd, n, self.base + pos)
        except OSError as exc:
            raise ImageError(f"{self.name}: cannot read: {exc.strerror}") from None
        if len(data) != n:
            raise ImageError(f"{self.name}: truncated at offset {pos}")
        return data

    def _metablock(self, pos: int) -> tuple[bytes, int]:
        """The decompressed metadata block at absolute image offset ``pos`` and the next block's offset."""
        cached = self._meta.get(pos)
        if cached is not None:
            return cached
        (header,) = _U16.unpack(self._pread(pos, 2))
        size = header & 0x7FFF
        if size == 0 or size > METADATA_SIZE:
            raise ImageError(f"{self.name}: corrupt metadata block header at offset {pos}")
        raw = self._pread(pos + 2, size)
        data = raw if header & 0x8000 else self.decompress(raw, METADATA_SIZE)
        if not data:
            raise ImageError(f"{self.name}: empty metadata block at offset {pos}")
        self._meta_budget -= len(data)
        if self._meta_budget < 0:
            raise ImageError(f"{self.name}: metadata exceeds {MAX_METADATA >> 20} MiB: refused")
        entry = (data, pos + 2 + size)
        self._meta[pos] = entry
        return entry

    def _meta_read(self, table: int, block: int, offset: int, n: int) -> tuple[bytes, int, int]:
        """``n`` bytes of a metadata table from (``block``, ``offset``); returns them and the position after."""
        parts: list[bytes] = []
        need = n
        while True:
            data, nxt = self._metablock(table + block)
            if offset > len(data):
                raise ImageError(f"{self.name}: metadata offset {offset} beyond its block")
            piece = data[offset:offset + need]
            parts.append(piece)
            need -= len(piece)
            offset += len(piece)
            if need == 0:
                return b"".join(parts), block, offset
            block, offset = nxt - table, 0
            if table + block >= self.bytes_used:
                raise ImageError(f"{self.name}: metadata runs past the end of the image")

    def _read_ids(self) -> tuple[int, ...]:
        if self.id_count == 0:
            raise ImageError(f"{self.name}: the id table is empty")
        count = (self.id_count * 4 + METADATA_SIZE - 1) // METADATA_SIZE
        pointers = struct.unpack(f"<{count}Q", self._pread(self.id_table, 8 * count))
        raw = bytearray()
        for ptr in pointers:
            if not SUPERBLOCK.size <= ptr < self.bytes_used:
                raise ImageError(f"{self.name}: id table block outside the image")
            raw += self._metablock(ptr)[0]
        if len(raw) < self.id_count * 4:
            raise ImageError(f"{self.name}: id table is short")
        return struct.unpack(f"<{self.id_count}I", bytes(raw[: self.id_count * 4]))

    def _owner(self, index: int) -> int:
        if index >= len(self.ids):
            raise ImageError(f"{self.name}: owner index {index} outside the id table")
        return self.ids[index]

    # -- inodes and directories ------------------------------------------------------------------
    def _inode(self, ref: int, path: bytes) -> tuple[Node, tuple[int, int, int] | None]:
        """The inode at ``ref``; for a directory also (listing block, offset, size)."""
        block, offset = ref >> 16, ref & 0xFFFF
        if offset >= METADATA_SIZE or self.inode_table + block >= self.dir_table:
            raise ImageError(f"{self.name}: /{os.fsdecode(path)}: inode reference outside the inode table")
        t = self.inode_table
        head, block, offset = self._meta_read(t, block, offset, _HEADER.size)
        itype, perm, uid_i, gid_i, _mtime, number = _HEADER.unpack(head)

        def take(n: int) -> bytes:
            nonlocal block, offset
            data, block, offset = self._meta_read(t, block, offset, n)
            return data

        basic = itype if itype <= 7 else itype - 7
        kind = _KIND.get(basic)
        if kind is None or itype > 14:
            raise ImageError(f"{self.name}: /{os.fsdecode(path)}: unknown inode type {itype}")
        extended = itype > 7
        mode = perm & 0o7777
        uid, gid = self._owner(uid_i), self._owner(gid_i)
        xattr = NO_INDEX
        listing: tuple[int, int, int] | None = None
        if kind == "d":
            if extended:
                _links, size, start, _parent, index_count, boff, xattr = struct.unpack("<IIIIHHI", take(24))
                for _ in range(index_count):  # directory index: skip it
                    _i, _s, name_size = struct.unpack("<III", take(12))
                    take(name_size + 1)
            else:
                start, _links, size, boff, _parent = struct.unpack("<IIHHI", take(16))
            if size < 3:
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory size {size} is impossible")
            listing = (start, boff, size - 3)
            node = Node(path, kind, mode, uid, gid, 0, inode=number)
        elif kind == "f":
            if extended:
                start, fsize, _sparse, _links, frag, foff, xattr = struct.unpack("<QQQIIII", take(40))
            else:
                start, frag, foff, fsize = struct.unpack("<IIII", take(16))
            bs = self.block_size
            count = fsize // bs if frag != NO_INDEX else (fsize + bs - 1) // bs
            if count * 4 > self.bytes_used:
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: file size {fsize} is absurd")
            blocks = struct.unpack(f"<{count}I", take(4 * count)) if count else ()
            if frag != NO_INDEX and (frag >= self.frag_count or foff >= bs):
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: fragment {frag} outside the fragment table")
            node = Node(path, kind, mode, uid, gid, fsize, data=FileData(start, blocks, frag, foff, fsize),
                        inode=number)
        elif kind == "l":
            _links, tsize = struct.unpack("<II", take(8))
            if tsize == 0 or tsize > MAX_SYMLINK:
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: symlink target of {tsize} bytes refused")
            target = take(tsize)
            if extended:
                (xattr,) = _U32.unpack(take(4))
            node = Node(path, kind, mode, uid, gid, tsize, target=target, inode=number)
        elif kind in ("b", "c"):
            _links, dev = struct.unpack("<II", take(8))
            if extended:
                (xattr,) = _U32.unpack(take(4))
            major, minor = (dev >> 8) & 0xFFF, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
            node = Node(path, kind, mode, uid, gid, 0, rdev=(major, minor), inode=number)
        else:
            take(4)
            if extended:
                (xattr,) = _U32.unpack(take(4))
            node = Node(path, kind, mode, uid, gid, 0, inode=number)
        if xattr != NO_INDEX:
            node = Node(node.path, node.kind, node.mode, node.uid, node.gid, node.size, node.target, node.rdev,
                        True, node.data, node.inode)
        return node, listing

    def _listing(self, start: int, offset: int, size: int, path: bytes) -> list[tuple[bytes, int]]:
        """(name, inode ref) of each entry of a directory listing."""
        if size == 0:
            return []
        if self.dir_table + start >= self.bytes_used or offset >= METADATA_SIZE:
            raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory listing outside the directory table")
        raw, _b, _o = self._meta_read(self.dir_table, start, offset, size)
        out: list[tuple[bytes, int]] = []
        seen: set[bytes] = set()
        pos = 0
        while pos < size:
            if pos + 12 > size:
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: truncated directory header")
            count, iblock, _base = struct.unpack_from("<III", raw, pos)
            pos += 12
            if count >= 256:
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory header claims {count + 1} entries")
            for _ in range(count + 1):
                if pos + 8 > size:
                    raise ImageError(f"{self.name}: /{os.fsdecode(path)}: truncated directory entry")
                ioff, _delta, _type, nsize = struct.unpack_from("<HhHH", raw, pos)
                pos += 8
                name = raw[pos:pos + nsize + 1]
                pos += nsize + 1
                if len(name) != nsize + 1 or pos > size:
                    raise ImageError(f"{self.name}: /{os.fsdecode(path)}: truncated directory entry name")
                if name in (b".", b"..") or b"/" in name or b"\0" in name:
                    raise ImageError(f"{self.name}: /{os.fsdecode(path)}: invalid name {name!r} in directory")
                if name in seen:
                    raise ImageError(f"{self.name}: /{os.fsdecode(path)}: name {os.fsdecode(name)!r} appears twice")
                seen.add(name)
                out.append((name, (iblock << 16) | ioff))
        return out

    def walk(self) -> list[Node]:
        """Every path of the image (the root is ``.``), in no particular order.

        Raises:
            ImageError: the image is corrupt, truncated, cyclic or claims absurd sizes.
        """
        root, listing = self._inode(self.root_ref, b".")
        if root.kind != "d" or listing is None:
            raise ImageError(f"{self.name}: the root inode is not a directory")
        out = [root]
        visited = {self.root_ref}
        stack: list[tuple[bytes, tuple[int, int, int]]] = [(b"", listing)]
        while stack:
            prefix, (start, offset, size) = stack.pop()
            for name, ref in self._listing(start, offset, size, prefix or b"."):
                path = prefix + name
                node, sub = self._inode(ref, path)
                out.append(node)
                if sub is not None:
                    if ref in visited:
                        raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory cycle")
                    visited.add(ref)
                    stack.append((path + b"/", sub))
                if len(out) > self.inode_count * 64:
                    raise ImageError(f"{self.name}: more paths than {self.inode_count} inodes can hold")
        return out

    # -- file data -------------------------------------------------------------------------------
    def _fragment(self, index: int) -> bytes:
        if self._frag_cache is not None and self._frag_cache[0] == index:
            return self._frag_cache[1]
        entry_pos = index * 16
        (ptr,) = _U64.unpack(self._pread(self.frag_table + 8 * (entry_pos // METADATA_SIZE), 8))
        if not SUPERBLOCK.size <= ptr < self.bytes_used:
            raise ImageError(f"{self.name}: fragment table block outside the image")
        block, _nxt = self._metablock(ptr)
        within = entry_pos % METADATA_SIZE
        if within + 16 > len(block):
            raise ImageError(f"{self.name}: fragment entry {index} beyond its table block")
        start, size, _unused = struct.unpack_from("<QII", block, within)
        data = self._block(start, size)
        self._frag_cache = (index, data)
        return data

    def _block(self, pos: int, word: int) -> bytes:
        size = word & (_UNCOMPRESSED_BLOCK - 1)
        if word & ~(_UNCOMPRESSED_BLOCK | (_UNCOMPRESSED_BLOCK - 1)):
            raise ImageError(f"{self.name}: corrupt block size word {word:#x}")
        if size > self.block_size + (self.block_size >> 4) + 64:
            raise ImageError(f"{self.name}: data block of {size} bytes is larger than a block can be")
        raw = self._pread(pos, size)
        return raw if word & _UNCOMPRESSED_BLOCK else self.decompress(raw, self.block_size)

    def file_chunks(self, data: FileData) -> Iterator[bytes]:
        """A regular file's bytes, decompressed block by block, in order.

        Raises:
            ImageError: a block is missing, corrupt, or decompresses to the wrong size.
        """
        remaining = data.size
        pos = data.start
        bs = self.block_size
        for word in data.blocks:
            want = min(bs, remaining)
            if word == 0:  # a sparse block: zeros
                yield bytes(want)
            else:
                block = self._block(pos, word)
                pos += word & (_UNCOMPRESSED_BLOCK - 1)
                if len(block) != want:
                    raise ImageError(f"{self.name}: data block at offset {pos} holds {len(block)} bytes, "
                                     f"expected {want}")
                yield block
            remaining -= want
        if data.fragment != NO_INDEX:
            frag = self._fragment(data.fragment)
            tail = frag[data.frag_offset:data.frag_offset + remaining]
            if len(tail) != remaining:
                raise ImageError(f"{self.name}: fragment {data.fragment} is shorter than the file's tail")
            yield tail
        elif remaining:
            raise ImageError(f"{self.name}: file blocks hold fewer bytes than its size")

    def file_digest(self, data: FileData) -> bytes:
        """SHA-256 of a regular file's bytes (:meth:`file_chunks`).

        Raises:
            ImageError: a block is missing, corrupt, or decompresses to the wrong size.
        """
        h = hashlib.sha256()
        for chunk in self.file_chunks(data):
            h.update(chunk)
        return h.digest()

    def cost(self, data: FileData) -> int:
        """Work to hash a file's own blocks, for spreading it over processes: decompression time follows
        the bytes it produces, so the uncompressed size of its blocks (a fragment is counted once per
        group, by :func:`shard`)."""
        return int(len(data.blocks) * self.block_size) + 256


def shard(image: SquashImage, files: Sequence[Node], parts: int) -> list[list[int]]:
    """Split file indexes into ``parts`` groups of similar work (bytes to decompress): every
    file whose tail lies in a fragment goes with the other files of that fragment, which is then
    decompressed once per group and counted once."""
    groups: dict[int, list[int]] = {}
    costs: dict[int, int] = {}
    for i, node in enumerate(files):
        assert node.data is not None
        frag = node.data.fragment
        key = -1 - frag if frag != NO_INDEX else i  # fragment groups get negative keys
        if key not in groups:
            groups[key] = []
            costs[key] = image.block_size if frag != NO_INDEX else 0
        groups[key].append(i)
        costs[key] += image.cost(node.data)
    out: list[list[int]] = [[] for _ in range(max(1, parts))]
    load = [0] * len(out)
    for key in sorted(groups, key=lambda k: (-costs[k], k)):
        target = load.index(min(load))
        out[target].extend(groups[key])
        load[target] += costs[key]
    for part in out:  # fragment order within a part, so the one-entry fragment cache hits
        part.sort(key=lambda i: (_fragment_of(files[i]), i))
    return out


def _fragment_of(node: Node) -> int:
    return node.data.fragment if node.data is not None else NO_INDEX
