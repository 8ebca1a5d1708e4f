"""A read-only HFS+ catalog reader: the paths an HFS+ tree in a hybrid ISO holds (xorriso's ``-hfsplus``,
which ``grub-mkrescue`` writes for Macs), each with where its data fork starts in the image.

Only what check 3 needs: the volume header, the catalog file's B-tree leaf nodes (followed once each,
in their forward-link order) and its folder and file records. Hostile images: the catalog is bounded
(:data:`MAX_CATALOG`), every node is read once, names are at most 255 UTF-16 units, paths follow
:class:`~asl_capture.audit.limits.Limits`, and every problem raises
:class:`~asl_capture.errors.ImageError` with one line.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from asl_capture.audit.limits import Limits
from asl_capture.errors import ImageError
from asl_capture.frozen import frozen

MAX_CATALOG = 64 << 20
_ROOT = 2
GPT_HFSPLUS = bytes.fromhex("005346480000aa11aa1100306543ecac")


@frozen
class HfsNode:
    """One path of the HFS+ tree: ``kind`` ``d`` or ``f``; ``start``: byte offset of a file's data fork
    in the image (None when empty), ``size`` its logical size."""

    path: bytes
    kind: str
    size: int
    start: int | None


def find_hfsplus(read: Callable[[int, int], bytes], size: int) -> int | None:
    """Byte offset of an HFS+ volume in the image, from the GPT partition table in the system area (or
    None). ``read(pos, n)`` reads the image."""
    header = read(512, 92)
    if header[:8] != b"EFI PART":
        return None
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if not 128 <= entry_size <= 1024 or count > 1024 or entries_lba * 512 + count * entry_size > size:
        raise ImageError(f"absurd GPT partition array ({count} entries of {entry_size} bytes at LBA {entries_lba})")
    table = read(entries_lba * 512, count * entry_size)
    for i in range(count):
        entry = table[i * entry_size:(i + 1) * entry_size]
        if entry[:16] == GPT_HFSPLUS:
            (first,) = struct.unpack_from("<Q", entry, 32)
            if first * 512 + 2048 > size:
                raise ImageError("the GPT's HFS+ partition starts beyond the end of the image")
            return int(first * 512)
    return None


def walk_hfsplus(read: Callable[[int, int], bytes], base: int, limits: Limits) -> list[HfsNode]:
    """Every folder and file of the HFS+ volume at byte ``base`` (the root folder is ``.``).

    Raises:
        ImageError: not HFS+, corrupt, or beyond ``limits``.
    """
    vh = read(base + 1024, 512)
    if vh[:2] not in (b"H+", b"HX"):
        raise ImageError("no HFS+ volume header where the partition table puts one")
    (block_size,) = struct.unpack_from(">I", vh, 40)
    if block_size < 512 or block_size & (block_size - 1) or block_size > 1 << 20:
        raise ImageError(f"HFS+ block size {block_size} is absurd")
    (logical,) = struct.unpack_from(">Q", vh, 0x110)
    if logical > MAX_CATALOG:
        raise ImageError(f"HFS+ catalog of {logical} bytes refused")
    extents = struct.unpack_from(">16I", vh, 0x110 + 16)
    catalog = bytearray()
    for i in range(8):
        start, count = extents[2 * i], extents[2 * i + 1]
        if count and len(catalog) < logical:
            catalog += read(base + start * block_size, min(count * block_size, logical - len(catalog)))
    if len(catalog) < logical or logical < 512:
        raise ImageError("HFS+ catalog is shorter than its header says (more than 8 extents, or truncated)")
    (node_size,) = struct.unpack_from(">H", catalog, 14 + 18)
    if node_size < 512 or node_size & (node_size - 1) or node_size > len(catalog):
        raise ImageError(f"HFS+ catalog node size {node_size} is absurd")
    (first_leaf,) = struct.unpack_from(">I", catalog, 14 + 10)
    folders: dict[int, tuple[int, bytes]] = {}  # folder id -> (parent id, name)
    items: list[tuple[int, bytes, str, int, int | None]] = []
    seen: set[int] = set()
    node = first_leaf
    while node:
        if node in seen or (node + 1) * node_size > len(catalog):
            raise ImageError(f"HFS+ catalog leaf chain revisits or leaves the catalog at node {node}")
        seen.add(node)
        buf = bytes(catalog[node * node_size:(node + 1) * node_size])
        flink, _blink, kind, _height, nrec = struct.unpack_from(">IIbBH", buf, 0)
        if kind != -1:
            raise ImageError(f"HFS+ catalog node {node} on the leaf chain is not a leaf")
        for r in range(nrec):
            (off,) = struct.unpack_from(">H", buf, node_size - 2 * (r + 1))
            if off + 8 > node_size:
                raise ImageError(f"HFS+ catalog record outside node {node}")
            key_len, parent, name_len = struct.unpack_from(">HIH", buf, off)
            if name_len > 255 or off + 8 + 2 * name_len > node_size:
                raise ImageError(f"HFS+ catalog name of {name_len} units refused")
            name = buf[off + 8:off + 8 + 2 * name_len].decode("utf-16-be", "replace").replace(":", "/")
            data = off + 2 + key_len + ((2 + key_len) & 1)
            if data + 2 > node_size:
                raise ImageError(f"HFS+ catalog record outside node {node}")
            (rtype,) = struct.unpack_from(">h", buf, data)
            raw = os.fsencode(name)
            if rtype == 1 and data + 12 <= node_size:
                (cnid,) = struct.unpack_from(">I", buf, data + 8)
                folders[cnid] = (parent, raw)
                items.append((parent, raw, "d", cnid, None))
            elif rtype == 2 and data + 88 + 24 <= node_size:
                (size,) = struct.unpack_from(">Q", buf, data + 88)
                (first,) = struct.unpack_from(">I", buf, data + 88 + 16)
                items.append((parent, raw, "f", size, base + first * block_size if size else None))
            if len(items) > limits.max_paths:
                raise ImageError(f"more than {limits.max_paths} HFS+ catalog records: refused")
        node = flink
    return _paths(folders, items, limits)


def _paths(folders: dict[int, tuple[int, bytes]], items: list[tuple[int, bytes, str, int, int | None]],
           limits: Limits) -> list[HfsNode]:
    cache: dict[int, bytes] = {_ROOT: b""}

    def path_of(target: int) -> bytes:
        chain: list[int] = []
        cnid = target
        while cnid not in cache:
            if cnid not in folders or len(chain) > limits.max_path:
                raise ImageError(f"HFS+ folder {cnid} is not reachable from the root folder")
            chain.append(cnid)
            cnid = folders[cnid][0]
        for c in reversed(chain):
            parent = cache[folders[c][0]]
            cache[c] = (parent + b"/" if parent else b"") + folders[c][1]
            if len(cache[c]) > limits.max_path:
                raise ImageError(f"an HFS+ path longer than {limits.max_path} bytes: refused")
        return cache[target]

    out = [HfsNode(b".", "d", 0, None)]
    for parent, name, kind, value, start in items:
        if parent == 1:  # the root folder itself (its name is the volume name)
            continue
        prefix = path_of(parent)
        path = (prefix + b"/" if prefix else b"") + name
        out.append(HfsNode(path, kind, value if kind == "f" else 0, start))
    return out
