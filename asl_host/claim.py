"""The environment claim of a boot: which image ran, on which kernel, with which tools, over which stores.

``image`` is ``sha256:<hex>`` of the build manifest on the boot medium (``/asl/build-manifest.cbor``
in the ISO, the value ``asl-verify iso`` prints as the image identity), so a running host is tied to
its build record. The claim is a COSE_Sign1 by the host's key (created on the data disk at the
first boot, 0600) and is written, immutable, to ``.asl-host/env-claims/<boot>.claim``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import stat
from dataclasses import dataclass
from pathlib import Path

from asl_capture import dcbor, keys
from asl_capture.errors import KeyFileError
from asl_host import ed25519, signed
from asl_host.authority import Trust, Verdict
from asl_host.errors import StorageError
from asl_host.formats import CT_CLAIM, EnvironmentClaim, FormatError, decode, hash_text
from asl_host.paths import CLAIMS_DIR, HOST_KEY_NAME, HOST_TOOLS, OBJECTS_DIR

UNKNOWN_IMAGE = "sha256:" + "0" * 64


@dataclass(frozen=True)
class Made:
    """A written claim: where, and the image identity it names."""

    path: Path
    image: str
    claim: EnvironmentClaim


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return hash_text(h.digest())


def image_identity(manifest: Path) -> str:
    """The image identity, or all zeros when no boot medium is mounted (not a booted image)."""
    try:
        return file_digest(manifest)
    except OSError:
        return UNKNOWN_IMAGE


def tool_digests() -> dict[str, str]:
    """Digests of the host tools in the image: the launchers and every module of the host runtime."""
    import asl_capture
    import asl_host

    out: dict[str, str] = {}
    for path in HOST_TOOLS:
        if path.is_file():
            out[str(path)] = file_digest(path)
    for pkg in (asl_host, asl_capture):
        base = Path(pkg.__file__ or "").parent
        for file in sorted(base.rglob("*.py")):
            out[str(file)] = file_digest(file)
    return out


def store_checksum(store: Path) -> str:
    """``sha256:`` over the sorted (path, type, size, content digest or link target) of a store's tree.

    Objects are content-addressed: their name stands for their content and they are not re-read at
    every boot (``asl-rescue check`` re-hashes them).
    """
    h = hashlib.sha256()
    if not store.is_dir():
        return hash_text(h.digest())
    entries: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(store):
        dirnames.sort()
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(store).as_posix()
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                named = rel.startswith(f"{OBJECTS_DIR}/sha256/") and rel.count("/") == 3
                digest = "sha256:" + rel.split("/")[2] + name if named else file_digest(path)
                entries.append((rel, f"f {st.st_size} {digest}"))
            elif stat.S_ISLNK(st.st_mode):
                entries.append((rel, f"l {os.readlink(path)}"))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, "d"))
            else:
                entries.append((rel, "o"))
    for rel, desc in sorted(entries):
        h.update(f"{rel}\0{desc}\n".encode("utf-8", "surrogateescape"))
    return hash_text(h.digest())


def host_seed(state: Path) -> bytes:
    """The host's private key, created (0600) on the data disk at the first boot. Raises StorageError."""
    path = state / HOST_KEY_NAME
    try:
        if not path.exists():
            keys.save_seed(path, os.urandom(32))
        return keys.load_seed(path)
    except KeyFileError as exc:
        raise StorageError(f"host key: {exc}") from None


def write_claim(state: Path, *, boot: int, trust: Trust, verdicts: tuple[Verdict, ...], manifest: Path) -> Made:
    """Build, sign and write this boot's claim. Raises StorageError."""
    seed = host_seed(state)
    image = image_identity(manifest)
    stores = {v.name: {"id": v.domain_id, "state": v.state, "reason": v.reason or "",
                       "checksum": store_checksum(v.path)} for v in verdicts}
    made = EnvironmentClaim(image=image, kernel=platform.release(), boot=boot, host_key=ed25519.public_key(seed),
                            roots=trust.roots.set_id, policy_hash=trust.policy_hash, tools=tool_digests(),
                            stores=stores)
    data = signed.sign1(dcbor.encode(made.to_value()), seed, CT_CLAIM)
    directory = state / CLAIMS_DIR
    path = directory / f"{boot}.claim"
    try:
        directory.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write the environment claim: {exc.strerror}") from None
    return Made(path=path, image=image, claim=made)


def read_claim(data: bytes, where: str = "environment claim") -> EnvironmentClaim:
    """A claim whose signature by the host key it names holds. Raises FormatError, SignatureRefused."""
    msg = signed.decode1(data, CT_CLAIM, where)
    # The host key is named inside the payload: check the signature before trusting anything else.
    value = decode(msg.payload, where)
    host_key = value.get("host_key") if isinstance(value, dict) else None
    if not isinstance(host_key, bytes) or len(host_key) != 32:
        raise FormatError(f"{where}: host_key: expected a 32-byte key")
    payload = signed.verify1(msg, host_key, where)
    return EnvironmentClaim.from_value(decode(payload, where), where)
