"""A read-only ISO 9660 reader with Rock Ridge: the file tree of an image, without mounting it.

Reads the primary volume descriptor and walks the directory tree, taking names, modes, symlink
targets and device numbers from the Rock Ridge entries (``NM``, ``PX``, ``SL``, ``PN``, with ``CE``
continuation areas) that xorriso writes. Each file is an extent (or, for multi-extent files, a list
of them) of the image; :func:`extent_digest` hashes those bytes in place. ``El Torito`` boot records
and the system area (the first 32 KiB) are not files; the caller covers them by the ISO's digest.

Hostile images: every extent is checked against the image size, directory sizes and the number of
paths are capped, cycles are refused, and every problem raises
:class:`~asl_capture.errors.ImageError` with one line naming it (never a traceback).
"""

from __future__ import annotations

import hashlib
import os
import struct

from asl_capture.errors import ImageError
from asl_capture.frozen import frozen

SECTOR = 2048
SYSTEM_AREA = 16 * SECTOR
MAX_DIRECTORY = 16 << 20
MAX_PATHS = 1_000_000
MAX_CE_HOPS = 64
_S_IFMT = 0o170000
_KINDS = {0o100000: "f", 0o040000: "d", 0o120000: "l", 0o020000: "c", 0o060000: "b", 0o010000: "p",
          0o140000: "s"}


@frozen
class IsoNode:
    """One path of the ISO. ``extents``: (byte offset, length) of a file's data, in order."""

    path: bytes
    kind: str
    mode: int
    size: int
    extents: tuple[tuple[int, int], ...] = ()
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    uid: int = 0
    gid: int = 0


class _Rec:
    """A parsed directory record (with its Rock Ridge fields)."""

    __slots__ = ("data_len", "extent", "flags", "gid", "mode", "name", "rdev", "rr", "skip", "target", "uid")

    def __init__(self) -> None:
        self.extent = 0
        self.data_len = 0
        self.flags = 0
        self.name = b""
        self.rr = False
        self.mode: int | None = None
        self.uid = 0
        self.gid = 0
        self.target: bytes | None = None
        self.rdev: tuple[int, int] | None = None
        self.skip = False


class IsoImage:
    """An ISO 9660 image in the open file ``fd``."""

    def __init__(self, fd: int, *, name: str = "ISO") -> None:
        self.fd = fd
        self.name = name
        try:
            self.size = os.fstat(fd).st_size
        except OSError as exc:
            raise ImageError(f"{name}: cannot stat: {exc.strerror}") from None
        if self.size < SYSTEM_AREA + 2 * SECTOR:
            raise ImageError(f"{name}: {self.size} bytes is too small for an ISO 9660 image")
        self.root: _Rec | None = None
        for index in range(16, 16 + 64):
            vd = self._read(index * SECTOR, SECTOR)
            if vd[1:6] != b"CD001":
                raise ImageError(f"{name}: not an ISO 9660 image (no volume descriptor at sector {index})")
            if vd[0] == 1:
                (block_size,) = struct.unpack_from("<H", vd, 128)
                if block_size != SECTOR:
                    raise ImageError(f"{name}: logical block size {block_size} is not supported")
                self.volume_id = vd[40:72].rstrip(b" ").decode("ascii", "replace")
                self.root = self._record(vd, 156, 34)
                break
            if vd[0] == 255:
                break
        if self.root is None:
            raise ImageError(f"{name}: no primary volume descriptor")
        self._use_rr = False
        first = self._dir_records(self.root, b".", first_only=True)
        if first and first[0].rr:
            self._use_rr = True

    def _read(self, pos: int, n: int) -> bytes:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise ImageError(f"{self.name}: read of {n} bytes at offset {pos} runs past the end of the image "
                             f"({self.size} bytes): truncated or corrupt")
        try:
            data = os.pread(self.fd, n, pos)
        except OSError as exc:
            raise ImageError(f"{self.name}: cannot read: {exc.strerror}") from None
        if len(data) != n:
            raise ImageError(f"{self.name}: truncated at offset {pos}")
        return data

    def _record(self, buf: bytes, pos: int, length: int) -> _Rec:
        if length < 34 or pos + length > len(buf):
            raise ImageError(f"{self.name}: corrupt directory record")
        rec = _Rec()
        (rec.extent,) = struct.unpack_from("<I", buf, pos + 2)
        (rec.data_len,) = struct.unpack_from("<I", buf, pos + 10)
        rec.flags = buf[pos + 25]
        name_len = buf[pos + 32]
        if 33 + name_len > length:
            raise ImageError(f"{self.name}: directory record name runs past the record")
        rec.name = buf[pos + 33:pos + 33 + name_len]
        su_start = 33 + name_len + (1 - name_len % 2)
        if su_start < length:
            self._susp(rec, buf[pos + su_start:pos + length])
        return rec

    def _susp(self, rec: _Rec, area: bytes) -> None:
        """Apply the System Use entries (Rock Ridge) of ``area`` and its continuation areas to ``rec``."""
        nm: list[bytes] = []
        sl: list[bytes] = []
        sl_partial = False
        hops = 0
        while area:
            ce: tuple[int, int, int] | None = None
            pos = 0
            while pos + 4 <= len(area):
                sig, ln = area[pos:pos + 2], area[pos + 2]
                if ln < 4 or pos + ln > len(area):
                    break
                data = area[pos + 4:pos + ln]
                if sig == b"SP":
                    rec.rr = True
                elif sig == b"PX" and len(data) >= 32:
                    rec.rr = True
                    (rec.mode,) = struct.unpack_from("<I", data, 0)
                    (rec.uid,) = struct.unpack_from("<I", data, 16)
                    (rec.gid,) = struct.unpack_from("<I", data, 24)
                elif sig == b"NM" and data:
                    rec.rr = True
                    flags = data[0]
                    if flags & 0x06:
                        rec.skip = True
                    nm.append(data[1:])
                elif sig == b"SL" and data:
                    rec.rr = True
                    comps = data[1:]
                    cpos = 0
                    while cpos + 2 <= len(comps):
                        cflags, clen = comps[cpos], comps[cpos + 1]
                        content = comps[cpos + 2:cpos + 2 + clen]
                        cpos += 2 + clen
                        if cflags & 0x02:
                            piece = b"."
                        elif cflags & 0x04:
                            piece = b".."
                        elif cflags & 0x08:
                            piece = b""
                        else:
                            piece = content
                        if sl_partial and sl:
                            sl[-1] += piece
                        else:
                            sl.append(piece)
                        sl_partial = bool(cflags & 0x01)
                elif sig == b"PN" and len(data) >= 16:
                    (high,) = struct.unpack_from("<I", data, 0)
                    (low,) = struct.unpack_from("<I", data, 8)
                    dev = (high << 32) | low
                    rec.rdev = (os.major(dev), os.minor(dev))
                elif sig == b"CE" and len(data) >= 24:
                    (block,) = struct.unpack_from("<I", data, 0)
                    (off,) = struct.unpack_from("<I", data, 8)
                    (clen,) = struct.unpack_from("<I", data, 16)
                    ce = (block, off, clen)
                elif sig == b"RE":
                    rec.skip = True  # a relocated directory: reached through its CL entry instead
                elif sig == b"CL":
                    raise ImageError(f"{self.name}: relocated directories (Rock Ridge CL) are not supported")
                elif sig == b"ZF":
                    raise ImageError(f"{self.name}: zisofs-compressed files (Rock Ridge ZF) are not supported")
                elif sig == b"ST":
                    break
                pos += ln
            if ce is None:
                break
            hops += 1
            if hops > MAX_CE_HOPS or ce[2] > SECTOR:
                raise ImageError(f"{self.name}: absurd Rock Ridge continuation area")
            area = self._read(ce[0] * SECTOR + ce[1], ce[2])
        if nm:
            rec.name = b"".join(nm)
        if sl:
            target = b"/".join(sl)
            if sl and sl[0] == b"" and len(sl) > 1:
                target = b"/" + b"/".join(sl[1:])
            rec.target = target

    def _dir_records(self, d: _Rec, path: bytes, *, first_only: bool = False) -> list[_Rec]:
        if d.data_len > MAX_DIRECTORY:
            raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory of {d.data_len} bytes refused")
        buf = self._read(d.extent * SECTOR, d.data_len)
        out: list[_Rec] = []
        pos = 0
        while pos < len(buf):
            length = buf[pos]
            if length == 0:  # records do not cross sectors: skip to the next one
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            if pos % SECTOR + length > SECTOR:
                raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory record crosses a sector")
            out.append(self._record(buf, pos, length))
            if first_only:
                break
            pos += length
        return out

    def walk(self) -> list[IsoNode]:
        """Every path of the ISO (the root is ``.``), Rock Ridge names and modes when present.

        Raises:
            ImageError: the image is corrupt or truncated, or claims absurd sizes.
        """
        assert self.root is not None
        out: list[IsoNode] = [IsoNode(b".", "d", self._mode(self.root, "d"), 0)]
        root_recs = self._dir_records(self.root, b".", first_only=True)
        if root_recs:
            out[0] = IsoNode(b".", "d", self._mode(root_recs[0], "d"), 0, uid=root_recs[0].uid,
                             gid=root_recs[0].gid)
        visited = {self.root.extent}
        stack: list[tuple[bytes, _Rec]] = [(b"", self.root)]
        while stack:
            prefix, d = stack.pop()
            records = self._dir_records(d, prefix or b".")
            seen: set[bytes] = set()
            pending: _Rec | None = None
            extents: list[tuple[int, int]] = []
            for rec in records[2:]:  # skip "." and ".."
                if rec.skip:
                    continue
                name = rec.name if self._use_rr else self._plain_name(rec.name)
                if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
                    raise ImageError(f"{self.name}: /{os.fsdecode(prefix)}: invalid name {name!r}")
                if rec.flags & 0x80:  # multi-extent: more records of the same file follow
                    extents.append((rec.extent * SECTOR, rec.data_len))
                    pending = rec
                    continue
                if pending is not None:
                    pending = None
                extents.append((rec.extent * SECTOR, rec.data_len))
                if name in seen:
                    raise ImageError(f"{self.name}: /{os.fsdecode(prefix + name)}: name appears twice")
                seen.add(name)
                path = prefix + name
                is_dir = bool(rec.flags & 0x02)
                kind = "d" if is_dir else "f"
                if rec.mode is not None:
                    kind = _KINDS.get(rec.mode & _S_IFMT, "?")
                    if kind == "?" or (kind == "d") != is_dir:
                        raise ImageError(f"{self.name}: /{os.fsdecode(path)}: inconsistent file type")
                mode = self._mode(rec, kind)
                if kind == "d":
                    if rec.extent in visited:
                        raise ImageError(f"{self.name}: /{os.fsdecode(path)}: directory cycle")
                    visited.add(rec.extent)
                    out.append(IsoNode(path, "d", mode, 0, uid=rec.uid, gid=rec.gid))
                    stack.append((path + b"/", rec))
                elif kind == "f":
                    for start, length in extents:
                        if start + length > self.size:
                            raise ImageError(f"{self.name}: /{os.fsdecode(path)}: data extent runs past the "
                                             f"end of the image (truncated)")
                    size = sum(length for _s, length in extents)
                    out.append(IsoNode(path, "f", mode, size, tuple(extents), uid=rec.uid, gid=rec.gid))
                elif kind == "l":
                    if rec.target is None:
                        raise ImageError(f"{self.name}: /{os.fsdecode(path)}: symlink without a target")
                    out.append(IsoNode(path, "l", mode, len(rec.target), target=rec.target, uid=rec.uid,
                                       gid=rec.gid))
                else:
                    out.append(IsoNode(path, kind, mode, 0, rdev=rec.rdev, uid=rec.uid, gid=rec.gid))
                extents = []
                if len(out) > MAX_PATHS:
                    raise ImageError(f"{self.name}: more than {MAX_PATHS} paths: refused")
            if pending is not None:
                raise ImageError(f"{self.name}: /{os.fsdecode(prefix)}: multi-extent file without its last part")
        return out

    @staticmethod
    def _plain_name(raw: bytes) -> bytes:
        name = raw.split(b";", 1)[0]
        return name[:-1] if name.endswith(b".") else name

    @staticmethod
    def _mode(rec: _Rec, kind: str) -> int:
        if rec.mode is not None:
            return rec.mode & 0o7777
        return 0o555 if kind == "d" else 0o444

    def extent_digest(self, node: IsoNode) -> bytes:
        """SHA-256 of a file's bytes, read from its extents.

        Raises:
            ImageError: the image cannot be read there.
        """
        h = hashlib.sha256()
        for start, length in node.extents:
            pos, end = start, start + length
            while pos < end:
                n = min(end - pos, 4 << 20)
                h.update(self._read(pos, n))
                pos += n
        return h.digest()

    def file_extent(self, node: IsoNode) -> tuple[int, int]:
        """(offset, length) of a file stored in one extent (a squashfs image is read in place)."""
        if len(node.extents) != 1:
            raise ImageError(f"{self.name}: /{os.fsdecode(node.path)} is split over {len(node.extents)} extents")
        return node.extents[0]
