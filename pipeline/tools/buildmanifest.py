#!/usr/bin/env python3
"""Write /asl/build-manifest.cbor: deterministic CBOR with the digests of what went into the image.

Contents (text keys, RFC 8949 deterministic encoding via :mod:`asl_capture.dcbor`)::

    {"v": 1, "name": str, "version": str, "source_date_epoch": int, "kernel": str,
     "sources": [[kind, path-in-archive, sha256 bytes], ...]   # sorted; mirror host stripped
     "sources_digest": sha256 of the dcbor encoding of "sources",
     "overlay": {"manifest": sha256 of the overlay tree manifest, "paths": int},
     "system": {"manifest": sha256 of the system tree manifest, "paths": int, "files": int},
     "files": {"live/vmlinuz": sha256, ...}}

No timestamps, build paths, host names or random ids: two reproducible builds give the same bytes.
Tree manifests are those of :func:`asl_capture.manifest.snapshot` with the tree itself as base, so
``asl-verify`` can recompute them from the record's output snapshots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from asl_capture import dcbor
from asl_capture.errors import AslError
from asl_capture.hashing import sha256_path
from asl_capture.manifest import snapshot

_ARCHIVE_PATH = re.compile(r"/((?:dists|pool)/.*)$")


def sources_list(path: Path) -> list[dcbor.Value]:
    """``[kind, archive path, digest]`` rows from a sources JSON Lines file, sorted, mirror-independent."""
    rows: list[tuple[str, str, bytes]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        m = _ARCHIVE_PATH.search(obj["uri"])
        if m is None:
            raise ValueError(f"{path}:{n}: uri has no dists/ or pool/ part: {obj['uri']}")
        rows.append((obj["kind"], m.group(1), bytes.fromhex(obj["sha256"])))
    return [list(r) for r in sorted(set(rows))]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit 0 written, 2 unusable input."""
    p = argparse.ArgumentParser(description="write the ISO's build manifest")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--sources", type=Path, required=True)
    p.add_argument("--overlay", type=Path, required=True)
    p.add_argument("--system", type=Path, required=True)
    p.add_argument("--file", action="append", default=[], help="NAME=PATH, digested under files")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        sources = sources_list(a.sources)
        overlay = snapshot([a.overlay], base=a.overlay)
        system = snapshot([a.system], base=a.system)
        files: dict[str, dcbor.Value] = {}
        for spec in a.file:
            name, _, path = spec.partition("=")
            files[name] = sha256_path(Path(path))
        doc: dict[str, dcbor.Value] = {
            "v": 1,
            "name": a.name,
            "version": a.version,
            "source_date_epoch": a.epoch,
            "kernel": a.kernel,
            "sources": sources,
            "sources_digest": hashlib.sha256(dcbor.encode(sources)).digest(),
            "overlay": {"manifest": overlay.digest, "paths": len(overlay.entries)},
            "system": {"manifest": system.digest, "paths": len(system.entries), "files": system.files},
            "files": files,
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_bytes(dcbor.encode(doc))
    except (OSError, ValueError, KeyError, AslError) as exc:
        sys.stderr.write(f"buildmanifest: error: {exc}\n")
        return 2
    sys.stderr.write(f"buildmanifest: {len(sources)} sources, system {len(system.entries)} paths -> {a.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
