#!/usr/bin/env python3
"""Write /asl/build-manifest.cbor: the :class:`asl_capture.format.BuildManifest` of the image.

Its layout is docs/FORMAT.md section 10: the pinned sources (mirror host stripped, sorted), the
overlay and system trees (the digests of their tree manifests, each taken by
:func:`asl_capture.manifest.snapshot` with the tree itself as base) and the boot files' digests. No
timestamps, build paths, host names or random ids: two reproducible builds give the same bytes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from asl_capture.context import read_sources
from asl_capture.errors import AslError
from asl_capture.format import BuildManifest, BuildSource, SystemTree, TreeDigest
from asl_capture.hashing import sha256_path
from asl_capture.manifest import snapshot

_ARCHIVE_PATH = re.compile(r"/((?:dists|pool)/.*)$")


def build_sources(path: Path) -> tuple[BuildSource, ...]:
    """The sources of a step's sources file as ``[kind, archive path, digest]``, sorted, mirror-independent.

    Raises:
        CaptureError: the file is unreadable or malformed.
        ValueError: a URI has no ``dists/`` or ``pool/`` part.
    """
    rows: set[BuildSource] = set()
    for source in read_sources(path):
        if source.kind not in ("release", "index", "deb"):
            continue  # keyrings are local files, not archive paths
        m = _ARCHIVE_PATH.search(source.uri)
        if m is None:
            raise ValueError(f"{path}: uri has no dists/ or pool/ part: {source.uri}")
        rows.add(BuildSource(kind=source.kind, path=m.group(1), sha256=source.sha256))
    return tuple(sorted(rows))


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
        overlay = snapshot([a.overlay], base=a.overlay)
        system = snapshot([a.system], base=a.system)
        doc = BuildManifest(
            name=a.name, version=a.version, source_date_epoch=a.epoch, kernel=a.kernel,
            sources=build_sources(a.sources),
            overlay=TreeDigest(manifest=overlay.digest, paths=len(overlay.entries)),
            system=SystemTree(manifest=system.digest, paths=len(system.entries), files=system.files),
            files={name: sha256_path(Path(path)) for name, _, path in (f.partition("=") for f in a.file)},
        )
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_bytes(doc.to_cbor())
    except (OSError, ValueError, AslError) as exc:
        sys.stderr.write(f"buildmanifest: error: {exc}\n")
        return 2
    sys.stderr.write(f"buildmanifest: {len(doc.sources)} sources, system {doc.system.paths} paths -> {a.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
