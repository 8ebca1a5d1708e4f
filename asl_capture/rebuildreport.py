"""What differs between an ISO and its rebuild, layer by layer (for ``asl-verify rebuild``).

Layers, outermost first: the ISO's files (the ``iso`` step's output tree), the build manifest inside
the ISO (``/asl/build-manifest.cbor``, field by field), the squashfs (the ``overlay`` step's system
tree, paths as in the image, with type, mode, size and content; owners read from the two squashfs
images when the squashfs differs), the overlay tree as staged from ``overlay/``, the
initramfs, and the rootfs. Trees are compared through the tree manifests the two builds recorded,
so the original build's scratch trees are not needed; the build manifests and the squashfs owners are
read from the two ISOs with the pure-Python readers of :mod:`asl_capture.audit` (no mount, no
root); ``diffoscope`` runs too when installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from asl_capture import dcbor
from asl_capture.errors import AslError
from asl_capture.format import Entry, Manifest, StepRecord
from asl_capture.store import ObjectStore, ProvenanceDir

MAX_LINES = 25
DIFFOSCOPE_TIMEOUT = 900


def _outputs(prov: Path, record: StepRecord) -> dict[str, Entry]:
    try:
        m = Manifest.from_cbor(ObjectStore(ProvenanceDir.existing(prov)).read(record.outputs.manifest))
    except AslError:
        return {}
    return {os.fsdecode(e.path): e for e in m.entries}


def _under(entries: dict[str, Entry], root: str) -> dict[str, Entry]:
    pre = root.rstrip("/") + "/"
    return {k[len(pre):]: v for k, v in entries.items() if k.startswith(pre)}


def _what(a: Entry, b: Entry) -> str | None:
    if a.kind != b.kind:
        return f"type {a.kind} -> {b.kind}"
    parts = []
    if a.mode != b.mode:
        parts.append(f"mode {a.mode:04o} -> {b.mode:04o}")
    if a.kind == "l" and a.extra != b.extra:
        parts.append(f"target {os.fsdecode(a.extra) if isinstance(a.extra, bytes) else a.extra} -> "
                     f"{os.fsdecode(b.extra) if isinstance(b.extra, bytes) else b.extra}")
    elif a.kind == "f" and (a.extra != b.extra or a.size != b.size):
        ha = a.extra.hex()[:16] if isinstance(a.extra, bytes) else "?"
        hb = b.extra.hex()[:16] if isinstance(b.extra, bytes) else "?"
        parts.append(f"content differs (size {a.size} -> {b.size}, sha256 {ha}... -> {hb}...)")
    return ", ".join(parts) or None


def tree_diff(original: dict[str, Entry], rebuilt: dict[str, Entry], *, label: Callable[[str], str]) -> list[str]:
    """One line per path that differs, ``label(path): what``, sorted by path."""
    lines = []
    for path in sorted(original.keys() | rebuilt.keys()):
        a, b = original.get(path), rebuilt.get(path)
        if a is None:
            lines.append(f"{label(path)}: only in the rebuild")
        elif b is None:
            lines.append(f"{label(path)}: only in the original")
        else:
            what = _what(a, b)
            if what:
                lines.append(f"{label(path)}: {what}")
    return lines


def _cap(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"... and {len(lines) - MAX_LINES} more"]


def _iso_file(iso: Path, member: bytes) -> tuple[int, int] | None:
    """(offset, length) of ``member`` (e.g. ``b"live/system.squashfs"``) in the ISO, read without mounting."""
    from asl_capture.audit.iso9660 import IsoImage

    try:
        fd = os.open(iso, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        image = IsoImage(fd, name=str(iso))
        node = next((n for n in image.walk() if n.path == member and n.kind == "f"), None)
        return image.file_extent(node) if node is not None else None
    except AslError:
        return None
    finally:
        os.close(fd)


def read_member(iso: Path, member: bytes, limit: int = 16 << 20) -> bytes | None:
    """The bytes of ``member`` of the ISO (at most ``limit``), or None when it is absent or unreadable."""
    where = _iso_file(iso, member)
    if where is None or where[1] > limit:
        return None
    with iso.open("rb") as f:
        f.seek(where[0])
        return f.read(where[1])


def _flat(value: dcbor.Value, prefix: str = "") -> dict[str, dcbor.Value]:
    if isinstance(value, dict):
        out: dict[str, dcbor.Value] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _show(value: dcbor.Value) -> str:
    return value.hex()[:16] + "..." if isinstance(value, bytes) else repr(value)


def manifest_diff(original: bytes, rebuilt: bytes) -> list[str]:
    """The build-manifest fields that differ (``sources`` summarised by its digest)."""
    try:
        a, b = dcbor.decode(original), dcbor.decode(rebuilt)
    except AslError as exc:
        return [f"cannot decode a build manifest: {exc}"]
    fa, fb = _flat(a), _flat(b)
    lines = []
    for key in sorted(fa.keys() | fb.keys()):
        if key == "sources":
            continue
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            lines.append(f"{key}: {_show(va)} -> {_show(vb)}")
    return lines


def _squashfs_listing(iso: Path) -> dict[str, tuple[str, str, str]] | None:
    """``{path: (mode, uid/gid, size)}`` of the ISO's squashfs (pure-Python readers: no mount, no root)."""
    from asl_capture.audit.squashfs import SquashImage

    where = _iso_file(iso, b"live/system.squashfs")
    if where is None:
        return None
    fd = os.open(iso, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nodes = SquashImage(fd, offset=where[0], length=where[1], name="live/system.squashfs").walk()
    except AslError:
        return None
    finally:
        os.close(fd)
    return {"/" + os.fsdecode(n.path): (f"{n.kind} {n.mode:04o}", f"{n.uid}/{n.gid}", str(n.size)) for n in nodes}


def owner_diff(original_iso: Path, rebuilt_iso: Path) -> list[str]:
    """Paths whose type, owner, mode or size differ in the two squashfs images."""
    la, lb = _squashfs_listing(original_iso), _squashfs_listing(rebuilt_iso)
    if la is None or lb is None:
        return ["(live/system.squashfs cannot be read from both ISOs: owners not compared)"]
    lines = []
    for path in sorted(la.keys() | lb.keys()):
        va, vb = la.get(path), lb.get(path)
        if va != vb:
            lines.append(f"{path}: {' '.join(va) if va else 'absent'} -> {' '.join(vb) if vb else 'absent'}")
    return lines


def diffoscope(original: Path, rebuilt: Path, out: Path) -> list[str]:
    """Run diffoscope (when installed) into ``out``; the first lines of its text report."""
    tool = shutil.which("diffoscope")
    if tool is None:
        return ["diffoscope: not installed (apt-get install diffoscope for a byte-level report)"]
    try:
        subprocess.run([tool, "--text", str(out), "--no-progress", str(original), str(rebuilt)],
                       capture_output=True, check=False, timeout=DIFFOSCOPE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return [f"diffoscope: stopped after {DIFFOSCOPE_TIMEOUT} s"]
    if not out.is_file():
        return ["diffoscope: produced no report"]
    head = out.read_text(encoding="utf-8", errors="replace").splitlines()[:15]
    return [f"diffoscope: full report in {out}", *head]


def report(*, original: tuple[Path, Path, dict[str, StepRecord]], rebuilt: tuple[Path, Path], work: Path,
           prefix: str, read_records: Callable[[Path], list[StepRecord]],
           last_build: Callable[[list[StepRecord]], dict[str, StepRecord]]) -> list[str]:
    """The layer-by-layer report (lines to print).

    ``original`` is (provenance dir, ISO, its build's steps); ``rebuilt`` is (provenance dir, ISO);
    ``prefix`` is the build's work directory relative to the checkout (``out/work``).
    """
    o_prov, o_iso, o_steps = original
    r_prov, r_iso = rebuilt
    r_steps = last_build(read_records(r_prov))

    def outs(step: str) -> tuple[dict[str, Entry], dict[str, Entry]]:
        a = _outputs(o_prov, o_steps[step]) if step in o_steps else {}
        b = _outputs(r_prov, r_steps[step]) if step in r_steps else {}
        return a, b

    def layer(entries: tuple[dict[str, Entry], dict[str, Entry]], tree: str, label: str) -> list[str]:
        a, b = entries
        return tree_diff(_under(a, f"{prefix}/{tree}"), _under(b, f"{prefix}/{tree}"), label=lambda p: label + p)

    iso, overlay, rootfs = outs("iso"), outs("overlay"), outs("rootfs")
    layers: list[tuple[str, list[str]]] = [("ISO files", layer(iso, "isofs", "/"))]
    bm_a = read_member(o_iso, b"asl/build-manifest.cbor")
    bm_b = read_member(r_iso, b"asl/build-manifest.cbor")
    if bm_a is not None and bm_b is not None:
        layers.append(("build manifest (/asl/build-manifest.cbor)", manifest_diff(bm_a, bm_b)))
    squash = layer(overlay, "isoroot", "squashfs:/")
    if any(line.startswith("/live/system.squashfs:") for line in layers[0][1]):
        named = {line.split(": ", 1)[0] for line in squash}
        squash += [f"squashfs:{line}" for line in owner_diff(o_iso, r_iso)
                   if f"squashfs:{line.split(': ', 1)[0]}" not in named]
    layers.append(("squashfs (/live/system.squashfs: path, owner, mode, size, content)", squash))
    layers.append(("overlay tree (overlay/, as staged)", layer(overlay, "overlay-staged", "overlay/")))
    layers.append(("initramfs (/live/initrd.img)", layer(iso, "initramfs", "initrd:/")))
    layers.append(("rootfs (the Debian packages, before the overlay)", layer(rootfs, "rootfs", "rootfs:/")))
    lines: list[str] = []
    for number, (name, diffs) in enumerate(layers, 1):
        lines.append(f"layer {number}, {name}: " + (f"{len(diffs)} difference(s)" if diffs else "same"))
        lines.extend(f"  {d}" for d in _cap(diffs))
    lines.extend(diffoscope(o_iso, r_iso, work / "diffoscope.txt"))
    return lines
