"""The durable source store: every file a build took from outside (``.deb``, InRelease, Packages), by digest.

Layout: ``ROOT/<sha256 hex>``, one regular file per digest, written atomically and hard-linked
when the source is on the same file system. The rootfs step fills it (``pipeline/tools/aptsources.py
pinned --store``); ``asl-verify rebuild`` reads it, so a rebuild still works after the mirror has
moved on. Archiving a release's sources is copying the files its record names (see
``docs/REBUILD.md``). Default root: ``${XDG_CACHE_HOME:-~/.cache}/asl-capture/sha256``.

Every read re-checks the digest: the store is a cache someone else could write, so a damaged or
replaced file is reported, never used. Stdlib only (the pipeline imports it before the package is
installed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from asl_capture.errors import AslError
from asl_capture.hashing import sha256_path

_HEX64 = re.compile(r"[0-9a-f]{64}")
_BUF = 1 << 20


class SourceStoreError(AslError):
    """A store file is unusable (wrong digest, not a regular file) or cannot be written."""


def default_root(environ: Mapping[str, str]) -> Path:
    """``${XDG_CACHE_HOME:-$HOME/.cache}/asl-capture/sha256``."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "asl-capture" / "sha256"


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a regular file, read without following a final symlink.

    Raises:
        SourceStoreError: not a regular file, or unreadable.
    """
    try:
        return sha256_path(path).hex()
    except OSError as exc:
        raise SourceStoreError(f"{path}: cannot open or read: {exc.strerror}") from None


def check_digest(digest: str) -> str:
    """``digest`` when it is 64 lowercase hex digits. Raises SourceStoreError otherwise."""
    if not _HEX64.fullmatch(digest):
        raise SourceStoreError(f"not a sha256 hex digest: {digest!r}")
    return digest


class SourceStore:
    """Files by SHA-256 under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        """Where the file with ``digest`` is (or would be) kept."""
        return self.root / check_digest(digest)

    def get(self, digest: str) -> Path | None:
        """The stored file with ``digest``, checked; None when absent.

        Raises:
            SourceStoreError: a file is stored under that name but its bytes do not match.
        """
        path = self.path(digest)
        if not os.path.lexists(path):
            return None
        actual = file_sha256(path)
        if actual != digest:
            raise SourceStoreError(f"{path}: damaged store entry (its sha256 is {actual})")
        return path

    def put(self, src: Path, digest: str) -> Path:
        """Keep ``src`` (whose SHA-256 must be ``digest``) in the store; returns the stored path.

        Raises:
            SourceStoreError: ``src`` does not match ``digest``, or the store cannot be written.
        """
        dest = self.path(digest)
        try:
            if os.path.lexists(dest) and file_sha256(dest) == digest:
                return dest
        except SourceStoreError:
            pass  # a damaged entry: replaced below
        actual = file_sha256(src)
        if actual != digest:
            raise SourceStoreError(f"{src}: sha256 {actual}, expected {digest}")
        tmp = dest.with_name(f".{digest}.{os.getpid()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(tmp):
                tmp.unlink()
            try:
                os.link(src, tmp)
            except OSError:
                _copy(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except OSError as exc:
            if os.path.lexists(tmp):
                tmp.unlink()
            raise SourceStoreError(f"{dest}: cannot store: {exc.strerror}") from None
        return dest

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests of ``digests`` that are not stored (damaged entries count as missing)."""
        out = []
        for digest in digests:
            try:
                if self.get(digest) is None:
                    out.append(digest)
            except SourceStoreError:
                out.append(digest)
        return out


def index_dir(directory: Path, pattern: str = "*") -> dict[str, Path]:
    """``{sha256: path}`` of the regular files directly in ``directory`` matching ``pattern``.

    Raises:
        SourceStoreError: ``directory`` cannot be listed.
    """
    try:
        paths = sorted(directory.glob(pattern))
    except OSError as exc:
        raise SourceStoreError(f"{directory}: cannot list: {exc.strerror}") from None
    out: dict[str, Path] = {}
    for path in paths:
        if path.name.startswith(".") or path.is_symlink() or not path.is_file():
            continue
        out.setdefault(file_sha256(path), path)
    return out


def _copy(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, dest.open("xb") as fout:
        while chunk := fin.read(_BUF):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
