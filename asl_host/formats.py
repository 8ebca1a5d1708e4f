"""The authority formats (docs/AUTH-HOST.md, CDDL): typed values, one ``to_value`` and one strict parser each.

OfflineRootSet, AuthorityCertificate, DomainPolicy, DAM (with PrincipalEntry), Receipt and
EnvironmentClaim, with the field names of the upstream model (ASL/AUTH-HOST/1, ASL/DAM/1,
ASL/POLICY-HASH/1). Encoding: deterministic CBOR maps with text keys (:mod:`asl_capture.dcbor`).
Every parser checks every field and names the offending one (``dam: principals[1].roles: ...``);
unknown fields are refused, so a value has one encoding and the hash of that encoding is its identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asl_capture import dcbor
from asl_capture.errors import CborError
from asl_host.errors import EXIT_FAILED, HostError

ROLES = ("audit", "execute", "federate", "produce", "publish")
SUBJECT_TYPES = ("domain_root", "principal")
ACTIONS = ("genesis", "sign", "intake", "seal")
#: The role an action needs (genesis and seal are the domain root's own acts).
ACTION_ROLE = {"sign": "publish", "intake": "produce"}
FORMAT_VERSION = 1
MAX_ROOTS = 3
HASH_SIZE = 32
KEY_SIZE = 32
#: Upper bound on any authority artifact file read from a data disk.
MAX_ARTIFACT = 1 << 20

CT_CERT = "application/vnd.asl.authority-cert+cbor"
CT_DAM = "application/vnd.asl.dam+cbor"
CT_RECEIPT = "application/vnd.asl.receipt+cbor"
CT_CLAIM = "application/vnd.asl.env-claim+cbor"


class FormatError(HostError):
    """An authority artifact is malformed; names the artifact and the field."""

    exit_code = EXIT_FAILED


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (the hash of every format here)."""
    return hashlib.sha256(data).digest()


def hash_text(digest: bytes) -> str:
    """``sha256:<hex>``, the text form of a hash (``policy.hash``, messages)."""
    return "sha256:" + digest.hex()


def parse_hash_text(text: str, where: str) -> bytes:
    """The 32 bytes of ``sha256:<64 lowercase hex>``. Raises FormatError."""
    hexpart = text[7:] if text.startswith("sha256:") else ""
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise FormatError(f"{where}: expected 'sha256:<64 lowercase hex>'")
    return bytes.fromhex(hexpart)


class _Fields:
    """Strict reading of one CBOR map: every key read once, the rest refused."""

    def __init__(self, value: dcbor.Value, where: str, *, optional: frozenset[str] = frozenset()) -> None:
        if not isinstance(value, dict):
            raise FormatError(f"{where}: expected a map")
        self.value = value
        self.where = where
        self.seen: set[str] = set()
        self.optional = optional

    def _get(self, key: str) -> dcbor.Value:
        self.seen.add(key)
        if key not in self.value:
            raise FormatError(f"{self.where}: {key}: missing")
        return self.value[key]

    def has(self, key: str) -> bool:
        self.seen.add(key)
        return key in self.value

    def uint(self, key: str, *, maximum: int = (1 << 32) - 1) -> int:
        v = self._get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= maximum:
            raise FormatError(f"{self.where}: {key}: expected an unsigned integer up to {maximum}")
        return v

    def text(self, key: str, *, choices: tuple[str, ...] = ()) -> str:
        v = self._get(key)
        if not isinstance(v, str) or not v:
            raise FormatError(f"{self.where}: {key}: expected non-empty text")
        if choices and v not in choices:
            raise FormatError(f"{self.where}: {key}: expected one of {', '.join(choices)}, got {v!r}")
        return v

    def boolean(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise FormatError(f"{self.where}: {key}: expected true or false")
        return v

    def raw(self, key: str, size: int) -> bytes:
        v = self._get(key)
        if not isinstance(v, bytes) or len(v) != size:
            raise FormatError(f"{self.where}: {key}: expected a {size}-byte string")
        return v

    def opt_raw(self, key: str, size: int) -> bytes | None:
        v = self._get(key)
        return None if v is None else self.raw(key, size)

    def sorted_texts(self, key: str, *, choices: tuple[str, ...] = (), allow_empty: bool = True) -> tuple[str, ...]:
        v = self._get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise FormatError(f"{self.where}: {key}: expected an array of text")
        items = tuple(str(x) for x in v)
        if choices:
            bad = [x for x in items if x not in choices]
            if bad:
                raise FormatError(f"{self.where}: {key}: {bad[0]!r} is not one of {', '.join(choices)}")
        if list(items) != sorted(set(items)):
            raise FormatError(f"{self.where}: {key}: must be sorted and without duplicates (canonical form)")
        if not allow_empty and not items:
            raise FormatError(f"{self.where}: {key}: must not be empty")
        return items

    def done(self) -> None:
        extra = sorted(set(self.value) - self.seen)
        if extra:
            raise FormatError(f"{self.where}: {extra[0]}: unknown field")


def decode(data: bytes, where: str) -> dcbor.Value:
    """Strict deterministic-CBOR decode of an artifact. Raises FormatError naming ``where``."""
    try:
        return dcbor.decode(data)
    except CborError as exc:
        raise FormatError(f"{where}: not deterministic CBOR: {exc}") from None


@dataclass(frozen=True)
class OfflineRootSet:
    """``{version, root_keys, threshold, reserved0}``: 1 to 3 root public keys, sorted, and a threshold."""

    root_keys: tuple[bytes, ...]
    threshold: int
    version: int = FORMAT_VERSION

    def to_value(self) -> dcbor.Value:
        return {"version": self.version, "root_keys": list(self.root_keys), "threshold": self.threshold,
                "reserved0": 0}

    def encode(self) -> bytes:
        return dcbor.encode(self.to_value())

    @property
    def set_id(self) -> bytes:
        """The root set's identity: SHA-256 of its encoding (certificates name it in ``issued_by``)."""
        return sha256(self.encode())

    @classmethod
    def from_value(cls, value: dcbor.Value, where: str = "root set") -> OfflineRootSet:
        f = _Fields(value, where)
        version = f.uint("version")
        if version != FORMAT_VERSION:
            raise FormatError(f"{where}: version: expected {FORMAT_VERSION}, got {version}")
        keys = f._get("root_keys")
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_ROOTS:
            raise FormatError(f"{where}: root_keys: expected 1 to {MAX_ROOTS} keys")
        for i, k in enumerate(keys):
            if not isinstance(k, bytes) or len(k) != KEY_SIZE:
                raise FormatError(f"{where}: root_keys[{i}]: expected a {KEY_SIZE}-byte public key")
        if keys != sorted(set(keys)):  # type: ignore[type-var]
            raise FormatError(f"{where}: root_keys: must be sorted and distinct (canonical form)")
        threshold = f.uint("threshold", maximum=255)
        if not 1 <= threshold <= len(keys):
            raise FormatError(f"{where}: threshold: {threshold} is not between 1 and the {len(keys)} root key(s)")
        if f.uint("reserved0") != 0:
            raise FormatError(f"{where}: reserved0: must be 0")
        f.done()
        return cls(root_keys=tuple(bytes(k) for k in keys if isinstance(k, bytes)), threshold=threshold)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "root set") -> OfflineRootSet:
        parsed = cls.from_value(decode(data, where), where)
        if parsed.encode() != data:  # pragma: no cover - dcbor.decode admits one encoding only
            raise FormatError(f"{where}: not in canonical form")
        return parsed


@dataclass(frozen=True)
class AuthorityCertificate:
    """Binds a subject key to a domain (and roles, for principals) under a policy; signed by the roots."""

    subject_type: str
    subject_pubkey: bytes
    domain_id: str
    roles: tuple[str, ...]
    policy_hash: bytes
    issued_by: bytes
    version: int = FORMAT_VERSION

    @property
    def subject_id(self) -> bytes:
        return sha256(self.subject_pubkey)

    def to_value(self) -> dcbor.Value:
        return {"version": self.version, "subject_type": self.subject_type, "subject_id": self.subject_id,
                "subject_pubkey": self.subject_pubkey, "domain_id": self.domain_id, "roles": list(self.roles),
                "policy_hash": self.policy_hash, "issued_by": self.issued_by}

    @classmethod
    def from_value(cls, value: dcbor.Value, where: str = "certificate") -> AuthorityCertificate:
        f = _Fields(value, where)
        if f.uint("version") != FORMAT_VERSION:
            raise FormatError(f"{where}: version: expected {FORMAT_VERSION}")
        subject_type = f.text("subject_type", choices=SUBJECT_TYPES)
        subject_id = f.raw("subject_id", HASH_SIZE)
        pub = f.raw("subject_pubkey", KEY_SIZE)
        if subject_id != sha256(pub):
            raise FormatError(f"{where}: subject_id: is not the SHA-256 of subject_pubkey")
        roles = f.sorted_texts("roles", choices=ROLES)
        if subject_type == "domain_root" and roles:
            raise FormatError(f"{where}: roles: must be empty for a domain_root certificate")
        cert = cls(subject_type=subject_type, subject_pubkey=pub, domain_id=f.text("domain_id"), roles=roles,
                   policy_hash=f.raw("policy_hash", HASH_SIZE), issued_by=f.raw("issued_by", HASH_SIZE))
        f.done()
        return cert


@dataclass(frozen=True)
class DomainPolicy:
    """ASL/POLICY-HASH/1: every field present, arrays sorted; ``policy_hash`` = SHA-256 of the encoding."""

    publication: tuple[bool, tuple[str, ...], bool]  # require_signature, allowed_roles, snapshot_required
    execution: tuple[bool, tuple[str, ...], bool]  # per_signature_required, allowed_roles, deterministic_only
    federation: tuple[bool, bool, tuple[str, ...]]  # export_published_only, require_snapshot, trusted_domains
    retention: tuple[bool, int]  # gc_unpublished_allowed, min_snapshot_retention
    visibility: tuple[bool, bool]  # internal_hidden, published_read_only
    version: int = FORMAT_VERSION

    def to_value(self) -> dcbor.Value:
        p, e, fed, r, v = self.publication, self.execution, self.federation, self.retention, self.visibility
        return {
            "version": self.version,
            "publication_policy": {"require_signature": p[0], "allowed_roles": list(p[1]), "snapshot_required": p[2]},
            "execution_policy": {"per_signature_required": e[0], "allowed_roles": list(e[1]),
                                 "deterministic_only": e[2]},
            "federation_policy": {"export_published_only": fed[0], "require_snapshot": fed[1],
                                  "trusted_domains": list(fed[2])},
            "retention_policy": {"gc_unpublished_allowed": r[0], "min_snapshot_retention": r[1]},
            "visibility_policy": {"internal_hidden": v[0], "published_read_only": v[1]},
            "reserved0": 0,
        }

    def encode(self) -> bytes:
        """The canonical form (deterministic CBOR, fixed fields, sorted arrays)."""
        return dcbor.encode(self.to_value())

    @property
    def policy_hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_value(cls, value: dcbor.Value, where: str = "policy") -> DomainPolicy:
        f = _Fields(value, where)
        if f.uint("version") != FORMAT_VERSION:
            raise FormatError(f"{where}: version: expected {FORMAT_VERSION}")
        pub = _Fields(f._get("publication_policy"), f"{where}: publication_policy")
        exe = _Fields(f._get("execution_policy"), f"{where}: execution_policy")
        fed = _Fields(f._get("federation_policy"), f"{where}: federation_policy")
        ret = _Fields(f._get("retention_policy"), f"{where}: retention_policy")
        vis = _Fields(f._get("visibility_policy"), f"{where}: visibility_policy")
        policy = cls(
            publication=(pub.boolean("require_signature"), pub.sorted_texts("allowed_roles", choices=ROLES),
                         pub.boolean("snapshot_required")),
            execution=(exe.boolean("per_signature_required"), exe.sorted_texts("allowed_roles", choices=ROLES),
                       exe.boolean("deterministic_only")),
            federation=(fed.boolean("export_published_only"), fed.boolean("require_snapshot"),
                        fed.sorted_texts("trusted_domains")),
            retention=(ret.boolean("gc_unpublished_allowed"), ret.uint("min_snapshot_retention")),
            visibility=(vis.boolean("internal_hidden"), vis.boolean("published_read_only")),
        )
        if f.uint("reserved0") != 0:
            raise FormatError(f"{where}: reserved0: must be 0")
        for part in (pub, exe, fed, ret, vis, f):
            part.done()
        return policy


@dataclass(frozen=True)
class PrincipalEntry:
    """``{principal_id, public_key, roles}``; ``principal_id`` is the SHA-256 of the public key."""

    public_key: bytes
    roles: tuple[str, ...]

    @property
    def principal_id(self) -> bytes:
        return sha256(self.public_key)

    def to_value(self) -> dcbor.Value:
        return {"principal_id": self.principal_id, "public_key": self.public_key, "roles": list(self.roles)}


@dataclass(frozen=True)
class DAM:
    """ASL/DAM/1, the Domain Authority Manifest, signed by the domain root key."""

    domain_id: str
    version: int
    root_key: bytes
    principals: tuple[PrincipalEntry, ...]
    policy_hash: bytes
    scope: tuple[str, ...] | None = None  # roles this DAM may grant; None = all

    def to_value(self) -> dcbor.Value:
        value: dict[str, dcbor.Value] = {
            "domain_id": self.domain_id, "version": self.version, "root_key": self.root_key,
            "principals": [p.to_value() for p in sorted(self.principals, key=lambda p: p.principal_id)],
            "policy_hash": self.policy_hash,
        }
        if self.scope is not None:
            value["scope"] = list(self.scope)
        return value

    def principal(self, principal_id: bytes) -> PrincipalEntry | None:
        return next((p for p in self.principals if p.principal_id == principal_id), None)

    @classmethod
    def from_value(cls, value: dcbor.Value, where: str = "dam") -> DAM:
        f = _Fields(value, where)
        raw = f._get("principals")
        if not isinstance(raw, list):
            raise FormatError(f"{where}: principals: expected an array")
        principals: list[PrincipalEntry] = []
        for i, item in enumerate(raw):
            p = _Fields(item, f"{where}: principals[{i}]")
            pid = p.raw("principal_id", HASH_SIZE)
            pub = p.raw("public_key", KEY_SIZE)
            if pid != sha256(pub):
                raise FormatError(f"{where}: principals[{i}]: principal_id: is not the SHA-256 of public_key")
            principals.append(PrincipalEntry(public_key=pub, roles=p.sorted_texts("roles", choices=ROLES,
                                                                                  allow_empty=False)))
            p.done()
        ids = [p.principal_id for p in principals]
        if ids != sorted(set(ids)):
            raise FormatError(f"{where}: principals: must be sorted by principal_id and distinct")
        scope = f.sorted_texts("scope", choices=ROLES) if f.has("scope") else None
        dam = cls(domain_id=f.text("domain_id"), version=f.uint("version"), root_key=f.raw("root_key", KEY_SIZE),
                  principals=tuple(principals), policy_hash=f.raw("policy_hash", HASH_SIZE), scope=scope)
        if scope is not None:
            for i, entry in enumerate(principals):
                beyond = sorted(set(entry.roles) - set(scope))
                if beyond:
                    raise FormatError(f"{where}: principals[{i}]: role {beyond[0]!r} is outside the DAM's scope")
        f.done()
        return dam


@dataclass(frozen=True)
class Subject:
    """What an action is about: a file's name, SHA-256 and size."""

    name: str
    digest: bytes
    size: int

    def to_value(self) -> dcbor.Value:
        return {"name": self.name, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Receipt:
    """The signed record of one authority action; the domain's log is a hash-linked sequence of them."""

    domain_id: str
    seq: int
    prev: bytes | None
    action: str
    principal_id: bytes
    dam: bytes  # SHA-256 of the DAM artifact (the signed bytes) in force
    subject: Subject | None
    v: int = FORMAT_VERSION

    def to_value(self) -> dcbor.Value:
        return {"v": self.v, "domain_id": self.domain_id, "seq": self.seq, "prev": self.prev,
                "action": self.action, "principal_id": self.principal_id, "dam": self.dam,
                "subject": None if self.subject is None else self.subject.to_value()}

    @classmethod
    def from_value(cls, value: dcbor.Value, where: str = "receipt") -> Receipt:
        f = _Fields(value, where)
        if f.uint("v") != FORMAT_VERSION:
            raise FormatError(f"{where}: v: expected {FORMAT_VERSION}")
        subject_value = f._get("subject")
        subject = None
        if subject_value is not None:
            s = _Fields(subject_value, f"{where}: subject")
            subject = Subject(name=s.text("name"), digest=s.raw("digest", HASH_SIZE), size=s.uint("size",
                              maximum=(1 << 63) - 1))
            s.done()
        receipt = cls(domain_id=f.text("domain_id"), seq=f.uint("seq", maximum=(1 << 63) - 1),
                      prev=f.opt_raw("prev", HASH_SIZE), action=f.text("action", choices=ACTIONS),
                      principal_id=f.raw("principal_id", HASH_SIZE), dam=f.raw("dam", HASH_SIZE), subject=subject)
        f.done()
        if (receipt.action in ACTION_ROLE) != (subject is not None):
            raise FormatError(f"{where}: subject: required for sign and intake, null otherwise")
        return receipt



@dataclass(frozen=True)
class EnvironmentClaim:
    """What this boot ran: the image identity, kernel, host tools and each store; signed by the host key."""

    image: str  # "sha256:<hex>" of /asl/build-manifest.cbor on the boot medium
    kernel: str
    boot: int
    host_key: bytes
    roots: bytes  # the pinned root set's id
    policy_hash: bytes
    tools: dict[str, str]  # path in the image -> "sha256:<hex>"
    stores: dict[str, dict[str, str]]  # domain name -> {id, state, reason, checksum}
    v: int = FORMAT_VERSION

    def to_value(self) -> dcbor.Value:
        return {"v": self.v, "image": self.image, "kernel": self.kernel, "boot": self.boot,
                "host_key": self.host_key, "roots": self.roots, "policy_hash": self.policy_hash,
                "tools": dict(self.tools), "stores": {k: dict(v) for k, v in self.stores.items()}}

    @classmethod
    def from_value(cls, value: dcbor.Value, where: str = "environment claim") -> EnvironmentClaim:
        f = _Fields(value, where)
        if f.uint("v") != FORMAT_VERSION:
            raise FormatError(f"{where}: v: expected {FORMAT_VERSION}")
        image = f.text("image")
        parse_hash_text(image, f"{where}: image")
        tools = _text_map(f._get("tools"), f"{where}: tools")
        stores_raw = f._get("stores")
        if not isinstance(stores_raw, dict):
            raise FormatError(f"{where}: stores: expected a map")
        stores = {k: _text_map(v, f"{where}: stores.{k}") for k, v in stores_raw.items()}
        claim = cls(image=image, kernel=f.text("kernel"), boot=f.uint("boot", maximum=(1 << 63) - 1),
                    host_key=f.raw("host_key", KEY_SIZE), roots=f.raw("roots", HASH_SIZE),
                    policy_hash=f.raw("policy_hash", HASH_SIZE), tools=tools, stores=stores)
        f.done()
        return claim


def _text_map(value: dcbor.Value, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise FormatError(f"{where}: expected a map of text to text")
    return {k: str(v) for k, v in value.items()}
