"""Authority actions that write: roots, genesis, certification, signing, intake, sealing.

Every action that advances a domain first re-checks its authority (:func:`authority.verify_authority`,
the same verdict the boot reaches), so a read-only domain is never written. Files are written whole
(temporary file, fsync, rename); a receipt is appended to the log under a lock and the log is cut
back to its previous size if the append fails half-way.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from asl_capture import dcbor, keys
from asl_capture.errors import KeyFileError
from asl_host import ed25519, signed
from asl_host.authority import Authority, Trust, read_bounded, verify_authority
from asl_host.errors import HostError, StorageError
from asl_host.formats import (
    ACTION_ROLE,
    CT_CERT,
    CT_DAM,
    CT_RECEIPT,
    DAM,
    AuthorityCertificate,
    DomainPolicy,
    OfflineRootSet,
    PrincipalEntry,
    Receipt,
    Subject,
    hash_text,
    sha256,
)
from asl_host.paths import (
    AUTHORITY_DIR,
    CERT_NAME,
    DAM_NAME,
    DOMAIN_MARKER,
    DOMAIN_ROOT_KEY,
    KEYS_DIR,
    LOG_NAME,
    OBJECTS_DIR,
    POLICY_HASH_NAME,
    POLICY_NAME,
    ROOTS_NAME,
)

ROOT_KEY_PREFIX = "root-"


class ActionRefused(HostError):
    """The action is not allowed (role, state, existing files); nothing was written."""

    exit_code = 1


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole: a temporary file beside it, fsynced, renamed. Raises StorageError."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write: {exc.strerror}") from None


def _key(path: Path, passphrase: bytes | None) -> bytes:
    try:
        return keys.load_seed(path, passphrase=passphrase)
    except KeyFileError as exc:
        raise ActionRefused(f"{exc}") from None


@dataclass(frozen=True)
class RootsDir:
    """An offline roots directory: ``roots.cbor`` (public), ``policy.hash``, ``root-N.key`` (private)."""

    path: Path

    def rootset(self) -> OfflineRootSet:
        data = read_bounded(self.path / ROOTS_NAME, 1 << 20, "root set")
        return OfflineRootSet.from_bytes(data, str(self.path / ROOTS_NAME))

    def trust(self) -> Trust:
        return Trust.load(self.path / ROOTS_NAME, self.path / POLICY_HASH_NAME)

    def private_keys(self, passphrase: bytes | None) -> list[bytes]:
        files = sorted(self.path.glob(f"{ROOT_KEY_PREFIX}*.key"))
        return [_key(f, passphrase) for f in files]


def init_roots(directory: Path, *, count: int, threshold: int, passphrase: bytes | None) -> OfflineRootSet:
    """Create ``count`` offline root keys (0600, encrypted when ``passphrase``) and ``roots.cbor``.

    Raises:
        ActionRefused: bad count/threshold, or the directory already holds a root set.
    """
    if not 1 <= count <= 3 or not 1 <= threshold <= count:
        raise ActionRefused(f"--keys {count} --threshold {threshold}: 1 to 3 keys, threshold 1 to the key count")
    if (directory / ROOTS_NAME).exists():
        raise ActionRefused(f"{directory / ROOTS_NAME}: already exists; refusing to replace a root set")
    publics = []
    for i in range(1, count + 1):
        try:
            key_path, _pub, _kid = keys.generate(f"{ROOT_KEY_PREFIX}{i}", directory=directory, passphrase=passphrase)
        except KeyFileError as exc:
            raise ActionRefused(str(exc)) from None
        publics.append(ed25519.public_key(_key(key_path, passphrase)))
    rootset = OfflineRootSet(root_keys=tuple(sorted(publics)), threshold=threshold)
    write_atomic(directory / ROOTS_NAME, rootset.encode())
    return rootset


def pin_policy(roots: RootsDir, policy: DomainPolicy) -> None:
    """Write ``policy.hash`` beside the root set, or refuse a policy that differs from the pinned one."""
    path = roots.path / POLICY_HASH_NAME
    line = hash_text(policy.policy_hash)
    if path.exists():
        pinned = read_bounded(path, 4096, "policy.hash").decode("ascii", "replace").strip()
        if pinned != line:
            raise ActionRefused(f"{path} pins {pinned}; this policy hashes to {line} (one policy per image)")
        return
    write_atomic(path, (line + "\n").encode("ascii"))


def certify(store: Path, domain_id: str, roots: RootsDir, *, passphrase: bytes | None,
            policy_hash: bytes | None = None) -> AuthorityCertificate:
    """(Re)issue the domain root certificate of ``store``, signed by every root key in ``roots``.

    Raises:
        ActionRefused: fewer root keys than the threshold, or no domain root key.
    """
    rootset = roots.rootset()
    seeds = roots.private_keys(passphrase)
    if len(seeds) < rootset.threshold:
        raise ActionRefused(f"{roots.path}: {len(seeds)} root key(s) available, the threshold is {rootset.threshold}")
    domain_seed = _key(store / KEYS_DIR / f"{DOMAIN_ROOT_KEY}.key", passphrase)
    if policy_hash is None:
        policy_hash = roots.trust().policy_hash
    cert = AuthorityCertificate(subject_type="domain_root", subject_pubkey=ed25519.public_key(domain_seed),
                                domain_id=domain_id, roles=(), policy_hash=policy_hash, issued_by=rootset.set_id)
    (store / AUTHORITY_DIR).mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomic(store / AUTHORITY_DIR / CERT_NAME, signed.sign_many(dcbor.encode(cert.to_value()), seeds, CT_CERT))
    return cert


def genesis(store: Path, domain_id: str, roots: RootsDir, policy: DomainPolicy, principals: dict[str, tuple[str, ...]],
            *, passphrase: bytes | None) -> Authority:
    """Create a domain at ``store``: root key, principal keys, certificate, policy, DAM, genesis receipt.

    Raises:
        ActionRefused: the store already holds a domain, the policy differs from the pinned one, ...
    """
    if (store / AUTHORITY_DIR).exists() or (store / LOG_NAME).exists():
        raise ActionRefused(f"{store}: already holds a domain; refusing to overwrite it")
    pin_policy(roots, policy)
    keydir = store / KEYS_DIR
    keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root_seed = os.urandom(32)
    # with a passphrase, every private key written to the data disk is encrypted with it
    _save(keydir / f"{DOMAIN_ROOT_KEY}.key", root_seed, passphrase)
    entries = []
    for name, roles in sorted(principals.items()):
        seed = os.urandom(32)
        _save(keydir / f"{name}.key", seed, passphrase)
        entries.append(PrincipalEntry(public_key=ed25519.public_key(seed), roles=tuple(sorted(set(roles)))))
    certify(store, domain_id, roots, passphrase=passphrase, policy_hash=policy.policy_hash)
    write_atomic(store / AUTHORITY_DIR / POLICY_NAME, policy.encode())
    dam = DAM(domain_id=domain_id, version=1, root_key=ed25519.public_key(root_seed), principals=tuple(entries),
              policy_hash=policy.policy_hash)
    dam_bytes = signed.sign1(dcbor.encode(dam.to_value()), root_seed, CT_DAM)
    write_atomic(store / AUTHORITY_DIR / DAM_NAME, dam_bytes)
    (store / DOMAIN_MARKER).write_text(f"domain: {domain_id}\nformat: 1\n", encoding="utf-8")
    receipt = Receipt(domain_id=domain_id, seq=0, prev=None, action="genesis", principal_id=sha256(dam.root_key),
                      dam=sha256(dam_bytes), subject=None)
    _append(store, signed.sign1(dcbor.encode(receipt.to_value()), root_seed, CT_RECEIPT), expected_size=0)
    return verify_authority(store, domain_id, roots.trust())


def _save(path: Path, seed: bytes, passphrase: bytes | None) -> None:
    try:
        keys.save_seed(path, seed, passphrase=passphrase)
    except KeyFileError as exc:
        raise ActionRefused(str(exc)) from None


def object_path(store: Path, digest: bytes) -> Path:
    """Where an object with this SHA-256 lives in a domain store."""
    hexd = digest.hex()
    return store / OBJECTS_DIR / "sha256" / hexd[:2] / hexd[2:]


def put_object(store: Path, data: bytes) -> bytes:
    """Store ``data`` by its SHA-256 (read-only, written whole); returns the digest."""
    digest = hashlib.sha256(data).digest()
    path = object_path(store, digest)
    if path.is_file() and not path.is_symlink() and hashlib.sha256(path.read_bytes()).digest() == digest:
        return digest
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{path.parent}: {exc.strerror}") from None
    if path.exists() or path.is_symlink():
        path.unlink()
    write_atomic(path, data, 0o444)
    return digest


def _append(store: Path, item: bytes, *, expected_size: int) -> None:
    """Append one receipt to the log, under a lock; the log must still be ``expected_size`` bytes.

    On any failure the log is cut back to ``expected_size``: a half-written receipt never stays.
    """
    path = store / LOG_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open the log: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size != expected_size:
            raise ActionRefused(f"{path}: the log changed while this action was prepared; run it again")
        try:
            os.lseek(fd, expected_size, os.SEEK_SET)
            os.write(fd, item)
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, expected_size)
            raise StorageError(f"{path}: cannot append the receipt: {exc.strerror} (log left as it was)") from None
    finally:
        os.close(fd)


def act(store: Path, domain_id: str, trust: Trust, *, action: str, principal: str, data: bytes,
        name: str, passphrase: bytes | None = None) -> Receipt:
    """``sign`` or ``intake``: store ``data``, append the receipt signed by ``principal`` (its key
    decrypted with ``passphrase`` when the domain was made with one).

    Raises:
        Refused: the domain is read-only (the reason).
        ActionRefused: the principal is unknown to the DAM or lacks the action's role; its key is
            encrypted and no passphrase (or a wrong one) was given.
    """
    authority = verify_authority(store, domain_id, trust)
    if "/" in principal or principal.startswith(".") or principal == DOMAIN_ROOT_KEY:
        raise ActionRefused(f"{principal!r}: not a principal name")
    seed = _key(store / KEYS_DIR / f"{principal}.key", passphrase)
    entry = authority.dam.principal(sha256(ed25519.public_key(seed)))
    role = ACTION_ROLE[action]
    if entry is None:
        raise ActionRefused(f"principal {principal!r} is not in the DAM of domain {domain_id!r}")
    if role not in entry.roles:
        raise ActionRefused(f"principal {principal!r} may not {action}: the role {role!r} is not among its "
                            f"roles ({', '.join(entry.roles)})")
    digest = put_object(store, data)
    receipt = Receipt(domain_id=domain_id, seq=len(authority.receipts), prev=authority.head, action=action,
                      principal_id=entry.principal_id, dam=authority.dam_digest,
                      subject=Subject(name=name, digest=digest, size=len(data)))
    _append(store, signed.sign1(dcbor.encode(receipt.to_value()), seed, CT_RECEIPT),
            expected_size=authority.log_size)
    return receipt


def seal(store: Path, domain_id: str, trust: Trust, *, passphrase: bytes | None = None) -> Receipt:
    """Seal a snapshot: a receipt by the domain root over the log so far. Raises Refused, ActionRefused."""
    authority = verify_authority(store, domain_id, trust)
    seed = _key(store / KEYS_DIR / f"{DOMAIN_ROOT_KEY}.key", passphrase)
    receipt = Receipt(domain_id=domain_id, seq=len(authority.receipts), prev=authority.head, action="seal",
                      principal_id=sha256(authority.dam.root_key), dam=authority.dam_digest, subject=None)
    _append(store, signed.sign1(dcbor.encode(receipt.to_value()), seed, CT_RECEIPT),
            expected_size=authority.log_size)
    return receipt
