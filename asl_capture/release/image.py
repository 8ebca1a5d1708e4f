"""What publishing needs from an ISO: a verdict as ``asl-verify iso`` gives it, and read access to the image.

:data:`IsoVerifier` is the verification step: ``(iso, provenance, trusted keys) -> VerifiedIso``.
:func:`default_verifier` is ``asl-verify iso`` (:mod:`asl_capture.audit`) when it is installed; until
then, a reduced check (the chain verifies and a recorded step produced exactly these ISO bytes under
this name), named as such in every verdict.

:func:`open_image` gives the bytes of ``/asl/build-manifest.cbor`` and an :class:`ImageTree` of the
system image (``/live/system.squashfs``), for the versioning rule.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture.errors import UsageError, VerificationError
from asl_capture.format import Manifest
from asl_capture.store import ObjectStore, ProvenanceDir
from asl_capture.verify import ChainReport, verify_chain

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

BUILD_MANIFEST_PATH = "asl/build-manifest.cbor"
SYSTEM_IMAGE_PATH = "live/system.squashfs"
MAX_BUILD_MANIFEST = 16 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class VerifiedIso:
    """What the ISO verification established: the ISO's digest, the image identity, the verified chain."""

    sha256: bytes
    image_identity: bytes
    chain: ChainReport
    method: str


IsoVerifier = Callable[[Path, Path, Mapping[bytes, "Ed25519PublicKey"]], VerifiedIso]


def sha256_file(path: Path) -> bytes:
    """SHA-256 of a file's bytes, streamed.

    Raises:
        UsageError: the file cannot be read.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    return h.digest()


def _reduced_verify(iso: Path, provenance: Path, trusted: Mapping[bytes, Ed25519PublicKey]) -> VerifiedIso:
    """The chain verifies, a recorded step output these ISO bytes under this name, and the image identity."""
    report = verify_chain(provenance, dict(trusted))
    digest = sha256_file(iso)
    store = ObjectStore(ProvenanceDir.existing(provenance))
    name = os.fsencode(iso.name)
    found = False
    for record in reversed(report.records):
        manifest = Manifest.from_cbor(store.read(record.outputs.manifest))
        if any(e.kind == "f" and e.extra == digest and os.path.basename(e.path) == name for e in manifest.entries):
            found = True
            break
    if not found:
        raise VerificationError(f"{iso.name}: no step of the chain produced these bytes (sha256 {digest.hex()})",
                                check="iso-digest")
    identity = hashlib.sha256(read_build_manifest(iso)).digest()
    return VerifiedIso(sha256=digest, image_identity=identity, chain=report, method="chain + ISO digest")


def default_verifier() -> IsoVerifier:
    """``asl-verify iso`` when available, else the reduced check (see the module docstring)."""
    import importlib

    try:  # asl-verify iso (issue 9), when this installation has it
        verify_iso = importlib.import_module("asl_capture.audit.isoverify").verify_iso
    except ImportError:
        return _reduced_verify

    def full(iso: Path, provenance: Path, trusted: Mapping[bytes, Ed25519PublicKey]) -> VerifiedIso:
        report = verify_iso(iso, provenance, dict(trusted))
        if report.sha256 is None or report.image_identity is None or report.chain is None:
            raise VerificationError("asl-verify iso did not establish the ISO digest and image identity", check="iso")
        return VerifiedIso(sha256=report.sha256, image_identity=report.image_identity, chain=report.chain,
                           method="asl-verify iso")

    return full


class ListedTree:
    """An image tree from a listing (path -> (kind, symlink target)) and a reader of file bytes."""

    def __init__(self, entries: dict[str, tuple[str, str | None]], reader: Callable[[str, int], bytes]) -> None:
        self.entries = entries
        self.reader = reader

    def _resolve(self, rel: str) -> str | None:
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/".join([*done, part])
            entry = self.entries.get(here)
            if parts and entry is not None and entry[0] == "l" and entry[1] is not None:
                hops += 1
                if hops > 40:
                    return None
                target = entry[1]
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                if target.startswith("/"):
                    done = []
                continue
            done.append(part)
        return "/".join(done)

    def kind(self, path: str) -> str | None:
        resolved = self._resolve(path)
        entry = self.entries.get(resolved) if resolved is not None else None
        return entry[0] if entry is not None else None

    def read(self, path: str, *, limit: int) -> bytes:
        resolved = self._resolve(path)
        if resolved is None or self.kind(path) != "f":
            raise UsageError(f"/{path}: not a regular file in the image")
        data = self.reader(resolved, limit)
        if len(data) > limit:
            raise UsageError(f"/{path}: larger than {limit} bytes")
        return data


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"{name} not found (install it with pipeline/install-deps.sh)")
    return found


def _run(argv: list[str], what: str) -> bytes:
    result = subprocess.run(argv, capture_output=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"{what} failed: {lines[-1] if lines else 'exit ' + str(result.returncode)}")
    return result.stdout


def _squashfs_listing(image: Path) -> dict[str, tuple[str, str | None]]:
    out = _run([_tool("unsquashfs"), "-lln", "-d", "", str(image)], "unsquashfs -lln")
    entries: dict[str, tuple[str, str | None]] = {}
    for raw in out.decode("utf-8", "surrogateescape").splitlines():
        fields = raw.split(None, 5)
        if len(fields) < 6 or len(fields[0]) != 10:
            continue
        kind = {"-": "f", "d": "d", "l": "l"}.get(fields[0][0], "o")
        name = fields[5]
        target: str | None = None
        if kind == "l" and " -> " in name:
            name, target = name.split(" -> ", 1)
        entries[name.lstrip("/")] = (kind, target)
    return entries


def read_build_manifest(iso: Path) -> bytes:
    """The bytes of the ISO's ``/asl/build-manifest.cbor``.

    Raises:
        UsageError: the ISO has none, or it cannot be read.
    """
    with tempfile.TemporaryDirectory(prefix="asl-release-") as tmp:
        out = Path(tmp) / "build-manifest.cbor"
        _run([_tool("xorriso"), "-osirrox", "on", "-indev", str(iso), "-extract", "/" + BUILD_MANIFEST_PATH,
              str(out)], f"reading {iso.name}")
        if not out.is_file() or out.is_symlink():
            raise UsageError(f"{iso}: no /{BUILD_MANIFEST_PATH}")
        if out.stat().st_size > MAX_BUILD_MANIFEST:
            raise UsageError(f"{iso}: /{BUILD_MANIFEST_PATH} is larger than {MAX_BUILD_MANIFEST} bytes")
        return out.read_bytes()


@contextmanager
def open_image(iso: Path) -> Iterator[tuple[bytes, ListedTree]]:
    """The bytes of the ISO's build manifest and a tree of its system image (for the versioning rule).

    Raises:
        UsageError: the ISO lacks them, or they cannot be read.
    """
    with tempfile.TemporaryDirectory(prefix="asl-release-") as tmp:
        manifest_out, squash_out = Path(tmp) / "build-manifest.cbor", Path(tmp) / "system.squashfs"
        _run([_tool("xorriso"), "-osirrox", "on", "-indev", str(iso), "-extract", "/" + BUILD_MANIFEST_PATH,
              str(manifest_out), "-extract", "/" + SYSTEM_IMAGE_PATH, str(squash_out)], f"reading {iso.name}")
        for path in (manifest_out, squash_out):
            if not path.is_file() or stat.S_ISLNK(path.lstat().st_mode):
                raise UsageError(f"{iso}: no /{BUILD_MANIFEST_PATH} or /{SYSTEM_IMAGE_PATH}")
        if manifest_out.stat().st_size > MAX_BUILD_MANIFEST:
            raise UsageError(f"{iso}: /{BUILD_MANIFEST_PATH} is larger than {MAX_BUILD_MANIFEST} bytes")
        build_manifest = manifest_out.read_bytes()
        entries = _squashfs_listing(squash_out)

        def read(path: str, limit: int) -> bytes:
            return _run([_tool("unsquashfs"), "-cat", str(squash_out), path], f"reading /{path}")[: limit + 1]

        yield build_manifest, ListedTree(entries, read)
