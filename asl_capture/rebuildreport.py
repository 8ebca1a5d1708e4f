"""What differs between an ISO and its rebuild, layer by layer (for ``asl-verify rebuild``).

Layers, outermost first: the ISO's files (the ``iso`` step's output tree), the build manifest inside
the ISO (``/asl/build-manifest.cbor``, field by field), the squashfs (the ``overlay`` step's system
tree, paths as in the image, with type, mode, size and content; owners from ``unsquashfs -lln``
when the squashfs differs but no path does), the overlay tree as staged from ``overlay/``, the
initramfs, and the rootfs. Trees are compared through the tree manifests the two builds recorded,
so the original build's scratch trees are not needed; ``diffoscope`` runs too when installed.
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


def _extract(iso: Path, member: str, dest: Path) -> Path | None:
    if shutil.which("xorriso") is None:
        return None
    res = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", member, str(dest)],
                         capture_output=True, check=False)
    return dest if res.returncode == 0 and dest.is_file() else None


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


def _squashfs_listing(image: Path) -> dict[str, tuple[str, str, str]] | None:
    if shutil.which("unsquashfs") is None:
        return None
    res = subprocess.run(["unsquashfs", "-lln", "-d", "", str(image)], capture_output=True, check=False)
    if res.returncode != 0:
        return None
    out: dict[str, tuple[str, str, str]] = {}
    for raw in res.stdout.decode("utf-8", "replace").splitlines():
        fields = raw.split(None, 5)
        if len(fields) == 6 and "/" in fields[1]:
            perms, owner, size, _date, _time, name = fields
            out[name.split(" -> ")[0] or "/"] = (perms, owner, size if perms[0] == "-" else "")
    return out


def owner_diff(original_iso: Path, rebuilt_iso: Path, work: Path) -> list[str]:
    """Paths whose owner or permissions differ in the two squashfs images (``unsquashfs -lln``)."""
    a = _extract(original_iso, "/live/system.squashfs", work / "original.squashfs")
    b = _extract(rebuilt_iso, "/live/system.squashfs", work / "rebuilt.squashfs")
    if a is None or b is None:
        return ["(xorriso cannot extract live/system.squashfs: owners not compared)"]
    la, lb = _squashfs_listing(a), _squashfs_listing(b)
    if la is None or lb is None:
        return ["(unsquashfs is not installed: owners not compared)"]
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


def report(*, original: tuple[Path, Path, dict[str, StepRecord]], rebuilt: tuple[Path, Path, Path], work: Path,
           prefix: str, read_records: Callable[[Path], list[StepRecord]],
           last_build: Callable[[list[StepRecord]], dict[str, StepRecord]]) -> list[str]:
    """The layer-by-layer report (lines to print).

    ``original`` is (provenance dir, ISO, its build's steps); ``rebuilt`` is (provenance dir, ISO,
    checkout); ``prefix`` is the build's work directory relative to the checkout (``out/work``).
    """
    o_prov, o_iso, o_steps = original
    r_prov, r_iso, r_src = rebuilt
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
    bm_a = _extract(o_iso, "/asl/build-manifest.cbor", work / "original-build-manifest.cbor")
    bm_b = r_src / prefix / "isofs" / "asl" / "build-manifest.cbor"
    if bm_a is not None and bm_b.is_file():
        layers.append(("build manifest (/asl/build-manifest.cbor)", manifest_diff(bm_a.read_bytes(),
                                                                                   bm_b.read_bytes())))
    squash = layer(overlay, "isoroot", "squashfs:/")
    if any(line.startswith("/live/system.squashfs:") for line in layers[0][1]):
        named = {line.split(": ", 1)[0] for line in squash}
        squash += [f"squashfs:{line}" for line in owner_diff(o_iso, r_iso, work)
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
