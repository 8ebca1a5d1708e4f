"""What an ISO holds beside its Rock Ridge file tree, read so check 3 can name what changed there.

- every volume descriptor of the set at sector 16 (and, beyond the recorded end, another session's);
- the El Torito boot catalog and each image it loads (the ISO file at its load sector, its bytes);
- the other directory trees: Joliet and HFS+ (``grub-mkrescue`` writes HFS+ for Macs); every name they
  hold must be a Rock Ridge path whose data is the same extent;
- regions of bytes that are no file's data: the metadata between files (directories, path tables,
  descriptors, boot catalog, HFS+ catalog), the tail after the last file (padding, backup GPT), and the
  backup GPT that the primary GPT header names.

:func:`read_layout` is what ``pipeline/tools/isocontents.py`` records (ISO-contents version 2) and what
check 3 compares it with (:func:`layout_problems`); :func:`tree_problems` needs no record.
"""

from __future__ import annotations

import hashlib
import os
import struct

from asl_capture.audit.hfsplus import HfsNode, find_hfsplus, walk_hfsplus
from asl_capture.audit.iso9660 import SECTOR, SYSTEM_AREA, IsoImage, IsoNode
from asl_capture.audit.limits import Limits
from asl_capture.audit.recorded import BootImage, Layout

#: Bytes after the recorded end of the image scanned for another session's volume descriptors.
SESSION_SCAN = 4 << 20
_VD_NAMES = {0: "boot record", 1: "primary", 2: "supplementary", 3: "partition", 255: "terminator"}
_PLATFORMS = {0: "BIOS", 1: "PowerPC", 2: "Mac", 0xEF: "UEFI"}
_EMULATION = {0: "no emulation", 1: "1.2M floppy", 2: "1.44M floppy", 3: "2.88M floppy", 4: "hard disk"}


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _available(image: IsoImage, start: int, length: int) -> bytes:
    """The bytes of [start, start+length) that the image has (fewer when it ends first)."""
    end = min(start + length, image.size)
    return image.read(start, end - start) if end > start else b""


def boot_catalog(image: IsoImage, nodes: dict[bytes, IsoNode]) -> tuple[tuple[int, bytes] | None,
                                                                            tuple[BootImage, ...]]:
    """The El Torito catalog (sector, SHA-256) and its entries, or (None, ()).

    Raises:
        ImageError: the catalog lies outside the image.
    """
    record = next((vd for _s, kind, vd in image.descriptors if kind == 0 and vd[7:30] == b"EL TORITO SPECIFICATION"),
                  None)
    if record is None:
        return None, ()
    (sector,) = struct.unpack_from("<I", record, 71)
    cat = image.read(sector * SECTOR, SECTOR)
    starts = {n.extents[0][0]: path for path, n in nodes.items() if n.kind == "f" and n.extents}
    entries: list[tuple[int, bytes]] = []
    if cat[0] == 1 and cat[30:32] == b"\x55\xaa":
        entries.append((cat[1], cat[32:64]))
        pos = 64
        while pos + 32 <= SECTOR and cat[pos] in (0x90, 0x91):
            platform, (count,) = cat[pos + 1], struct.unpack_from("<H", cat, pos + 2)
            final = cat[pos] == 0x91
            pos += 32
            for _ in range(count):
                if pos + 32 > SECTOR:
                    break
                entries.append((platform, cat[pos:pos + 32]))
                pos += 32
            if final:
                break
    images = []
    for platform, e in entries:
        (sectors,) = struct.unpack_from("<H", e, 6)
        (rba,) = struct.unpack_from("<I", e, 8)
        loaded = _available(image, rba * SECTOR, max(1, sectors) * 512)
        images.append(BootImage(platform, e[1] & 0x0F, rba, sectors, starts.get(rba * SECTOR, b""), _sha(loaded)))
    return (sector, _sha(cat)), tuple(images)


def _regions(image: IsoImage, nodes: dict[bytes, IsoNode], size: int) -> tuple[tuple[str, int, int, bytes], ...]:
    extents = sorted((s, n) for node in nodes.values() if node.kind == "f" for s, n in node.extents if n)
    end = max((s + n for s, n in extents), default=SYSTEM_AREA)
    end = -(-end // SECTOR) * SECTOR
    h = hashlib.sha256()
    pos = SYSTEM_AREA
    for start, length in [*extents, (end, 0)]:
        if start > pos:
            h.update(_available(image, pos, start - pos))
        pos = max(pos, start + length)
    out = [("metadata between the files (directories, path tables, descriptors, boot catalog, HFS+ catalog)",
            SYSTEM_AREA, end - SYSTEM_AREA, h.digest()),
           ("tail after the last file (padding, backup GPT)", end, max(0, size - end),
            _sha(_available(image, end, max(0, size - end))))]
    header = image.read(512, 92)
    if header[:8] == b"EFI PART":
        (alternate,) = struct.unpack_from("<Q", header, 32)
        count, entry_size = struct.unpack_from("<II", header, 80)
        array = min(count * entry_size, 1 << 20)
        start = alternate * 512 - array
        out.append(("backup GPT (its partition array and header, where the primary GPT header puts it)", start,
                    array + 512, _sha(_available(image, start, array + 512))))
    return tuple(out)


def trees(image: IsoImage, limits: Limits) -> tuple[tuple[str, ...], list[tuple[bytes, str, int, int]],
                                                     list[HfsNode]]:
    """The directory trees the image carries, its Joliet paths and its HFS+ paths."""
    names = ["iso9660"] + (["rockridge"] if image.rock_ridge else [])
    joliet = image.joliet(limits)
    if joliet:
        names.append("joliet")
    base = find_hfsplus(image.read, image.size)
    hfs = walk_hfsplus(image.read, base, limits) if base is not None else []
    if hfs:
        names.append("hfsplus")
    return tuple(names), joliet, hfs


def read_layout(image: IsoImage, nodes: dict[bytes, IsoNode], size: int, limits: Limits,
                ) -> tuple[Layout, list[tuple[bytes, str, int, int]], list[HfsNode]]:
    """The layout of an image of ``size`` bytes (read no further than ``image.size``), with its Joliet
    and HFS+ trees.

    Raises:
        ImageError: a part of it is corrupt or beyond ``limits``.
    """
    names, joliet, hfs = trees(image, limits)
    catalog, boot = boot_catalog(image, nodes)
    descriptors = tuple((s, kind, _sha(vd)) for s, kind, vd in image.descriptors)
    return Layout(size=size, descriptors=descriptors, catalog=catalog, boot=boot, trees=names,
                  regions=_regions(image, nodes, size)), joliet, hfs


def tree_problems(nodes: dict[bytes, IsoNode], joliet: list[tuple[bytes, str, int, int]],
                  hfs: list[HfsNode]) -> list[str]:
    """Each Joliet or HFS+ name that is not a Rock Ridge path of the same type and data."""
    out: list[str] = []
    for path, kind, start, size in joliet:
        node = nodes.get(path)
        if node is None or (node.kind == "d") != (kind == "d"):
            out.append(f"Joliet /{os.fsdecode(path)}: not in the Rock Ridge tree")
        elif kind == "f" and (node.size != size or (size and node.extents[0][0] != start)):
            out.append(f"Joliet /{os.fsdecode(path)}: other bytes than the Rock Ridge file")
    for h in hfs:
        node = nodes.get(h.path)
        if node is None or (node.kind == "d") != (h.kind == "d"):
            out.append(f"HFS+ /{os.fsdecode(h.path)}: not in the Rock Ridge tree")
        elif h.kind == "f" and (node.size != h.size or (h.start is not None and node.extents[0][0] != h.start)):
            out.append(f"HFS+ /{os.fsdecode(h.path)}: other bytes than the Rock Ridge file")
    return out


def _boot_name(i: int, b: BootImage) -> str:
    return (f"El Torito image {i + 1} ({_PLATFORMS.get(b.platform, hex(b.platform))}, "
            f"{_EMULATION.get(b.emulation, 'emulation ' + str(b.emulation))})")


def layout_problems(found: Layout, want: Layout, fd: int, recorded_size: int) -> list[str]:
    """What differs between the image's layout and the recorded one, one line each."""
    out: list[str] = []
    if found.size != want.size:
        out.append(f"the image is {found.size} bytes, {want.size} recorded"
                   + (": truncated" if found.size < want.size else f": {found.size - want.size} bytes appended"))
    if found.size > recorded_size:
        out.extend(_sessions(fd, recorded_size, min(found.size, recorded_size + SESSION_SCAN)))
    have = {s: (k, d) for s, k, d in found.descriptors}
    for s, k, d in want.descriptors:
        name = f"volume descriptor at sector {s} ({_VD_NAMES.get(k, k)})"
        if s not in have:
            out.append(f"{name}: recorded, missing")
        elif have[s] != (k, d):
            out.append(f"{name}: differs" + (f" (type {have[s][0]} found)" if have[s][0] != k else ""))
    for s, k, _d in found.descriptors[len(want.descriptors):]:
        out.append(f"volume descriptor at sector {s} ({_VD_NAMES.get(k, k)}): present, not recorded")
    if (found.catalog is None) != (want.catalog is None) or (found.catalog and want.catalog
                                                              and found.catalog[1] != want.catalog[1]):
        out.append(f"El Torito boot catalog: {_catalog(found.catalog)} found, {_catalog(want.catalog)} recorded")
    for i in range(max(len(found.boot), len(want.boot))):
        f = found.boot[i] if i < len(found.boot) else None
        w = want.boot[i] if i < len(want.boot) else None
        if f is not None and w is not None and _same_boot(f, w):
            continue
        if f is None or w is None:
            b = f or w
            assert b is not None
            out.append(f"{_boot_name(i, b)}: {'present, not recorded' if w is None else 'recorded, missing'}")
        elif f.path != w.path or (not w.path and f.rba != w.rba):
            out.append(f"{_boot_name(i, w)}: loads {_where(f)} found, {_where(w)} recorded: the boot image was "
                       f"swapped")
        else:
            out.append(f"{_boot_name(i, w)}: {f.sectors} sectors at sector {f.rba}, sha256 {f.sha256.hex()[:16]}... "
                       f"found, {w.sectors} sectors, sha256 {w.sha256.hex()[:16]}... recorded")
    if found.trees != want.trees:
        extra = sorted(set(found.trees) - set(want.trees))
        gone = sorted(set(want.trees) - set(found.trees))
        out.append("directory trees: " + "; ".join([f"{t} present, not recorded" for t in extra]
                                                   + [f"{t} recorded, missing" for t in gone]))
    regions = {name: (start, length, digest) for name, start, length, digest in found.regions}
    for name, start, length, digest in want.regions:
        got = regions.get(name)
        if got == (start, length, digest):
            continue
        span = f"bytes {start}..{start + length}"
        if start + length > found.size:
            out.append(f"{name} ({span}): beyond the end of the image ({found.size} bytes): truncated")
        else:
            out.append(f"{name} ({span}): differs")
    return out


def _same_boot(f: BootImage, w: BootImage) -> bool:
    """The same image loaded the same way (a file moved by a rewrite keeps its path and bytes)."""
    same = (f.platform, f.emulation, f.sectors, f.path, f.sha256) == (w.platform, w.emulation, w.sectors, w.path,
                                                                      w.sha256)
    return same and (bool(w.path) or f.rba == w.rba)


def _catalog(c: tuple[int, bytes] | None) -> str:
    return "none" if c is None else f"sector {c[0]} sha256 {c[1].hex()[:16]}..."


def _where(b: BootImage) -> str:
    return f"/{os.fsdecode(b.path)}" if b.path else f"sector {b.rba} (no file)"


def _sessions(fd: int, start: int, end: int) -> list[str]:
    """Volume descriptors of another session in [start, end) (a bounded scan past the recorded end)."""
    first = -(-start // SECTOR)
    for sector in range(first, end // SECTOR):
        try:
            vd = os.pread(fd, 8, sector * SECTOR)
        except OSError:
            return []
        if vd[1:6] == b"CD001" and vd[0] == 1:
            return [f"a second session: a primary volume descriptor at sector {sector}, after the recorded end "
                    f"(the volume descriptors at sector 16 still name session 1)"]
    return []


