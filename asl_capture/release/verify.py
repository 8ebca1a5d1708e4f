"""``asl-verify release``: check a release directory offline, with the release key as the trust anchor.

Six numbered checks (``docs/RELEASE.md`` section 6); a failed check does not stop the later ones,
except that nothing is compared with a manifest that does not verify:

1. ``manifest``: ``RELEASE.cbor`` is a COSE_Sign1 by a trusted key over a version-1 release manifest,
   that key is not one of the build keys, and the directory is named for the manifest's version;
2. ``files``: every file of the directory is listed with its digest; changed, removed and added
   files are named (symlinks and other non-regular files are refused);
3. ``sums``: ``SHA256SUMS`` lists exactly those files with those digests and ``SHA256SUMS.minisig``
   is a valid prehashed minisign signature of it by the release key;
4. ``chain``: the provenance chain ends exactly at the head the manifest names (a truncated or
   extended chain fails, named), its checkpoint vouches for that head (an older checkpoint put back
   fails), and it verifies as ``asl-verify chain`` does with the build keys the manifest names;
5. ``dsse``: the in-toto envelope is signed by the release key and its subject is the ISO;
6. ``iso``: the ISO verifies as ``asl-verify iso`` does, with the manifest's digest and image identity.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asl_capture import chain, cose, dcbor, dsse, minisign
from asl_capture.errors import AslError, StoreError, UsageError, VerificationError
from asl_capture.format import RELEASE_CONTENT_TYPE, Checkpoint, ReleaseManifest
from asl_capture.format.release import MANIFEST_NAME
from asl_capture.hashing import sha256_path
from asl_capture.release import intoto
from asl_capture.release.image import IsoVerifier, default_verifier
from asl_capture.release.publish import MINISIG_NAME, PROVENANCE_DIR, SUMS_NAME, read_small
from asl_capture.verdict import Check, ChecksFailed, all_passed, failed
from asl_capture.verify import verify_chain

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CHECKS = ("manifest", "files", "sums", "chain", "dsse", "iso")
JSON_SCHEMA = "asl-verify/release/1"
_SUMS_LINE = re.compile(r"([0-9a-f]{64})  ([^\n]+)")


@dataclass(frozen=True)
class ReleaseReport:
    """The verdict on a release directory."""

    directory: Path
    manifest: ReleaseManifest | None
    release_kid: bytes | None
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all_passed(self.checks, CHECKS)

    @property
    def failures(self) -> tuple[Check, ...]:
        return failed(self.checks)


class ReleaseVerificationError(ChecksFailed):
    """At least one check failed; ``report`` holds them all."""

    def __init__(self, report: ReleaseReport) -> None:
        super().__init__(report.failures)
        self.report = report


class _Run:
    """The state the checks share."""

    def __init__(self, directory: Path, trusted: Mapping[bytes, Ed25519PublicKey], verifier: IsoVerifier) -> None:
        self.directory = directory
        self.trusted = trusted
        self.verifier = verifier
        self.manifest: ReleaseManifest | None = None
        self.release_kid: bytes | None = None
        self.release_key: Ed25519PublicKey | None = None
        self.found: dict[str, bytes] = {}
        self.build_keys: dict[bytes, Ed25519PublicKey] = {}

    # 1 -------------------------------------------------------------------------------------------------
    def manifest_check(self) -> str:
        data = read_small(self.directory / MANIFEST_NAME, MANIFEST_NAME)
        try:
            msg = cose.parse(dcbor.decode(data, tags=cose.COSE_TAGS))
        except AslError as exc:
            raise VerificationError(f"{MANIFEST_NAME} is not a COSE_Sign1 message: {exc}") from None
        key = self.trusted.get(msg.kid)
        if key is None:
            raise VerificationError(f"{MANIFEST_NAME} is signed by key id {msg.kid.hex()}, which is not trusted")
        if msg.content_type != RELEASE_CONTENT_TYPE:
            raise VerificationError(f"{MANIFEST_NAME} has content type {msg.content_type!r}, not a release manifest")
        try:
            manifest = ReleaseManifest.from_cbor(cose.verify(msg, key))
        except VerificationError:
            raise VerificationError(f"{MANIFEST_NAME}: Ed25519 signature does not verify") from None
        except AslError as exc:
            raise VerificationError(f"{MANIFEST_NAME}: {exc}") from None
        if any(k.kid == msg.kid for k in manifest.build_keys):
            raise VerificationError(f"{MANIFEST_NAME} is signed by a key that also signed the build")
        name = self.directory.resolve().name
        if name != manifest.version:
            raise VerificationError(f"the release directory is named {name!r} but its manifest is for version "
                                    f"{manifest.version}")
        self.manifest, self.release_kid, self.release_key = manifest, msg.kid, key
        return (f"{manifest.name} {manifest.version} signed by release key {msg.kid.hex()[:16]}; ISO "
                f"{manifest.iso_name} sha256 {manifest.iso_sha256.hex()[:16]}..., chain head seq {manifest.head_seq}")

    # 2 -------------------------------------------------------------------------------------------------
    def files_check(self) -> str:
        assert self.manifest is not None
        problems: list[str] = []
        for root, dirs, names in os.walk(self.directory):
            for name in sorted(dirs + names):
                path = Path(root) / name
                rel = path.relative_to(self.directory).as_posix()
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    continue
                if not stat.S_ISREG(mode):
                    problems.append(f"not a regular file: {rel}")
                    if name in dirs:
                        dirs.remove(name)
                    continue
                self.found[rel] = sha256_path(path)
        listed = {f.path: f.sha256 for f in self.manifest.files}
        own = {MANIFEST_NAME, SUMS_NAME, MINISIG_NAME}
        for rel in sorted(listed):
            if rel not in self.found:
                problems.append(f"removed: {rel}")
            elif self.found[rel] != listed[rel]:
                problems.append(f"changed: {rel} (sha256 {self.found[rel].hex()}, the release lists "
                                f"{listed[rel].hex()})")
        problems.extend(f"removed: {rel}" for rel in sorted(own - set(self.found)))
        problems.extend(f"added: {rel}" for rel in sorted(set(self.found) - set(listed) - own))
        if problems:
            raise VerificationError(f"{len(problems)} difference(s) from {MANIFEST_NAME}: " + "; ".join(problems))
        return f"{len(listed)} files listed in {MANIFEST_NAME}, each present with its digest; nothing added"

    # 3 -------------------------------------------------------------------------------------------------
    def sums_check(self) -> str:
        assert self.manifest is not None and self.release_key is not None
        sums = read_small(self.directory / SUMS_NAME, SUMS_NAME)
        signature = read_small(self.directory / MINISIG_NAME, MINISIG_NAME)
        try:
            trusted_comment = minisign.verify(sums, signature.decode("ascii"), cose.raw_public_bytes(self.release_key))
        except UnicodeDecodeError:
            raise VerificationError(f"{MINISIG_NAME} is not ASCII") from None
        except VerificationError as exc:
            raise VerificationError(f"{MINISIG_NAME}: {exc}") from None
        listed: dict[str, str] = {}
        for number, line in enumerate(sums.decode("utf-8", "replace").splitlines(), 1):
            m = _SUMS_LINE.fullmatch(line)
            if m is None or m.group(2) in listed:
                raise VerificationError(f"{SUMS_NAME} line {number} is not '<sha256>  <path>' (or repeats a path)")
            listed[m.group(2)] = m.group(1)
        expected = {MANIFEST_NAME} | {f.path for f in self.manifest.files}
        problems = [f"not listed: {p}" for p in sorted(expected - set(listed))]
        problems += [f"listed but not part of the release: {p}" for p in sorted(set(listed) - expected)]
        problems += [f"wrong digest for {p}" for p in sorted(expected & set(listed))
                     if self.found.get(p, b"").hex() != listed[p]]
        if problems:
            raise VerificationError(f"{SUMS_NAME}: " + "; ".join(problems))
        return f"{SUMS_NAME} lists {len(listed)} files; minisign signature by the release key ({trusted_comment})"

    # 4 -------------------------------------------------------------------------------------------------
    def chain_check(self) -> str:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        m = self.manifest
        assert m is not None
        prov = self.directory / PROVENANCE_DIR
        pinned = {kid for kid in self.trusted if kid != self.release_kid}
        for key in m.build_keys:
            if cose.key_id(key.public) != key.kid:
                raise VerificationError(f"build key {key.kid.hex()} does not match its public key")
            if pinned and not key.ephemeral and key.kid not in pinned:
                raise VerificationError(f"build key {key.kid.hex()} is not among the trusted build keys given")
            self.build_keys[key.kid] = Ed25519PublicKey.from_public_bytes(key.public)
        try:
            scan = chain.read(prov / "chain.cbor")
        except AslError as exc:
            raise VerificationError(f"{PROVENANCE_DIR}/chain.cbor: {exc}") from None
        items, head = scan.items, m.head_seq
        if len(items) < head + 1:
            raise VerificationError(f"chain truncated: it ends at seq {len(items) - 1}, the release names head seq "
                                    f"{head}")
        if len(items) > head + 1:
            raise VerificationError(f"chain extended: {len(items) - 1 - head} record(s) after the release's head "
                                    f"seq {head}")
        if items[head].digest != m.head_digest:
            raise VerificationError(f"chain head differs: record {head} has sha256 {items[head].digest.hex()}, the "
                                    f"release names {m.head_digest.hex()}")
        try:
            report = verify_chain(prov, self.build_keys)
        except (VerificationError, StoreError) as exc:
            raise VerificationError(f"{exc}") from None
        if report.chain_id != m.chain:
            raise VerificationError(f"chain id {report.chain_id.hex()} is not the release's {m.chain.hex()}")
        try:
            checkpoint = Checkpoint.from_cbor(cose.parse(dcbor.decode(
                read_small(prov / "checkpoint.cose", "checkpoint.cose"), tags=cose.COSE_TAGS)).payload)
        except AslError as exc:
            raise VerificationError(f"{PROVENANCE_DIR}/checkpoint.cose: {exc}") from None
        if (checkpoint.seq, checkpoint.digest) != (head, m.head_digest):
            raise VerificationError(f"{PROVENANCE_DIR}/checkpoint.cose vouches for seq {checkpoint.seq}, not the "
                                    f"release's head seq {head}: an older checkpoint was put back")
        return (f"{len(report.records)} records, chain {report.chain_id.hex()[:16]}..., head seq {head} and its "
                f"checkpoint as the release names them; signed by {len(report.kids)} build key(s) it names")

    # 5 -------------------------------------------------------------------------------------------------
    def dsse_check(self) -> str:
        m = self.manifest
        assert m is not None and self.release_key is not None
        name = f"{m.iso_name}.intoto.jsonl"
        lines = [ln for ln in read_small(self.directory / name, name).splitlines() if ln.strip()]
        if len(lines) != 1:
            raise VerificationError(f"{name} holds {len(lines)} envelopes, expected 1")
        try:
            envelope = json.loads(lines[0])
        except ValueError as exc:
            raise VerificationError(f"{name} is not JSON: {exc}") from None
        try:
            payload = dsse.verify_envelope(envelope, self.release_key, payload_type=dsse.INTOTO_PAYLOAD_TYPE)
            statement: Any = json.loads(payload)
        except ValueError as exc:
            raise VerificationError(f"{name}: the statement is not JSON: {exc}") from None
        except VerificationError as exc:
            raise VerificationError(f"{name}: {exc}") from None
        subject = [{"name": m.iso_name, "digest": {"sha256": m.iso_sha256.hex()}}]
        if not isinstance(statement, dict) or statement.get("_type") != intoto.STATEMENT_TYPE \
                or statement.get("predicateType") != intoto.PREDICATE_TYPE:
            raise VerificationError(f"{name}: not an in-toto Statement v1 with an SLSA Provenance v1 predicate")
        if statement.get("subject") != subject:
            raise VerificationError(f"{name}: the statement's subject is not the released ISO")
        internal = statement.get("predicate", {}).get("buildDefinition", {}).get("internalParameters", {})
        if internal.get("head") != {"seq": m.head_seq, "sha256": m.head_digest.hex()}:
            raise VerificationError(f"{name}: the statement names another chain head than the release")
        return f"DSSE envelope signed by the release key; subject {m.iso_name} sha256 {m.iso_sha256.hex()[:16]}..."

    # 6 -------------------------------------------------------------------------------------------------
    def iso_check(self) -> str:
        m = self.manifest
        assert m is not None
        verified = self.verifier(self.directory / m.iso_name, self.directory / PROVENANCE_DIR, self.build_keys)
        if verified.sha256 != m.iso_sha256:
            raise VerificationError(f"{m.iso_name}: sha256 {verified.sha256.hex()} is not the release's")
        if verified.image_identity != m.image:
            raise VerificationError(f"image identity sha256:{verified.image_identity.hex()} is not the release's "
                                    f"sha256:{m.image.hex()}")
        return f"{m.iso_name} verified ({verified.method}); image identity sha256:{m.image.hex()}"


def verify_release(
    directory: Path, trusted: Mapping[bytes, Ed25519PublicKey], *, verifier: IsoVerifier | None = None,
    log: Callable[[Check], None] | None = None,
) -> ReleaseReport:
    """Verify a release directory (see the module docstring); ``trusted`` holds the release key and,
    optionally, build keys to pin.

    Raises:
        UsageError: ``directory`` is not a directory.
        ReleaseVerificationError: a check failed (the report names every failure).
    """
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a release directory")
    run = _Run(directory, trusted, verifier or default_verifier())
    emit = log if log is not None else (lambda _c: None)
    steps: list[Callable[[], str]] = [run.manifest_check, run.files_check, run.sums_check, run.chain_check,
                                      run.dsse_check, run.iso_check]
    done: list[Check] = []
    for number, (name, step) in enumerate(zip(CHECKS, steps, strict=True), 1):
        if name != "manifest" and run.manifest is None:
            check = Check(number, name, False, f"not checked: {MANIFEST_NAME} did not verify")
        else:
            try:
                check = Check(number, name, True, step())
            except VerificationError as exc:
                check = Check(number, name, False, _message(exc))
            except AslError as exc:
                check = Check(number, name, False, f"{type(exc).__name__}: {exc}")
            except OSError as exc:
                check = Check(number, name, False, f"{exc.filename}: {exc.strerror}")
        done.append(check)
        emit(check)
    report = ReleaseReport(directory=directory, manifest=run.manifest, release_kid=run.release_kid,
                           checks=tuple(done))
    if not report.ok:
        raise ReleaseVerificationError(report)
    return report


def _message(exc: VerificationError) -> str:
    text = str(exc)
    if exc.check and text.startswith(f"[{exc.check}] "):
        text = text[len(exc.check) + 3:]
    return f"[{exc.check}] {text}" if exc.check and not text.startswith("[") else text
