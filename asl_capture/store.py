"""The provenance directory and its content-addressed object store.

Layout: ``chain.cbor`` (the signed records), ``chain.lock`` (the append lock), ``head`` (a cache
of where the last record ends, always checked against the chain itself), ``statcache`` (the
hashing cache) and ``objects/sha256/<2 hex>/<62 hex>`` whose names are the SHA-256 of their bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asl_capture.errors import StoreError

CHAIN_NAME = "chain.cbor"


@dataclass(frozen=True, slots=True)
class ProvenanceDir:
    """Paths inside one provenance directory."""

    root: Path

    @property
    def chain(self) -> Path:
        return self.root / CHAIN_NAME

    @property
    def lock(self) -> Path:
        return self.root / "chain.lock"

    @property
    def head(self) -> Path:
        return self.root / "head"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.cose"

    @property
    def statcache(self) -> Path:
        return self.root / "statcache"

    @property
    def objects(self) -> Path:
        return self.root / "objects" / "sha256"

    def object_path(self, digest: bytes) -> Path:
        """Where the object with this SHA-256 lives."""
        name = digest.hex()
        return self.objects / name[:2] / name[2:]

    @classmethod
    def create(cls, root: Path) -> ProvenanceDir:
        """Open a provenance directory for writing, creating it if needed.

        Raises:
            StoreError: it cannot be created, is not a directory, or is not writable.
        """
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "objects" / "sha256").mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreError(f"{root}: provenance path exists and is not a directory") from None
        except OSError as exc:
            raise StoreError(f"{root}: cannot create provenance directory: {exc.strerror}") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise StoreError(f"{root}: provenance directory is not writable")
        # abspath, not Path.absolute(): '..' is collapsed, so the root equals the paths a walk yields.
        return cls(Path(os.path.abspath(root)))

    @classmethod
    def existing(cls, root: Path) -> ProvenanceDir:
        """Open an existing provenance directory for reading.

        Raises:
            StoreError: it is missing, not a directory, or holds no chain.
        """
        if not root.is_dir():
            raise StoreError(f"{root}: no such provenance directory")
        prov = cls(Path(os.path.abspath(root)))
        if not prov.chain.is_file():
            raise StoreError(f"{root}: no {CHAIN_NAME} in this directory (empty provenance directory)")
        return prov


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """Content-addressed storage: an object's name is the SHA-256 of its bytes."""

    def __init__(self, prov: ProvenanceDir) -> None:
        self.prov = prov

    def put(self, data: bytes) -> bytes:
        """Store ``data`` (once) and return its SHA-256. An existing copy that no longer matches its
        name (damaged on disk) is replaced.

        Raises:
            StoreError: the object cannot be written.
        """
        digest = hashlib.sha256(data).digest()
        target = self.prov.object_path(digest)
        if self.check(digest) is None:  # present and intact; a damaged copy is replaced below
            return digest
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(f"{target}: cannot store object: {exc.strerror}") from None
        return digest

    def adopt(self, tmp_path: Path, digest: bytes) -> None:
        """Move a fully written, fsynced temporary file whose SHA-256 is ``digest`` into the store.

        Raises:
            StoreError: the rename fails.
        """
        target = self.prov.object_path(digest)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_file():
                tmp_path.unlink()
                return
            os.chmod(tmp_path, 0o444)
            os.replace(tmp_path, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(f"{target}: cannot store object: {exc.strerror}") from None

    def new_temp(self) -> tuple[int, Path]:
        """A temporary file inside the store (same filesystem, so :meth:`adopt` is a rename).

        Raises:
            StoreError: it cannot be created.
        """
        try:
            fd, name = tempfile.mkstemp(dir=self.prov.objects, prefix=".tmp-")
        except OSError as exc:
            raise StoreError(f"{self.prov.objects}: cannot create a temporary file: {exc.strerror}") from None
        return fd, Path(name)

    def read(self, digest: bytes) -> bytes:
        """The bytes of an object, checked against its name.

        Raises:
            StoreError: the object is missing or its bytes do not match its digest.
        """
        path = self.prov.object_path(digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"object {digest.hex()} missing or unreadable: {exc.strerror}") from None
        if hashlib.sha256(data).digest() != digest:
            raise StoreError(f"object {digest.hex()} does not match its digest")
        return data

    def check(self, digest: bytes) -> str | None:
        """None when the object is present and matches its digest, else what is wrong."""
        path = self.prov.object_path(digest)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            return f"object {digest.hex()} missing or unreadable ({exc.strerror})"
        if h.digest() != digest:
            return f"object {digest.hex()} does not match its digest"
        return None
