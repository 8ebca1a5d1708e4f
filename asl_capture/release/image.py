"""What publishing needs from an ISO: a verdict as ``asl-verify iso`` gives it, and read access to the image.

:data:`IsoVerifier` is the verification step: ``(iso, provenance, trusted keys) -> VerifiedIso``.
:func:`default_verifier` is ``asl-verify iso`` (:mod:`asl_capture.audit`), all seven checks: what
``asl-release publish`` and ``asl-verify release`` use. :func:`reduced_verify` checks less (the chain
verifies, and a recorded step produced exactly these ISO bytes under this name) and says so in every
verdict; it is for ISOs that are not the pipeline's (the tests' small builds).

:func:`open_image` gives the bytes of ``/asl/build-manifest.cbor`` and an :class:`ImageTree` of the
system image (``/live/system.squashfs``), both read in place by the pure-Python readers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture.audit.iso9660 import IsoImage
from asl_capture.audit.squashfs import Node, SquashImage
from asl_capture.errors import ImageError, UsageError, VerificationError
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


def reduced_verify(iso: Path, provenance: Path, trusted: Mapping[bytes, Ed25519PublicKey]) -> VerifiedIso:
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
    """``asl-verify iso``: all seven checks (``docs/AUDIT.md``)."""
    def full(iso: Path, provenance: Path, trusted: Mapping[bytes, Ed25519PublicKey]) -> VerifiedIso:
        from asl_capture.audit.isoverify import verify_iso

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


def read_build_manifest(iso: Path) -> bytes:
    """The bytes of the ISO's ``/asl/build-manifest.cbor``.

    Raises:
        UsageError: the ISO has none, or it cannot be read.
    """
    with open_image(iso, system=False) as (build_manifest, _tree):
        return build_manifest


@contextmanager
def open_image(iso: Path, *, system: bool = True) -> Iterator[tuple[bytes, ListedTree]]:
    """The bytes of the ISO's build manifest and a tree of its system image, both read in place
    (the pure-Python readers of :mod:`asl_capture.audit`: no mount, no extraction).

    Raises:
        UsageError: the ISO lacks them, or they cannot be read.
    """
    try:
        fd = os.open(iso, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"{iso}: cannot open: {exc.strerror}") from None
    try:
        try:
            image = IsoImage(fd, name=iso.name)
            nodes = {n.path: n for n in image.walk()}
            manifest_node = nodes.get(BUILD_MANIFEST_PATH.encode())
            squash_node = nodes.get(SYSTEM_IMAGE_PATH.encode())
            if manifest_node is None or manifest_node.kind != "f":
                raise UsageError(f"{iso}: no /{BUILD_MANIFEST_PATH}")
            if system and (squash_node is None or squash_node.kind != "f"):
                raise UsageError(f"{iso}: no /{SYSTEM_IMAGE_PATH}")
            if manifest_node.size > MAX_BUILD_MANIFEST:
                raise UsageError(f"{iso}: /{BUILD_MANIFEST_PATH} is larger than {MAX_BUILD_MANIFEST} bytes")
            build_manifest = b"".join(os.pread(fd, length, start) for start, length in manifest_node.extents)
            files: dict[str, Node] = {}
            squash: SquashImage | None = None
            if system and squash_node is not None:
                start, length = image.file_extent(squash_node)
                squash = SquashImage(fd, offset=start, length=length, name=SYSTEM_IMAGE_PATH)
                files = {os.fsdecode(n.path): n for n in squash.walk()}
        except ImageError as exc:
            raise UsageError(f"{iso}: {exc}") from None
        entries = {path: (n.kind, None if n.target is None else os.fsdecode(n.target)) for path, n in files.items()}

        def read(path: str, limit: int) -> bytes:
            node = files[path]
            if squash is None or node.data is None or node.size > limit:
                raise UsageError(f"/{path}: larger than {limit} bytes")
            try:
                return b"".join(squash.file_chunks(node.data))
            except ImageError as exc:
                raise UsageError(f"/{path}: {exc}") from None

        yield build_manifest, ListedTree(entries, read)
    finally:
        os.close(fd)
