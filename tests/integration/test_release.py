"""asl-release publish and asl-verify release on a small real build (issue 10).

Each verification failure has its negative test; publishing is atomic; the versioning rule refuses
through publish. The pipeline's own ISO is published and verified in test_release_pipeline.py.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asl_capture import chain, cose, dcbor
from asl_capture.errors import ReleaseError, VerificationError
from asl_capture.format import Checkpoint, ReleaseManifest, StepRecord
from asl_capture.keys import generate, load_public, load_signer, load_trust
from asl_capture.release.image import VerifiedIso, reduced_verify
from asl_capture.release.publish import PublishConfig, Published, publish
from asl_capture.release.surface import VersionRuleError
from asl_capture.release.verify import ReleaseReport, ReleaseVerificationError, verify_release
from asl_capture.store import ProvenanceDir
from tests.conftest import cli
from tests.integration.records import assert_one_line_error
from tests.integration.release_fixtures import MiniBuild, mini_build, tools_missing
from tests.unit.bodies import builder

pytestmark = pytest.mark.skipif(bool(tools_missing()), reason=f"missing {tools_missing()}")


@dataclasses.dataclass(frozen=True)
class Released:
    build: MiniBuild
    published: Published
    key: Path
    pub: Path

    @property
    def directory(self) -> Path:
        return self.published.directory


def release_key(base: Path) -> tuple[Path, Path]:
    key, pub, _ = generate("release", directory=base / "release-keys")
    return key, pub


def trust_of(build: MiniBuild) -> tuple[Path, ...]:
    return (build.trust,) if build.trust is not None else ()


def do_publish(build: MiniBuild, key: Path, out: Path) -> Published:
    return publish(PublishConfig(iso=build.iso, provenance=build.provenance, key=key, out=out, trust=trust_of(build)),
                   verifier=reduced_verify)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    """A build signed with a key file, published once; tests work on copies of the release."""
    base = tmp_path_factory.mktemp("released")
    build = mini_build(base / "b", ephemeral=False)
    key, pub = release_key(base)
    return Released(build, do_publish(build, key, base / "dist"), key, pub)


@pytest.fixture
def copy(released: Released, tmp_path: Path) -> Iterator[Path]:
    """A copy of the release directory, named for its version."""
    target = tmp_path / "dist" / released.directory.name
    shutil.copytree(released.directory, target, symlinks=True)
    yield target


def verify(directory: Path, *pubs: Path) -> ReleaseReport:
    return verify_release(directory, load_trust(list(pubs)), verifier=reduced_verify)


def failure(directory: Path, *pubs: Path) -> dict[str, str]:
    with pytest.raises(ReleaseVerificationError) as info:
        verify(directory, *pubs)
    return {c.name: c.detail for c in info.value.report.failures}


# --- publish ------------------------------------------------------------------------------------------------


def test_published_release_verifies_and_has_every_part(released: Released) -> None:
    d = released.directory
    assert d.name == "1.0.0"
    assert sorted(p.name for p in d.iterdir()) == sorted([
        "RELEASE.cbor", "SHA256SUMS", "SHA256SUMS.minisig", "mini-1.0.0.iso", "mini-1.0.0.iso.intoto.jsonl",
        "provenance"])
    assert sorted(p.name for p in (d / "provenance").iterdir()) == ["chain.cbor", "checkpoint.cose", "objects"]
    report = verify(d, released.pub)
    assert report.ok and [c.name for c in report.checks] == ["manifest", "files", "sums", "chain", "dsse", "iso"]
    m = report.manifest
    assert m is not None and (m.name, m.version, m.iso_name) == ("mini", "1.0.0", "mini-1.0.0.iso")
    assert m.iso_sha256 == released.published.manifest.iso_sha256
    assert [k.ephemeral for k in m.build_keys] == [False]
    assert not any(p.name.startswith(".publish-") for p in d.parent.iterdir())


def test_sha256sum_and_stock_minisign_check_the_release(released: Released, copy: Path) -> None:
    if shutil.which("minisign") is None:
        pytest.skip("minisign not installed")
    pub = copy.parent / "release.minisign.pub"
    exported = cli("asl-keys", "export", "--format", "minisign", released.pub, "--out", pub, env=dict(os.environ))
    assert exported.returncode == 0, exported.stderr
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, check=False)
    assert sums.returncode == 0, sums.stdout
    ok = subprocess.run(["minisign", "-Vm", "SHA256SUMS", "-p", str(pub)], cwd=copy, capture_output=True, check=False)
    assert ok.returncode == 0, ok.stderr
    data = bytearray((copy / "SHA256SUMS").read_bytes())
    data[10] ^= 0x01
    (copy / "SHA256SUMS").write_bytes(bytes(data))
    bad = subprocess.run(["minisign", "-Vm", "SHA256SUMS", "-p", str(pub)], cwd=copy, capture_output=True, check=False)
    assert bad.returncode != 0
    assert "minisign signature does not verify" in failure(copy, released.pub)["sums"]


def test_ephemeral_build_verifies_through_the_release_key_alone(tmp_path: Path) -> None:
    build = mini_build(tmp_path / "b", ephemeral=True)
    key, pub = release_key(tmp_path)
    done = do_publish(build, key, tmp_path / "dist")
    [build_key] = done.manifest.build_keys
    assert build_key.ephemeral
    records = [cose.parse(i.value) for i in chain.read(build.provenance / "chain.cbor").items]
    assert {m.kid for m in records} == {build_key.kid}
    assert verify(done.directory, pub).ok  # nothing but the release key is trusted
    with pytest.raises(ReleaseVerificationError, match="not trusted"):
        verify(done.directory, generate("x", directory=tmp_path / "x")[1])


def test_release_key_that_signed_the_build_is_refused(released: Released, tmp_path: Path) -> None:
    assert released.build.key is not None
    with pytest.raises(ReleaseError, match="signed the build's chain"):
        do_publish(released.build, released.build.key, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or list((tmp_path / "dist").iterdir()) == []
    result = cli("asl-release", "publish", "--iso", released.build.iso, "--provenance", released.build.provenance,
                 "--key", released.build.key, "--trust", str(released.build.trust), "--out", tmp_path / "dist2",
                 env=dict(os.environ))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "ReleaseError")


def test_untrusted_build_key_is_refused(released: Released, tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="neither given with --trust nor an ephemeral key"):
        publish(PublishConfig(iso=released.build.iso, provenance=released.build.provenance, key=released.key,
                              out=tmp_path / "dist"), verifier=reduced_verify)


def test_iso_that_does_not_verify_is_not_published(released: Released, tmp_path: Path) -> None:
    iso = tmp_path / released.build.iso.name
    data = bytearray(released.build.iso.read_bytes())
    data[40000] ^= 0x01
    iso.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="no step of the chain produced these bytes"):
        publish(PublishConfig(iso=iso, provenance=released.build.provenance, key=released.key,
                              out=tmp_path / "dist", trust=trust_of(released.build)), verifier=reduced_verify)
    assert list((tmp_path / "dist").iterdir()) == []


@pytest.mark.parametrize("failure_at", ["verify", "interrupt"])
def test_failed_or_interrupted_publish_leaves_no_release_directory(
        released: Released, tmp_path: Path, failure_at: str) -> None:
    seen: list[Path] = []

    def verifier(iso: Path, prov: Path, trusted: object) -> VerifiedIso:
        seen.append(iso.parent)
        assert (iso.parent / "provenance" / "chain.cbor").is_file()  # half written by now
        if failure_at == "interrupt":
            raise KeyboardInterrupt
        raise VerificationError("injected", check="iso")

    out = tmp_path / "dist"
    with pytest.raises((VerificationError, KeyboardInterrupt)):
        publish(PublishConfig(iso=released.build.iso, provenance=released.build.provenance, key=released.key,
                              out=out, trust=trust_of(released.build)), verifier=verifier)
    assert seen and seen[0].parent == out and seen[0].name.startswith(".publish-")
    assert list(out.iterdir()) == []


def test_same_version_is_not_published_twice(released: Released, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    shutil.copytree(released.directory, out / "1.0.0")
    with pytest.raises(ReleaseError, match=r"version 1\.0\.0 is already published"):
        do_publish(released.build, released.key, out)
    assert sorted(p.name for p in out.iterdir()) == ["1.0.0"]


def test_versioning_rule_through_publish(released: Released, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    shutil.copytree(released.directory, out / "1.0.0")

    def drop_log_key(overlay: Path) -> None:
        config = overlay / "etc/asl-auth-host/config.yaml"
        config.write_text(config.read_text().replace("  level: INFO\n", ""))

    minor = mini_build(tmp_path / "minor", version="1.1.0", ephemeral=True, change=drop_log_key)
    with pytest.raises(VersionRuleError, match=r"config\.yaml key 'logging\.level' removed or renamed"):
        do_publish(minor, released.key, out)
    assert sorted(p.name for p in out.iterdir()) == ["1.0.0"]
    result = cli("asl-release", "publish", "--iso", minor.iso, "--provenance", minor.provenance, "--key",
                 released.key, "--out", out, env=dict(os.environ))
    # the CLI verifies with the full ``asl-verify iso`` now that it exists: the mini ISO (no grub-mkrescue,
    # no asl-iso-contents record) is refused by that first; the rule itself is checked through do_publish above
    assert result.returncode == 1 and (b"VersionRuleError: incompatible change(s) since 1.0.0" in result.stderr
                                       or b"IsoVerificationError: " in result.stderr), result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["1.0.0"]
    major = mini_build(tmp_path / "major", version="2.0.0", ephemeral=True, change=drop_log_key)
    done = do_publish(major, released.key, out)
    assert done.previous == "1.0.0" and done.changes is not None
    assert done.changes.incompatible == ("config.yaml key 'logging.level' removed or renamed",)
    assert sorted(p.name for p in out.iterdir()) == ["1.0.0", "2.0.0"]


# --- asl-verify release: each failure, named ------------------------------------------------------------------


def test_changed_file_is_named(released: Released, copy: Path) -> None:
    obj = next(p for p in (copy / "provenance" / "objects").rglob("*") if p.is_file())
    obj.write_bytes(obj.read_bytes() + b"x")
    rel = obj.relative_to(copy).as_posix()
    assert f"changed: {rel}" in failure(copy, released.pub)["files"]


def test_removed_file_is_named(released: Released, copy: Path) -> None:
    (copy / "mini-1.0.0.iso.intoto.jsonl").unlink()
    failed = failure(copy, released.pub)
    assert "removed: mini-1.0.0.iso.intoto.jsonl" in failed["files"]
    assert "dsse" in failed


def test_added_file_is_named(released: Released, copy: Path) -> None:
    (copy / "provenance" / "extra.cbor").write_bytes(b"\xa0")
    (copy / "README").write_text("hi")
    detail = failure(copy, released.pub)["files"]
    assert "added: README" in detail and "added: provenance/extra.cbor" in detail


def test_symlink_in_release_is_refused(released: Released, copy: Path) -> None:
    (copy / "link").symlink_to("/etc/passwd")
    assert "not a regular file: link" in failure(copy, released.pub)["files"]


def test_truncated_chain_with_an_older_checkpoint_put_back(released: Released, copy: Path) -> None:
    assert released.build.key is not None
    build_key = load_signer(released.build.key)
    prov = copy / "provenance"
    items = chain.read(prov / "chain.cbor").items
    (prov / "chain.cbor").write_bytes(b"".join(i.raw for i in items[:-1]))
    older = Checkpoint(chain=_chain_id(items), seq=len(items) - 2, digest=items[-2].digest)
    (prov / "checkpoint.cose").write_bytes(build_key.sign_message(older.to_cbor(),
                                                                  content_type="application/vnd.asl.checkpoint+cbor"))
    failed = failure(copy, released.pub)
    assert f"chain truncated: it ends at seq {len(items) - 2}, the release names head seq {len(items) - 1}" \
        in failed["chain"]
    assert "changed: provenance/chain.cbor" in failed["files"]


def _chain_id(items: tuple[chain.Item, ...]) -> bytes:
    return StepRecord.from_cbor(cose.parse(items[0].value).payload).chain


def test_extended_chain(released: Released, copy: Path) -> None:
    assert released.build.key is not None
    prov = copy / "provenance"
    chain.append(ProvenanceDir.existing(prov), load_signer(released.build.key), builder("late"),
                 new_chain_id=lambda: b"X" * 16)
    assert "chain extended: 1 record(s) after the release's head seq" in failure(copy, released.pub)["chain"]


def test_older_checkpoint_put_back(released: Released, copy: Path) -> None:
    assert released.build.key is not None
    prov = copy / "provenance"
    items = chain.read(prov / "chain.cbor").items
    older = Checkpoint(chain=_chain_id(items), seq=0, digest=items[0].digest)
    (prov / "checkpoint.cose").write_bytes(load_signer(released.build.key).sign_message(
        older.to_cbor(), content_type="application/vnd.asl.checkpoint+cbor"))
    failed = failure(copy, released.pub)
    assert "checkpoint.cose vouches for seq 0, not the release's head seq" in failed["chain"]
    assert "an older checkpoint was put back" in failed["chain"]


def test_manifest_signed_by_another_key_or_altered(released: Released, copy: Path, tmp_path: Path) -> None:
    _, other_pub = generate("other", directory=tmp_path / "o")[:2]
    assert "is not trusted" in failure(copy, other_pub)["manifest"]
    raw = bytearray((copy / "RELEASE.cbor").read_bytes())
    raw[-70] ^= 0x01  # inside the payload
    (copy / "RELEASE.cbor").write_bytes(bytes(raw))
    failed = failure(copy, released.pub)
    assert failed["manifest"].endswith("Ed25519 signature does not verify")
    assert failed["files"] == "not checked: RELEASE.cbor did not verify"


def test_release_resigned_by_the_build_key_is_refused(released: Released, copy: Path) -> None:
    """Whoever holds a build key cannot vouch for the release."""
    assert released.build.key is not None and released.build.trust is not None
    msg = cose.parse(dcbor.decode((copy / "RELEASE.cbor").read_bytes(), tags=cose.COSE_TAGS))
    signed = load_signer(released.build.key).sign_message(msg.payload, content_type=msg.content_type)
    (copy / "RELEASE.cbor").write_bytes(signed)
    assert "signed by a key that also signed the build" in failure(copy, released.build.trust)["manifest"]


def test_renamed_release_directory_is_refused(released: Released, copy: Path) -> None:
    renamed = copy.parent / "2.0.0"
    copy.rename(renamed)
    assert "named '2.0.0' but its manifest is for version 1.0.0" in failure(renamed, released.pub)["manifest"]


def test_dsse_envelope_tampered(released: Released, copy: Path) -> None:
    path = copy / "mini-1.0.0.iso.intoto.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"payloadType":"application/vnd.in-toto+json"',
                                               b'"payloadType":"application/json"'))
    assert "payload type" in failure(copy, released.pub)["dsse"]


def test_pinned_build_key_must_match(released: Released, copy: Path, tmp_path: Path) -> None:
    assert released.build.trust is not None
    assert verify(copy, released.pub, released.build.trust).ok
    _, stranger = generate("stranger", directory=tmp_path / "s")[:2]
    assert "is not among the trusted build keys given" in failure(copy, released.pub, stranger)["chain"]


def test_changed_iso_fails_files_and_iso(released: Released, copy: Path) -> None:
    iso = copy / "mini-1.0.0.iso"
    data = bytearray(iso.read_bytes())
    data[-1] ^= 0x01
    iso.write_bytes(bytes(data))
    failed = failure(copy, released.pub)
    assert "changed: mini-1.0.0.iso" in failed["files"] and "iso" in failed


def test_cli_exit_codes(released: Released, copy: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    (copy / "README").write_text("hi")
    bad = cli("asl-verify", "release", copy, "--trust", released.pub, env=env)
    assert bad.returncode == 1 and b"added: README" in bad.stdout and b"FAILED" in bad.stdout
    assert_one_line_error(bad.stderr, "ReleaseVerificationError")
    missing = cli("asl-verify", "release", tmp_path / "nope", "--trust", released.pub, env=env)
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "UsageError")
    as_json = cli("asl-verify", "release", copy, "--trust", released.pub, "--json", env=env)
    verdict = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and verdict["verdict"] == "failed" and verdict["schema"] == "asl-verify/release/1"
    assert verdict["version"] == "1.0.0" and verdict["image_identity"].startswith("sha256:")


def test_manifest_round_trips(released: Released) -> None:
    msg = cose.parse(dcbor.decode((released.directory / "RELEASE.cbor").read_bytes(), tags=cose.COSE_TAGS))
    assert ReleaseManifest.from_cbor(msg.payload) == released.published.manifest


def test_dsse_envelope_verified_with_pae_from_the_specification(released: Released) -> None:
    from tests.unit.test_dsse import spec_pae

    d = released.directory
    [line] = (d / "mini-1.0.0.iso.intoto.jsonl").read_bytes().splitlines()
    envelope = json.loads(line)
    payload = base64.b64decode(envelope["payload"])
    load_public(released.pub).verify(base64.b64decode(envelope["signatures"][0]["sig"]),
                                      spec_pae(envelope["payloadType"].encode(), payload))
    statement = json.loads(payload)
    iso_digest = hashlib.sha256((d / "mini-1.0.0.iso").read_bytes()).hexdigest()
    assert statement["subject"] == [{"name": "mini-1.0.0.iso", "digest": {"sha256": iso_digest}}]
    assert envelope["signatures"][0]["keyid"] == load_signer(released.key).kid.hex()


@pytest.mark.parametrize("case", ["truncated", "extended", "older-checkpoint"])
def test_cli_names_chain_tampering(released: Released, copy: Path, case: str) -> None:
    assert released.build.key is not None
    signer = load_signer(released.build.key)
    prov = copy / "provenance"
    items = chain.read(prov / "chain.cbor").items
    if case == "truncated":
        (prov / "chain.cbor").write_bytes(b"".join(i.raw for i in items[:-1]))
    elif case == "extended":
        chain.append(ProvenanceDir.existing(prov), signer, builder("late"), new_chain_id=lambda: b"X" * 16)
    else:
        older = Checkpoint(chain=_chain_id(items), seq=0, digest=items[0].digest)
        (prov / "checkpoint.cose").write_bytes(signer.sign_message(
            older.to_cbor(), content_type="application/vnd.asl.checkpoint+cbor"))
    result = cli("asl-verify", "release", copy, "--trust", released.pub, env=dict(os.environ))
    assert result.returncode == 1
    expected = {"truncated": b"chain truncated", "extended": b"chain extended",
                "older-checkpoint": b"an older checkpoint was put back"}[case]
    assert expected in result.stdout, result.stdout
