#!/usr/bin/env python3
"""Write the iso step's account of its ISO (``asl-iso-contents``, version 1), stored by ``asl-capture --attach``.

``grub-mkrescue`` adds files of its own to the tree it is given (BIOS and EFI boot images, GRUB
modules, ``boot.catalog``, ...). This reads the finished ISO with the same reader ``asl-verify iso``
uses and records, as deterministic CBOR (``docs/FORMAT.md``)::

    {"v": 1, "type": "asl-iso-contents",
     "iso": label of the ISO, "tree": label of the tree given to grub-mkrescue,
     "added": [[path, kind, mode, size, extra], ...],   # in the ISO, not (or not so) in the tree
     "removed": [path, ...],                             # in the tree, not in the ISO
     "system_area": sha256 of the first 32 KiB (boot code, MBR/GPT),
     "squashfs": {"path": path of the system image in the ISO, "tree": label of the tree it was made
                  from, "owners": [[path, uid, gid], ...] for every path not owned by 0:0,
                  "compression": the mksquashfs compressor}}

Labels are paths relative to the working directory, as ``asl-capture`` names them in manifests.
Exit status 0 written, 2 unusable input.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from asl_capture import dcbor
from asl_capture.audit.checks import iso_mode, seen_from_entry
from asl_capture.audit.compare import Seen
from asl_capture.audit.iso9660 import SYSTEM_AREA, IsoImage
from asl_capture.audit.recorded import CONTENTS_TYPE, CONTENTS_VERSION
from asl_capture.errors import AslError
from asl_capture.format import Entry
from asl_capture.manifest import label_for, snapshot


def owners(root: Path) -> list[dcbor.Value]:
    """``[path, uid, gid]`` for every path under ``root`` (``.`` itself) not owned by 0:0, sorted."""
    rows: list[tuple[bytes, int, int]] = []
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(full)
            if (st.st_uid, st.st_gid) != (0, 0):
                rel = os.path.relpath(full, base) if full != base else b"."
                rows.append((rel, st.st_uid, st.st_gid))
    return [[Entry(p, "d", 0, 0, None).to_value()[0], uid, gid] for p, uid, gid in sorted(rows)]


def contents(iso: Path, tree: Path, system: Path, squashfs: str, compression: str, cwd: Path) -> bytes:
    """The encoded contents record."""
    fd = os.open(iso, os.O_RDONLY)
    try:
        image = IsoImage(fd, name=iso.name)
        found: dict[bytes, tuple[Seen, Entry]] = {}
        for n in image.walk():
            extra: bytes | int | None = None
            if n.kind == "f":
                extra = image.extent_digest(n)
            elif n.kind == "l":
                extra = n.target
            elif n.rdev is not None:
                extra = os.makedev(*n.rdev)
            entry = Entry(n.path, n.kind, n.mode, n.size, extra)
            found[n.path] = (seen_from_entry(entry), entry)
        area = hashlib.sha256(os.pread(fd, SYSTEM_AREA, 0)).digest()
    finally:
        os.close(fd)
    expected: dict[bytes, Seen] = {}
    for e in snapshot([tree], base=tree).entries:
        s = seen_from_entry(e)
        expected[e.path] = Seen(s.kind, iso_mode(s.kind, s.mode), s.size, s.digest, s.target, s.rdev)
    added = [entry.to_value() for path, (seen, entry) in sorted(found.items()) if expected.get(path) != seen]
    removed = [Entry(p, "d", 0, 0, None).to_value()[0] for p in sorted(expected.keys() - found.keys())]
    doc: dict[str, dcbor.Value] = {
        "v": CONTENTS_VERSION,
        "type": CONTENTS_TYPE,
        "iso": os.fsdecode(label_for(iso, cwd)),
        "tree": os.fsdecode(label_for(tree, cwd)),
        "added": added,  # type: ignore[dict-item]
        "removed": removed,
        "system_area": area,
        "squashfs": {"path": squashfs, "tree": os.fsdecode(label_for(system, cwd)), "owners": owners(system),
                     "compression": compression},
    }
    return dcbor.encode(doc)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit 0 written, 2 unusable input."""
    p = argparse.ArgumentParser(description="record what the ISO holds beyond the tree it was made from")
    p.add_argument("--iso", type=Path, required=True)
    p.add_argument("--tree", type=Path, required=True, help="the tree given to grub-mkrescue")
    p.add_argument("--system", type=Path, required=True, help="the tree the squashfs was made from")
    p.add_argument("--squashfs", required=True, help="the squashfs image's path inside the ISO")
    p.add_argument("--compression", required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        data = contents(a.iso, a.tree, a.system, a.squashfs, a.compression, Path.cwd())
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_bytes(data)
    except (OSError, AslError) as exc:
        sys.stderr.write(f"isocontents: error: {exc}\n")
        return 2
    doc = dcbor.decode(data)
    assert isinstance(doc, dict) and isinstance(doc["added"], list)
    sys.stderr.write(f"isocontents: {len(doc['added'])} paths added by the ISO tool -> {a.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
