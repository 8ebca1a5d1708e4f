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

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.errors import FormatError
from asl_capture.format import _check as c
from asl_capture.format.constants import BUILD_MANIFEST_VERSION


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


@dataclass(frozen=True, slots=True)
class TreeDigest:
    """``{"manifest", "paths"}``: the digest of a tree's manifest and how many paths it lists."""

    manifest: bytes
    paths: int

    def to_value(self) -> dict[str, Value]:
        return {"manifest": self.manifest, "paths": self.paths}

    @classmethod
    def from_value(cls, value: Value, where: str) -> TreeDigest:
        body = c.fields(value, where, ("manifest", "paths"))
        return cls(manifest=c.digest(body["manifest"], c.at(where, "manifest")),
                   paths=c.uint(body["paths"], c.at(where, "paths")))


@dataclass(frozen=True, slots=True)
class SystemTree:
    """``{"manifest", "paths", "files"}``: the system tree's manifest digest, path and file counts."""

    manifest: bytes
    paths: int
    files: int

    def to_value(self) -> dict[str, Value]:
        return {"manifest": self.manifest, "paths": self.paths, "files": self.files}

    @classmethod
    def from_value(cls, value: Value, where: str) -> SystemTree:
        body = c.fields(value, where, ("manifest", "paths", "files"))
        return cls(manifest=c.digest(body["manifest"], c.at(where, "manifest")),
                   paths=c.uint(body["paths"], c.at(where, "paths")),
                   files=c.uint(body["files"], c.at(where, "files")))


def sources_digest(sources: tuple[BuildSource, ...]) -> bytes:
    """SHA-256 of the deterministic CBOR of the ``sources`` array."""
    return hashlib.sha256(dcbor.encode([s.to_value() for s in sources])).digest()


@dataclass(frozen=True, slots=True)
class BuildManifest:
    """What went into the image, by digest. ``sources`` are sorted and unique."""

    name: str
    version: str
    source_date_epoch: int
    kernel: str
    sources: tuple[BuildSource, ...]
    overlay: TreeDigest
    system: SystemTree
    files: Mapping[str, bytes]

    def to_value(self) -> dict[str, Value]:
        return {
            "v": BUILD_MANIFEST_VERSION, "name": self.name, "version": self.version,
            "source_date_epoch": self.source_date_epoch, "kernel": self.kernel,
            "sources": [s.to_value() for s in self.sources], "sources_digest": sources_digest(self.sources),
            "overlay": self.overlay.to_value(), "system": self.system.to_value(), "files": dict(self.files),
        }

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value`: the bytes of ``/asl/build-manifest.cbor``."""
        return dcbor.encode(self.to_value())

    @property
    def identity(self) -> str:
        """The image identity: ``sha256:<hex>`` of :meth:`to_cbor`."""
        return f"sha256:{hashlib.sha256(self.to_cbor()).hexdigest()}"

    @classmethod
    def from_value(cls, value: Value) -> BuildManifest:
        """Check a decoded build manifest, including the order of ``sources`` and ``sources_digest``.

        Raises:
            FormatError: names the offending field.
        """
        body = c.fields(value, "", ("v", "name", "version", "source_date_epoch", "kernel", "sources",
                                    "sources_digest", "overlay", "system", "files"))
        c.version(body["v"], "v", BUILD_MANIFEST_VERSION)
        sources = tuple(BuildSource.from_value(s, c.index("sources", i))
                        for i, s in enumerate(c.array(body["sources"], "sources")))
        for i in range(1, len(sources)):
            if sources[i] <= sources[i - 1]:
                raise FormatError(c.index("sources", i), "sources not sorted or repeated")
        if c.digest(body["sources_digest"], "sources_digest") != sources_digest(sources):
            raise FormatError("sources_digest", "is not the SHA-256 of the encoded sources")
        files = {name: c.digest(d, c.at("files", name)) for name, d in c.mapping(body["files"], "files").items()}
        return cls(name=c.text(body["name"], "name"), version=c.text(body["version"], "version"),
                   source_date_epoch=c.integer(body["source_date_epoch"], "source_date_epoch"),
                   kernel=c.text(body["kernel"], "kernel"), sources=sources,
                   overlay=TreeDigest.from_value(body["overlay"], "overlay"),
                   system=SystemTree.from_value(body["system"], "system"), files=files)

    @classmethod
    def from_cbor(cls, data: bytes) -> BuildManifest:
        """Decode and check ``/asl/build-manifest.cbor``.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 build manifest.
        """
        return cls.from_value(dcbor.decode(data))
