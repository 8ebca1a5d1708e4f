"""The provenance directory and its content-addressed object store.

Layout: ``chain.cbor`` (the signed records), ``chain.lock`` (the append lock), ``head`` (a cache
of where the last record ends, always checked against the chain itself), ``statcache`` (the
hashing cache) and ``objects/sha256/<2 hex>/<62 hex>`` whose names are the SHA-256 of their bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Protocol

from asl_capture import safeio
from asl_capture.errors import StoreError
from asl_capture.frozen import frozen

CHAIN_NAME = "chain.cbor"


@frozen
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

        An existing directory (and its ``objects/sha256``) must be owned by the caller and not
        writable by group or others, and so must every directory above it unless it is owned by
        root or is sticky: otherwise another user could swap files under a writer that may run as
        root. New directories are made ``0755`` whatever the umask.

        Raises:
            StoreError: it cannot be created, is not a directory, is not writable, or is unsafe.
        """
        root = Path(os.path.abspath(root))
        try:
            for path in (root, root / "objects", root / "objects" / "sha256"):
                try:
                    path.mkdir(mode=0o755, parents=path is root)
                except FileExistsError:
                    if not path.is_dir():
                        raise
                    continue
                os.chmod(path, 0o755)  # noqa: S103 - readable by auditors, writable by the owner only
        except FileExistsError:
            raise StoreError(f"{root}: provenance path exists and is not a directory") from None
        except OSError as exc:
            raise StoreError(f"{root}: cannot create provenance directory: {exc.strerror}") from None
        _check_owned(root)
        for sub in (root / "objects", root / "objects" / "sha256"):
            _check_owned(sub, follow=False)
        if not os.access(root, os.W_OK | os.X_OK):
            raise StoreError(f"{root}: provenance directory is not writable")
        # abspath, not Path.absolute(): '..' is collapsed, so the root equals the paths a walk yields.
        return cls(root)

    @classmethod
    def existing(cls, root: Path) -> ProvenanceDir:
        """Open an existing provenance directory for reading.

        Raises:
            StoreError: it is missing, not a directory, or holds no chain.
        """
        if not root.is_dir():
            if root.exists():
                hint = f"; give the directory holding it, {root.parent}" if root.name == CHAIN_NAME else ""
                raise StoreError(f"{root}: is a file, not a provenance directory{hint}")
            raise StoreError(f"{root}: no such provenance directory")
        prov = cls(Path(os.path.abspath(root)))
        if not prov.chain.is_file():
            raise StoreError(f"{root}: no {CHAIN_NAME} in this directory (empty provenance directory)")
        return prov


def _check_owned(path: Path, *, follow: bool = True) -> None:
    """Refuse a directory another user could change (see :meth:`ProvenanceDir.create`).

    Raises:
        StoreError: not a directory, not owned by us, writable by group or others, or below a
            directory another user could write without the sticky bit.
    """
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot use provenance directory: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path}: provenance path exists and is not a directory")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise StoreError(f"{path}: provenance directory is owned by uid {st.st_uid}, not by the caller (uid {uid}); "
                         f"refusing to write where another user can swap files")
    if st.st_mode & 0o022:
        raise StoreError(f"{path}: provenance directory is writable by group or others (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); run 'chmod go-w {path}'")
    if not follow:
        return
    real = Path(os.path.realpath(path))
    for parent in real.parents:
        try:
            pst = os.stat(parent)
        except OSError as exc:
            raise StoreError(f"{parent}: cannot check directory: {exc.strerror}") from None
        if pst.st_uid not in (0, uid) or (pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX):
            raise StoreError(f"{path}: provenance directory lies under {parent}, which another user can change "
                             f"(owner uid {pst.st_uid}, mode {stat.S_IMODE(pst.st_mode):04o})")


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store(Protocol):
    """What a capture writes objects through: the object store itself, or (for a capture nested in
    a build) :class:`asl_capture.spool.SpoolStore`, which hands them to the key holder."""

    prov: ProvenanceDir

    def put(self, data: bytes) -> bytes: ...

    def put_fd(self, fd: int) -> tuple[bytes, int]: ...

    def new_temp(self) -> tuple[int, Path]: ...

    def adopt(self, tmp_path: Path, digest: bytes) -> None: ...


class ObjectStore:
    """Content-addressed storage: an object's name is the SHA-256 of its bytes."""

    def __init__(self, prov: ProvenanceDir) -> None:
        self.prov = prov

    def put(self, data: bytes) -> bytes:
        """Store ``data`` (once) and return its SHA-256. An existing copy that no longer matches its
        name (damaged on disk) is replaced. A failed write (a full disk) leaves nothing behind.

        Raises:
            StoreError: the object cannot be written.
        """
        digest = hashlib.sha256(data).digest()
        target = self.prov.object_path(digest)
        if self.check(digest) is None:  # present and intact; a damaged copy is replaced below
            return digest
        try:
            target.parent.mkdir(exist_ok=True)
            safeio.replace_atomically(target, data, mode=0o444)
            fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(f"{target}: cannot store object: {exc.strerror}") from None
        return digest

    def put_fd(self, fd: int) -> tuple[bytes, int]:
        """Store what ``fd`` holds from its position to its end, read in chunks (never whole in
        memory); return the object's SHA-256 and size. A failed write (a full disk) leaves nothing.

        Raises:
            StoreError: the object cannot be written, or ``fd`` cannot be read.
        """
        tmp_fd, tmp_path = self.new_temp()
        h = hashlib.sha256()
        size = 0
        try:
            try:
                while chunk := os.read(fd, 1 << 20):
                    h.update(chunk)
                    size += len(chunk)
                    safeio.write_all(tmp_fd, chunk)
                os.fsync(tmp_fd)
            finally:
                os.close(tmp_fd)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise StoreError(f"{self.prov.objects}: cannot store object: {safeio.describe(exc)}") from None
        digest = h.digest()
        self.adopt(tmp_path, digest)
        return digest, size

    def adopt(self, tmp_path: Path, digest: bytes) -> None:
        """Move a fully written, fsynced temporary file whose SHA-256 is ``digest`` into the store
        (an intact copy already there is kept, a damaged one replaced). The temporary file is gone
        afterwards, whatever happens.

        Raises:
            StoreError: the rename fails.
        """
        target = self.prov.object_path(digest)
        try:
            target.parent.mkdir(exist_ok=True)
            if self.check(digest) is None:
                tmp_path.unlink()
                return
            os.chmod(tmp_path, 0o444)
            os.replace(tmp_path, target)
            fsync_dir(target.parent)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise StoreError(f"{target}: cannot store object: {exc.strerror}") from None

    def new_temp(self) -> tuple[int, Path]:
        """A temporary file inside the store (same filesystem, so :meth:`adopt` is a rename).

        Raises:
            StoreError: it cannot be created.
        """
        try:
            return safeio.new_temp(self.prov.objects, ".tmp-")
        except OSError as exc:
            raise StoreError(f"{self.prov.objects}: cannot create a temporary file: {exc.strerror}") from None

    def read(self, digest: bytes, *, limit: int = 1 << 30) -> bytes:
        """The bytes of an object (a regular file of at most ``limit`` bytes), checked against its name.

        Raises:
            StoreError: the object is missing, unsafe, too large, or its bytes do not match its digest.
        """
        path = self.prov.object_path(digest)
        try:
            data = safeio.read_regular(path, limit=limit, what="object")
        except OSError as exc:
            raise StoreError(f"object {digest.hex()} missing or unreadable: {safeio.describe(exc)}") from None
        if hashlib.sha256(data).digest() != digest:
            raise StoreError(f"object {digest.hex()} does not match its digest")
        return data

    def check(self, digest: bytes, *, size: int | None = None) -> str | None:
        """None when the object is present (a regular file, not a symlink; of ``size`` bytes when
        given) and matches its digest, else what is wrong. Reads in fixed-size chunks."""
        path = self.prov.object_path(digest)
        h = hashlib.sha256()
        try:
            fd, actual = safeio.open_regular(path, what="object")
            try:
                if size is not None and actual != size:
                    return f"object {digest.hex()} is {actual} bytes, the record says {size}"
                while chunk := os.read(fd, 1 << 20):
                    h.update(chunk)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"object {digest.hex()} missing or unreadable ({safeio.describe(exc)})"
        if h.digest() != digest:
            return f"object {digest.hex()} does not match its digest"
        return None
