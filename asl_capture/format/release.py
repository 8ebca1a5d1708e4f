"""``RELEASE.cbor``'s payload, the release manifest (docs/FORMAT.md section 11, docs/RELEASE.md).

It names what was released (image name and version, the ISO's name, digest and size, the image
identity = SHA-256 of ``/asl/build-manifest.cbor``), the build record it was checked against (chain
id, head seq and digest, ``source_date_epoch``, the build keys that signed the chain), every other
file of the release directory with its digest, and the image's compatibility surface (for the
versioning rule). Because it names the chain's head, cutting records from the chain, extending it,
or putting back an older checkpoint is detected. It is signed (COSE_Sign1) by the release key with
content type :data:`~asl_capture.format.constants.RELEASE_CONTENT_TYPE`.
"""

from __future__ import annotations

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.errors import FormatError
from asl_capture.format import _check as c
from asl_capture.format.constants import RELEASE_VERSION
from asl_capture.format.record import CHAIN_ID_SIZE, PUBLIC_KEY_SIZE
from asl_capture.frozen import frozen

#: The manifest's file name in a release directory.
MANIFEST_NAME = "RELEASE.cbor"
_FIELDS = ("v", "name", "version", "iso", "image", "chain", "head", "source_date_epoch", "build_keys", "files",
           "compat")


@frozen
class BuildKey:
    """A key that signed the build's chain: its key id, raw public key, and whether it was ephemeral."""

    kid: bytes
    public: bytes
    ephemeral: bool

    def to_value(self) -> dict[str, Value]:
        return {"kid": self.kid, "public": self.public, "ephemeral": self.ephemeral}

    @classmethod
    def from_value(cls, value: Value, where: str) -> BuildKey:
        body = c.fields(value, where, ("kid", "public", "ephemeral"))
        return cls(kid=c.digest(body["kid"], c.at(where, "kid")),
                   public=c.bstr(body["public"], c.at(where, "public"), PUBLIC_KEY_SIZE),
                   ephemeral=c.boolean(body["ephemeral"], c.at(where, "ephemeral")))


@frozen
class ReleaseFile:
    """One file of the release directory: ``/``-separated path relative to it, SHA-256, size."""

    path: str
    sha256: bytes
    size: int

    def to_value(self) -> list[Value]:
        return [self.path, self.sha256, self.size]

    @classmethod
    def from_value(cls, value: Value, where: str) -> ReleaseFile:
        row = c.array(value, where)
        if len(row) != 3:
            raise FormatError(where, f"expected [path, sha256, size], found {len(row)} items")
        return cls(path=c.text(row[0], c.index(where, 0)), sha256=c.digest(row[1], c.index(where, 1)),
                   size=c.uint(row[2], c.index(where, 2)))


@frozen
class Surface:
    """What the versioning rule compares: the record format's major version, the spec's overlay layout
    paths present in the image (path -> kind), and ``config.yaml``'s schema (key path -> type)."""

    record_format: int
    layout: dict[str, str]
    config: dict[str, str]

    def to_value(self) -> dict[str, Value]:
        return {"record_format": self.record_format, "layout": dict(self.layout), "config": dict(self.config)}

    @classmethod
    def from_value(cls, value: Value, where: str = "compat") -> Surface:
        body = c.fields(value, where, ("record_format", "layout", "config"))
        layout = c.mapping(body["layout"], c.at(where, "layout"))
        config = c.mapping(body["config"], c.at(where, "config"))
        return cls(record_format=c.uint(body["record_format"], c.at(where, "record_format")),
                   layout={k: c.text(v, c.at(c.at(where, "layout"), k)) for k, v in layout.items()},
                   config={k: c.text(v, c.at(c.at(where, "config"), k)) for k, v in config.items()})


@frozen
class ReleaseManifest:
    """The payload of ``RELEASE.cbor``, version 1."""

    name: str
    version: str
    iso_name: str
    iso_sha256: bytes
    iso_size: int
    image: bytes
    chain: bytes
    head_seq: int
    head_digest: bytes
    source_date_epoch: int
    build_keys: tuple[BuildKey, ...]
    files: tuple[ReleaseFile, ...]
    compat: Surface

    def to_value(self) -> dict[str, Value]:
        return {
            "v": RELEASE_VERSION,
            "name": self.name,
            "version": self.version,
            "iso": {"name": self.iso_name, "sha256": self.iso_sha256, "size": self.iso_size},
            "image": self.image,
            "chain": self.chain,
            "head": {"seq": self.head_seq, "digest": self.head_digest},
            "source_date_epoch": self.source_date_epoch,
            "build_keys": [k.to_value() for k in self.build_keys],
            "files": [f.to_value() for f in self.files],
            "compat": self.compat.to_value(),
        }

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value` (the payload that is signed)."""
        return dcbor.encode(self.to_value())

    @classmethod
    def from_value(cls, value: Value) -> ReleaseManifest:
        """Check a decoded release manifest.

        Raises:
            FormatError: names the offending field.
        """
        body = c.fields(value, "", _FIELDS)
        c.version(body["v"], "v", RELEASE_VERSION)
        iso = c.fields(body["iso"], "iso", ("name", "sha256", "size"))
        head = c.fields(body["head"], "head", ("seq", "digest"))
        return cls(
            name=c.text(body["name"], "name"), version=c.text(body["version"], "version"),
            iso_name=c.text(iso["name"], "iso.name"), iso_sha256=c.digest(iso["sha256"], "iso.sha256"),
            iso_size=c.uint(iso["size"], "iso.size"), image=c.digest(body["image"], "image"),
            chain=c.bstr(body["chain"], "chain", CHAIN_ID_SIZE), head_seq=c.uint(head["seq"], "head.seq"),
            head_digest=c.digest(head["digest"], "head.digest"),
            source_date_epoch=c.uint(body["source_date_epoch"], "source_date_epoch"),
            build_keys=tuple(BuildKey.from_value(k, c.index("build_keys", i))
                             for i, k in enumerate(c.array(body["build_keys"], "build_keys"))),
            files=tuple(ReleaseFile.from_value(f, c.index("files", i))
                        for i, f in enumerate(c.array(body["files"], "files"))),
            compat=Surface.from_value(body["compat"]),
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> ReleaseManifest:
        """Decode and check a release manifest payload.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 release manifest.
        """
        return cls.from_value(dcbor.decode(data))
