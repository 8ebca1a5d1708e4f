"""``asl-release publish``: turn a verified build into a signed release directory, atomically.

``dist/<version>/`` holds the ISO, ``provenance/`` (the chain, its checkpoint and the object
store), ``<iso>.intoto.jsonl`` (in-toto/SLSA in a DSSE envelope), ``RELEASE.cbor`` (the release
manifest, COSE_Sign1), ``SHA256SUMS`` and ``SHA256SUMS.minisig``. Everything is written into a
hidden temporary directory beside it and renamed into place only when complete, so an interrupted
publish never leaves a half-written release directory. The ISO is verified *as copied*: what is
published is exactly what was checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture import chain, cose, dcbor, dsse, minisign
from asl_capture.errors import AslError, ReleaseError, UsageError, VerificationError
from asl_capture.format import (
    RECORD_VERSION,
    RELEASE_CONTENT_TYPE,
    BuildKey,
    BuildManifest,
    ReleaseFile,
    ReleaseManifest,
    StepRecord,
)
from asl_capture.format.release import MANIFEST_NAME
from asl_capture.keys import Signer, load_signer, load_trust, read_passphrase
from asl_capture.release import intoto
from asl_capture.release.image import IsoVerifier, default_verifier, open_image
from asl_capture.release.surface import Changes, check_version, image_surface, parse_version
from asl_capture.store import fsync_dir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SUMS_NAME = "SHA256SUMS"
MINISIG_NAME = "SHA256SUMS.minisig"
PROVENANCE_DIR = "provenance"
#: The files of a provenance directory that are evidence (FORMAT.md section 1); the rest is not published.
EVIDENCE = ("chain.cbor", "checkpoint.cose")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_OBJECT_DIR = re.compile(r"[0-9a-f]{2}")
_OBJECT_NAME = re.compile(r"[0-9a-f]{62}")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishConfig:
    """What to publish, with which key, where; ``trust`` are the build's public keys (files or dirs)."""

    iso: Path
    provenance: Path
    key: Path
    out: Path
    passphrase_file: Path | None = None
    trust: tuple[Path, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """The release written: its directory, manifest, the release it was compared with and how."""

    directory: Path
    manifest: ReleaseManifest
    previous: str | None
    changes: Changes | None
    method: str


MAX_SMALL = 16 << 20


def read_small(path: Path, what: str, limit: int = MAX_SMALL) -> bytes:
    """The bytes of a small regular file, never through a symlink, at most ``limit``.

    Raises:
        VerificationError: missing, not a regular file, too large or unreadable (named ``what``).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise VerificationError(f"{what}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VerificationError(f"{what}: not a regular file")
        if st.st_size > limit:
            raise VerificationError(f"{what}: larger than {limit} bytes")
        data = os.read(fd, limit + 1)
        while len(data) <= limit and (more := os.read(fd, limit + 1 - len(data))):
            data += more
        return data
    except OSError as exc:
        raise VerificationError(f"{what}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _copy(src: Path, dst: Path) -> tuple[bytes, int]:
    """Copy a regular file (never through a symlink), fsync it, return its SHA-256 and size."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"{src}: cannot open: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{src}: not a regular file")
        h, size = hashlib.sha256(), 0
        with open(dst, "xb") as out:
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        return h.digest(), size
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> tuple[bytes, int]:
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return hashlib.sha256(data).digest(), len(data)



def _copy_provenance(src: Path, dst: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Copy the evidence of a provenance directory; every object is checked against its name."""
    dst.mkdir()
    for name in EVIDENCE:
        files[f"{PROVENANCE_DIR}/{name}"] = _copy(src / name, dst / name)
    objects = src / "objects" / "sha256"
    if not objects.is_dir() or objects.is_symlink():
        raise UsageError(f"{src}: no object store (objects/sha256)")
    (dst / "objects" / "sha256").mkdir(parents=True)
    for sub in sorted(os.listdir(objects)):
        subdir = objects / sub
        if not _OBJECT_DIR.fullmatch(sub) or subdir.is_symlink() or not subdir.is_dir():
            raise UsageError(f"{subdir}: not an object directory of the store")
        (dst / "objects" / "sha256" / sub).mkdir()
        for name in sorted(os.listdir(subdir)):
            if not _OBJECT_NAME.fullmatch(name):
                if name.startswith(".tmp"):  # an interrupted writer's temporary file: not an object
                    continue
                raise UsageError(f"{subdir / name}: not an object of the store")
            rel = f"{PROVENANCE_DIR}/objects/sha256/{sub}/{name}"
            digest, size = _copy(subdir / name, dst / "objects" / "sha256" / sub / name)
            if digest.hex() != sub + name:
                raise ReleaseError(f"{subdir / name}: object does not match its name (damaged store)")
            files[rel] = (digest, size)


def _build_keys(prov: Path, trusted: dict[bytes, Ed25519PublicKey], release_kid: bytes) -> tuple[
        dict[bytes, Ed25519PublicKey], set[bytes]]:
    """The keys to verify the chain with: ``trusted`` plus the ephemeral keys the build's records name.

    Raises:
        ReleaseError: the release key signed the chain, or a signer is neither trusted nor ephemeral.
        VerificationError: the chain does not decode, or an ephemeral key is named inconsistently.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        items = chain.read(prov / "chain.cbor").items
        messages = [cose.parse(item.value) for item in items]
        records = [StepRecord.from_cbor(m.payload) for m in messages]
    except AslError as exc:
        raise VerificationError(f"the chain does not decode: {exc}", check="chain") from None
    keys = dict(trusted)
    ephemeral: set[bytes] = set()
    for msg, record in zip(messages, records, strict=True):
        if record.ephemeral_key is None:
            continue
        kid = cose.key_id(record.ephemeral_key)
        if msg.kid != kid or record.parent is not None:
            raise VerificationError(f"record {record.seq} names an ephemeral key it is not the outer record of",
                                    check="chain", record=record.seq)
        keys.setdefault(kid, Ed25519PublicKey.from_public_bytes(record.ephemeral_key))
        ephemeral.add(kid)
    signers = {m.kid for m in messages}
    if release_kid in signers or release_kid in keys:
        raise ReleaseError(f"the release key (key id {release_kid.hex()}) signed the build's chain or is one of its "
                           f"build keys: a release key must never sign builds")
    unknown = sorted(signers - set(keys))
    if unknown:
        raise ReleaseError(f"the chain is signed by key id {unknown[0].hex()}, which is neither given with --trust "
                           f"nor an ephemeral key named by the build's record")
    return {k: v for k, v in keys.items() if k in signers}, ephemeral


def latest_release(out: Path, *, below: str, release_key: Ed25519PublicKey) -> tuple[str, ReleaseManifest] | None:
    """The highest version released in ``out`` below ``below``, with its verified manifest.

    Raises:
        ReleaseError: that release's manifest is unreadable or not signed by the release key.
    """
    target = parse_version(below)
    best: tuple[tuple[int, int, int], str] | None = None
    for name in os.listdir(out):
        try:
            version = parse_version(name)
        except UsageError:
            continue
        if version < target and (best is None or version > best[0]) and not (out / name).is_symlink():
            best = (version, name)
    if best is None:
        return None
    path = out / best[1] / MANIFEST_NAME
    try:
        msg = cose.parse(dcbor.decode(read_small(path, str(path)), tags=cose.COSE_TAGS))
        if msg.content_type != RELEASE_CONTENT_TYPE:
            raise VerificationError("not a release manifest")
        manifest = ReleaseManifest.from_cbor(cose.verify(msg, release_key))
    except AslError as exc:
        raise ReleaseError(f"{path}: the latest earlier release cannot be compared with: {exc}") from None
    return best[1], manifest


def publish(config: PublishConfig, *, verifier: IsoVerifier | None = None,
            log: Callable[[str], None] = lambda _m: None) -> Published:
    """Verify the build and write ``out/<version>/`` (see the module docstring).

    Raises:
        UsageError, KeyFileError: unusable arguments, key or input files (nothing written).
        VerificationError: the ISO does not verify (nothing written).
        ReleaseError: publishing refused (release key signed the build, versioning rule, version exists).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    passphrase = read_passphrase(passphrase_file=config.passphrase_file, environ=config.environ)
    release: Signer = load_signer(config.key, passphrase=passphrase)
    release_public = Ed25519PublicKey.from_public_bytes(release.public_raw())
    iso_name = config.iso.name
    if not _SAFE_NAME.fullmatch(iso_name) or iso_name in (MANIFEST_NAME, SUMS_NAME, MINISIG_NAME, PROVENANCE_DIR):
        raise UsageError(f"{iso_name!r}: an ISO name of letters, digits and ._+- is required")
    trusted = load_trust(list(config.trust)) if config.trust else {}
    keys, ephemeral = _build_keys(config.provenance, trusted, release.kid)
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=config.out))
    except OSError as exc:
        raise UsageError(f"{config.out}: cannot create the release directory: {exc.strerror}") from None
    try:
        return _publish(config, release, release_public, keys, ephemeral, tmp, verifier or default_verifier(), log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(config: PublishConfig, release: Signer, release_public: Ed25519PublicKey,
             keys: dict[bytes, Ed25519PublicKey], ephemeral: set[bytes], tmp: Path, verifier: IsoVerifier,
             log: Callable[[str], None]) -> Published:
    files: dict[str, tuple[bytes, int]] = {}
    iso_name = config.iso.name
    log(f"copying {config.iso} and {config.provenance}")
    iso_sha256, iso_size = files[iso_name] = _copy(config.iso, tmp / iso_name)
    _copy_provenance(config.provenance, tmp / PROVENANCE_DIR, files)
    log("verifying the copied ISO against its build record")
    verified = verifier(tmp / iso_name, tmp / PROVENANCE_DIR, keys)
    if verified.sha256 != iso_sha256:
        raise VerificationError("the verified ISO digest differs from the copy's", check="iso")
    with open_image(tmp / iso_name) as (build_bytes, tree):
        if hashlib.sha256(build_bytes).digest() != verified.image_identity:
            raise VerificationError("the ISO's build manifest is not the verified image identity", check="iso")
        surface = image_surface(tree, record_format=RECORD_VERSION)
    try:
        build = BuildManifest.from_cbor(build_bytes)
    except AslError as exc:
        raise VerificationError(f"the ISO's build manifest: {exc}", check="iso") from None
    parse_version(build.version)
    target = config.out / build.version
    if os.path.lexists(target):
        raise ReleaseError(f"{target}: version {build.version} is already published")
    previous = latest_release(config.out, below=build.version, release_key=release_public)
    changes = None
    if previous is not None:
        changes = check_version(old_version=previous[0], old=previous[1].compat, new_version=build.version,
                                new=surface)
    report = verified.chain
    build_keys = tuple(BuildKey(kid=kid, public=cose.raw_public_bytes(keys[kid]), ephemeral=kid in ephemeral)
                       for kid in report.kids)

    statement = intoto.statement(
        iso_name=iso_name, iso_sha256=iso_sha256, records=report.records, head_seq=report.head_seq,
        head_digest=report.head_digest, build_kids=report.kids, image=verified.image_identity, name=build.name,
        version=build.version, byproducts=[(f"{PROVENANCE_DIR}/{n}", files[f"{PROVENANCE_DIR}/{n}"][0])
                                           for n in EVIDENCE])
    envelope = dsse.sign_envelope(intoto.statement_bytes(statement), payload_type=dsse.INTOTO_PAYLOAD_TYPE,
                                  private_key=release.private_key, keyid=release.kid.hex())
    intoto_name = f"{iso_name}.intoto.jsonl"
    files[intoto_name] = _write(tmp / intoto_name, dsse.envelope_line(envelope))

    manifest = ReleaseManifest(
        name=build.name, version=build.version, iso_name=iso_name, iso_sha256=iso_sha256, iso_size=iso_size,
        image=verified.image_identity, chain=report.chain_id, head_seq=report.head_seq,
        head_digest=report.head_digest, source_date_epoch=build.source_date_epoch, build_keys=build_keys,
        files=tuple(ReleaseFile(path=p, sha256=d, size=s) for p, (d, s) in sorted(files.items())), compat=surface)
    signed = cose.sign(manifest.to_cbor(), release.private_key, content_type=RELEASE_CONTENT_TYPE)
    files[MANIFEST_NAME] = _write(tmp / MANIFEST_NAME, signed)
    sums = "".join(f"{d.hex()}  {p}\n" for p, (d, _s) in sorted(files.items())).encode("ascii")
    _write(tmp / SUMS_NAME, sums)
    comment = (f"asl-release {build.name} {build.version} image sha256:{verified.image_identity.hex()} "
               f"timestamp:{build.source_date_epoch}")
    _write(tmp / MINISIG_NAME, minisign.sign(sums, release.private_key, trusted_comment=comment).encode("ascii"))
    for directory, _dirs, _files in os.walk(tmp, topdown=False):
        os.chmod(directory, 0o755)  # noqa: S103 - a release is public: readable and listable by all
        fsync_dir(Path(directory))
    if os.path.lexists(target):
        raise ReleaseError(f"{target}: version {build.version} is already published")
    os.rename(tmp, target)
    fsync_dir(config.out)
    log(f"published {target}")
    return Published(directory=target, manifest=manifest, previous=previous[0] if previous else None,
                     changes=changes, method=verified.method)
