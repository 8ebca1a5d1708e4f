"""Witness authority: whether a domain may advance, proven from its own artifacts (docs/AUTH-HOST.md).

A domain is writable only when, in this order: its certificate is a ``domain_root`` certificate for
this domain, issued by the pinned root set and signed by at least its threshold of pinned roots; its
DAM is signed by the certified key, names that key and this domain, and carries the certificate's
policy hash; that policy hash is the pinned ``policy.hash`` (and the domain's ``policy.cbor`` hashes
to it); its log is an unbroken chain of receipts starting with the genesis receipt that seals this
DAM, each signed by the domain root or by a DAM principal holding the role its action needs.
Otherwise it is read-only, and :class:`Refused` says why. Nothing here writes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from asl_capture import cose, dcbor
from asl_capture.errors import AslError, TruncatedCbor
from asl_host import signed
from asl_host.errors import EXIT_FAILED, HostConfigError, HostError
from asl_host.formats import (
    ACTION_ROLE,
    CT_CERT,
    CT_DAM,
    CT_RECEIPT,
    DAM,
    MAX_ARTIFACT,
    AuthorityCertificate,
    DomainPolicy,
    FormatError,
    OfflineRootSet,
    Receipt,
    decode,
    hash_text,
    parse_hash_text,
    sha256,
)
from asl_host.paths import AUTHORITY_DIR, CERT_NAME, DAM_NAME, KEYS_DIR, LOG_NAME, OBJECTS_DIR, POLICY_NAME

#: Upper bound on a domain log read at boot.
MAX_LOG = 256 << 20


class Refused(HostError):
    """The domain cannot prove its authority: it stays read-only. The message is the reason."""

    exit_code = EXIT_FAILED


def read_bounded(path: Path, limit: int, what: str, *, follow: bool = False) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, never through a symlink unless ``follow``
    (a file the operator names, not an artifact of the data disk).

    Raises:
        Refused: missing, not a regular file, too large or unreadable (``what`` names it).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise Refused(f"{what}: missing ({path})") from None
    except OSError as exc:
        raise Refused(f"{what}: cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{what}: {path} is not a regular file")
        if st.st_size > limit:
            raise Refused(f"{what}: {path} is larger than {limit} bytes")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"{what}: {path} is larger than {limit} bytes")
    return data


@dataclass(frozen=True)
class Trust:
    """What the image pins: the offline root set and ``policy.hash``."""

    roots: OfflineRootSet
    policy_hash: bytes

    @classmethod
    def load(cls, roots_file: Path, policy_hash_file: Path) -> Trust:
        """Read the pinned root set and policy hash. Raises HostConfigError."""
        try:
            roots = OfflineRootSet.from_bytes(read_bounded(roots_file, MAX_ARTIFACT, "root set"), str(roots_file))
            text = read_bounded(policy_hash_file, 4096, "policy.hash").decode("ascii").strip()
            policy_hash = parse_hash_text(text, str(policy_hash_file))
        except (HostError, UnicodeDecodeError) as exc:
            raise HostConfigError(f"pinned trust unusable: {exc}") from None
        return cls(roots=roots, policy_hash=policy_hash)


@dataclass(frozen=True)
class Authority:
    """A domain's verified authority: certificate, DAM, policy and the receipts of its log."""

    cert: AuthorityCertificate
    dam: DAM
    dam_digest: bytes
    policy: DomainPolicy
    receipts: tuple[Receipt, ...]
    head: bytes | None  # SHA-256 of the last receipt's bytes
    log_size: int


@dataclass(frozen=True)
class Verdict:
    """One domain's state: writable (with its authority) or read-only (with the reason)."""

    name: str
    domain_id: str
    path: Path
    authority: Authority | None
    reason: str | None

    @property
    def writable(self) -> bool:
        return self.authority is not None

    @property
    def state(self) -> str:
        return "writable" if self.writable else "read-only"


def verify_certificate(data: bytes, trust: Trust, domain_id: str) -> AuthorityCertificate:
    """The domain root certificate, checked against the pinned roots at their threshold. Raises Refused."""
    where = "certificate"
    try:
        payload = signed.verify_many(data, CT_CERT, trust.roots.root_keys, trust.roots.threshold, where)
        cert = AuthorityCertificate.from_value(decode(payload, where), where)
    except (FormatError, signed.SignatureRefused) as exc:
        raise Refused(str(exc)) from None
    if cert.subject_type != "domain_root":
        raise Refused(f"{where}: subject_type is {cert.subject_type}, expected domain_root")
    if cert.issued_by != trust.roots.set_id:
        raise Refused(f"{where}: issued_by names root set {cert.issued_by.hex()[:16]}, the pinned root set "
                      f"is {trust.roots.set_id.hex()[:16]}")
    if cert.domain_id != domain_id:
        raise Refused(f"{where}: domain_id is {cert.domain_id!r}, this domain is {domain_id!r}")
    return cert


def verify_dam(data: bytes, cert: AuthorityCertificate, trust: Trust, domain_id: str) -> DAM:
    """The DAM, checked against the certificate and the pinned policy hash. Raises Refused."""
    where = "dam"
    try:
        msg = signed.decode1(data, CT_DAM, where)
        if msg.kid != signed.key_id(cert.subject_pubkey):
            raise Refused(f"{where}: signed by key {msg.kid.hex()[:16]}, which the certificate does not name "
                          f"(certified domain root {signed.key_id(cert.subject_pubkey).hex()[:16]})")
        dam = DAM.from_value(decode(signed.verify1(msg, cert.subject_pubkey, where), where), where)
    except (FormatError, signed.SignatureRefused) as exc:
        raise Refused(str(exc)) from None
    if dam.root_key != cert.subject_pubkey:
        raise Refused(f"{where}: root_key is not the certified domain root key")
    if dam.domain_id != domain_id:
        raise Refused(f"{where}: domain_id is {dam.domain_id!r}, this domain is {domain_id!r}")
    if dam.policy_hash != cert.policy_hash:
        raise Refused(f"{where}: policy_hash {hash_text(dam.policy_hash)} differs from the certificate's "
                      f"{hash_text(cert.policy_hash)}")
    if dam.policy_hash != trust.policy_hash:
        raise Refused(f"{where}: policy_hash {hash_text(dam.policy_hash)} differs from the pinned policy.hash "
                      f"{hash_text(trust.policy_hash)}")
    return dam


def verify_log(data: bytes, dam: DAM, dam_digest: bytes, domain_id: str) -> tuple[tuple[Receipt, ...], bytes | None]:
    """Every receipt of the log: linkage, signer, role. Returns the receipts and the head. Raises Refused."""
    receipts: list[Receipt] = []
    prev: bytes | None = None
    pos = 0
    root_kid = signed.key_id(dam.root_key)
    principals = {p.principal_id: p for p in dam.principals}
    while pos < len(data):
        where = f"log: receipt {len(receipts)}"
        try:
            value, end = dcbor.decode_item(data, pos, tags=cose.COSE_TAGS)
        except TruncatedCbor:
            raise Refused(f"{where}: the log ends with a partial receipt at byte {pos}") from None
        except AslError as exc:
            raise Refused(f"{where}: not deterministic CBOR: {exc}") from None
        item = data[pos:end]
        pos = end
        try:
            msg = signed.parse1(value, CT_RECEIPT, where)
            principal = principals.get(msg.kid)
            if msg.kid == root_kid:
                public = dam.root_key
            elif principal is not None:
                public = principal.public_key
            else:
                raise Refused(f"{where}: signed by key {msg.kid.hex()[:16]}, which is neither the domain root "
                              f"nor a principal of the DAM")
            receipt = Receipt.from_value(decode(signed.verify1(msg, public, where), where), where)
        except (FormatError, signed.SignatureRefused) as exc:
            raise Refused(str(exc)) from None
        if receipt.seq != len(receipts) or receipt.prev != prev:
            raise Refused(f"{where}: seq/prev do not continue the log (a receipt was removed or reordered)")
        if receipt.principal_id != msg.kid:
            raise Refused(f"{where}: principal_id is not the key that signed it")
        if receipt.domain_id != domain_id:
            raise Refused(f"{where}: domain_id is {receipt.domain_id!r}, this domain is {domain_id!r}")
        if receipt.dam != dam_digest:
            raise Refused(f"{where}: made under another DAM ({receipt.dam.hex()[:16]}) than the current one")
        if receipt.action in ("genesis", "seal"):
            if msg.kid != root_kid:
                raise Refused(f"{where}: {receipt.action} is the domain root's act, signed by a principal")
        else:
            role = ACTION_ROLE[receipt.action]
            holder = principals.get(msg.kid)
            if holder is None or role not in holder.roles:
                raise Refused(f"{where}: principal {msg.kid.hex()[:16]} acted {receipt.action!r} without the "
                              f"role {role!r} (its roles: {', '.join(holder.roles) if holder else 'none'})")
        if not receipts and receipt.action != "genesis":
            raise Refused(f"{where}: the log does not start with the genesis receipt")
        receipts.append(receipt)
        prev = sha256(item)
    if not receipts:
        raise Refused("log: empty: the DAM is not sealed in the domain's log (no genesis receipt)")
    return tuple(receipts), prev


def verify_authority(store: Path, domain_id: str, trust: Trust) -> Authority:
    """All checks of the module docstring for the store at ``store``. Raises Refused with the reason."""
    auth = store / AUTHORITY_DIR
    # The data disk is hostile: a symlink here could make the host read or write outside the store.
    for part in (store, auth, store / OBJECTS_DIR, store / OBJECTS_DIR / "sha256", store / KEYS_DIR):
        if part.is_symlink():
            raise Refused(f"{part} is a symlink; refusing a store that points outside itself")
    if not auth.is_dir():
        raise Refused(f"not initialised: no {AUTHORITY_DIR}/ in {store} (asl-admin domain genesis)")
    cert = verify_certificate(read_bounded(auth / CERT_NAME, MAX_ARTIFACT, "certificate"), trust, domain_id)
    dam_bytes = read_bounded(auth / DAM_NAME, MAX_ARTIFACT, "dam")
    dam = verify_dam(dam_bytes, cert, trust, domain_id)
    policy_bytes = read_bounded(auth / POLICY_NAME, MAX_ARTIFACT, "policy")
    try:
        policy = DomainPolicy.from_value(decode(policy_bytes, "policy"), "policy")
    except FormatError as exc:
        raise Refused(str(exc)) from None
    if sha256(policy_bytes) != dam.policy_hash:
        raise Refused(f"policy: {POLICY_NAME} hashes to {hash_text(sha256(policy_bytes))}, the DAM pins "
                      f"{hash_text(dam.policy_hash)}")
    log = read_bounded(store / LOG_NAME, MAX_LOG, "log")
    dam_digest = sha256(dam_bytes)
    receipts, head = verify_log(log, dam, dam_digest, domain_id)
    return Authority(cert=cert, dam=dam, dam_digest=dam_digest, policy=policy, receipts=receipts, head=head,
                     log_size=len(log))


def assess(name: str, domain_id: str, store: Path, trust: Trust) -> Verdict:
    """The domain's verdict: never raises for the domain's own artifacts (they give the reason)."""
    try:
        authority = verify_authority(store, domain_id, trust)
    except Refused as exc:
        return Verdict(name=name, domain_id=domain_id, path=store, authority=None, reason=str(exc))
    return Verdict(name=name, domain_id=domain_id, path=store, authority=authority, reason=None)
