"""The object store of a nested capture: every object goes to the key holder's agent.

A capture that signs through an enclosing capture's agent may run as a build user that cannot
write the provenance directory, and must not be trusted to: its logs are written to a private
temporary directory of its own, its manifests to anonymous memory files, and each is handed to the
agent as a file descriptor (:meth:`asl_capture.agent.AgentClient.put_fd`), which reads, hashes and
stores it. The digest the agent computed is the one recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from asl_capture import safeio
from asl_capture.agent import AgentClient
from asl_capture.errors import AgentError, StoreError
from asl_capture.store import ProvenanceDir


class SpoolStore:
    """An :class:`~asl_capture.store.ObjectStore` look-alike whose objects the agent stores."""

    def __init__(self, client: AgentClient, prov: ProvenanceDir) -> None:
        self.prov = prov
        self._client = client
        self._dir: Path | None = None

    def _spool(self) -> Path:
        if self._dir is None:
            try:
                self._dir = Path(tempfile.mkdtemp(prefix="asl-spool-"))
            except OSError as exc:
                raise StoreError(f"cannot create a spool directory for the step's logs: {exc.strerror}") from None
        return self._dir

    def close(self) -> None:
        """Remove the spool directory (idempotent)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def put_fd(self, fd: int) -> tuple[bytes, int]:
        """Have the agent store what ``fd`` (a regular file) holds from its offset on.

        Raises:
            StoreError: the agent refused or is gone.
        """
        try:
            return self._client.put_fd(fd)
        except AgentError as exc:
            raise StoreError(f"the signing agent could not store an object: {exc}") from None

    def put(self, data: bytes) -> bytes:
        """Store ``data`` through the agent; return its SHA-256.

        Raises:
            StoreError: it cannot be handed over, or the agent stored other bytes.
        """
        try:
            fd = os.memfd_create("asl-object", os.MFD_CLOEXEC)
        except OSError as exc:
            raise StoreError(f"cannot hand an object to the signing agent: {exc.strerror}") from None
        try:
            try:
                safeio.write_all(fd, data)
                os.lseek(fd, 0, os.SEEK_SET)
            except OSError as exc:
                raise StoreError(f"cannot hand an object to the signing agent: {exc.strerror}") from None
            digest, _size = self.put_fd(fd)
        finally:
            os.close(fd)
        if digest != hashlib.sha256(data).digest():
            raise StoreError("the signing agent stored other bytes than those handed to it")
        return digest

    def new_temp(self) -> tuple[int, Path]:
        """A temporary file in the spool directory (for a log being written).

        Raises:
            StoreError: it cannot be created.
        """
        try:
            return safeio.new_temp(self._spool(), ".tmp-")
        except OSError as exc:
            raise StoreError(f"{self._dir}: cannot create a temporary file: {exc.strerror}") from None

    def adopt(self, tmp_path: Path, digest: bytes) -> None:
        """Hand a fully written temporary file whose SHA-256 is ``digest`` to the agent; remove it.

        Raises:
            StoreError: the agent refused, or stored other bytes.
        """
        try:
            try:
                fd = os.open(tmp_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise StoreError(f"{tmp_path}: cannot hand a log to the signing agent: {exc.strerror}") from None
            try:
                stored, _size = self.put_fd(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        if stored != digest:
            raise StoreError("the signing agent stored other bytes than the log handed to it")
