"""The build manifest the ISO carries as ``/asl/build-manifest.cbor``: docs/FORMAT.md section 10.

It names, by digest, what went into the image: the pinned sources (mirror-independent archive
paths), the overlay and system trees (digests of their tree manifests, section 6.1) and the boot
files. It holds no timestamps, build paths, host names or random ids, so two reproducible builds
give the same bytes; the SHA-256 of those bytes is the image identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.errors import FormatError
from asl_capture.format import _check as c
from asl_capture.format.constants import BUILD_MANIFEST_VERSION
from asl_capture.frozen import frozen


@dataclass(frozen=True, slots=True, order=True)
class BuildSource:
    """``[kind, archive path, sha256]``: one pinned source, e.g. ``["deb", "pool/main/...", digest]``."""

    kind: str
    path: str
    sha256: bytes

    def to_value(self) -> list[Value]:
        return [self.kind, self.path, self.sha256]

    @classmethod
    def from_value(cls, value: Value, where: str) -> BuildSource:
        item = c.array(value, where)
        if len(item) != 3:
            raise FormatError(where, f"expected an array of 3, found {len(item)} item(s)")
        return cls(kind=c.text(item[0], c.index(where, 0)), path=c.text(item[1], c.index(where, 1)),
                   sha256=c.digest(item[2], c.index(where, 2)))


@frozen
class TreeDigest(c.Struct):
    """``{"manifest", "paths"}``: the digest of a tree's manifest and how many paths it lists."""

    manifest: bytes
    paths: int

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"manifest": c.digest, "paths": c.uint}


@frozen
class SystemTree(c.Struct):
    """``{"manifest", "paths", "files"}``: the system tree's manifest digest, path and file counts."""

    manifest: bytes
    paths: int
    files: int

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"manifest": c.digest, "paths": c.uint, "files": c.uint}


def sources_digest(sources: tuple[BuildSource, ...]) -> bytes:
    """SHA-256 of the deterministic CBOR of the ``sources`` array."""
    return hashlib.sha256(dcbor.encode([s.to_value() for s in sources])).digest()


def _sources(value: Value, where: str) -> tuple[BuildSource, ...]:
    """``[* [kind, path, sha256]]``, sorted and unique."""
    sources: tuple[BuildSource, ...] = c.array_of(BuildSource.from_value)(value, where)
    for i in range(1, len(sources)):
        if sources[i] <= sources[i - 1]:
            raise FormatError(c.index(where, i), "sources not sorted or repeated")
    return sources


@frozen
class BuildManifest(c.Struct):
    """What went into the image, by digest. ``sources`` are sorted and unique."""

    name: str
    version: str
    source_date_epoch: int
    kernel: str
    sources: tuple[BuildSource, ...]
    overlay: TreeDigest
    system: SystemTree
    files: Mapping[str, bytes]

    VERSION: ClassVar[int | None] = BUILD_MANIFEST_VERSION
    FIELDS: ClassVar[Mapping[str, c.Check]] = {
        "name": c.text, "version": c.text, "source_date_epoch": c.integer, "kernel": c.text, "sources": _sources,
        "overlay": TreeDigest.from_value, "system": SystemTree.from_value, "files": c.map_of(c.digest),
    }

    def to_value(self) -> dict[str, Value]:
        """The fields, and ``sources_digest`` computed from ``sources``."""
        return {**c.Struct.to_value(self), "sources_digest": sources_digest(self.sources)}

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value`: the bytes of ``/asl/build-manifest.cbor``."""
        return dcbor.encode(self.to_value())

    @property
    def identity(self) -> str:
        """The image identity: ``sha256:<hex>`` of :meth:`to_cbor`."""
        return f"sha256:{hashlib.sha256(self.to_cbor()).hexdigest()}"

    @classmethod
    def from_value(cls, value: Value, where: str = "") -> BuildManifest:
        """Check a decoded build manifest, including ``sources_digest`` against ``sources``.

        Raises:
            FormatError: names the offending field.
        """
        body = dict(c.mapping(value, where))
        if "sources_digest" not in body:
            raise FormatError(c.at(where, "sources_digest"), "missing")
        digest = c.digest(body.pop("sources_digest"), c.at(where, "sources_digest"))
        manifest = super(BuildManifest, cls).from_value(body, where)  # noqa: UP008 - a slots dataclass is a new class: bare super() fails
        if digest != sources_digest(manifest.sources):
            raise FormatError(c.at(where, "sources_digest"), "is not the SHA-256 of the encoded sources")
        return manifest

    @classmethod
    def from_cbor(cls, data: bytes) -> BuildManifest:
        """Decode and check ``/asl/build-manifest.cbor``.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 build manifest.
        """
        return cls.from_value(dcbor.decode(data))
