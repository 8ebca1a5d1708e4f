"""The pipeline's ISO published and checked with stock tools and asl-verify release (issue 10, slow).

Two builds: the session's shared build (a throw-away key file, trusted with --trust), and one made
with ``asl-capture --ephemeral-key``, which verifies through its release manifest and the release
key alone.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asl_capture import chain, cose, dcbor
from asl_capture.format import ReleaseManifest, StepRecord
from asl_capture.keys import generate, load_public
from tests.conftest import cli
from tests.integration.pipeline_fixtures import Build, copy_tree, pipeline_build, source_date_epoch, tools_missing
from tests.unit.test_dsse import spec_pae

pytestmark = pytest.mark.slow
__all__ = ["pipeline_build"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ASL_")}


def _publish(build: Build, out: Path, keys: Path, *, trust: bool) -> tuple[Path, Path]:
    key, pub, _ = generate("release", directory=keys)
    args: list[str | os.PathLike[str]] = ["publish", "--iso", build.iso, "--provenance", build.provenance,
                                          "--key", key, "--out", out]
    if trust:
        assert build.trust is not None
        args += ["--trust", build.trust]
    result = cli("asl-release", *args, env=_env(), timeout=900)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    directory = Path(result.stdout.decode().strip())
    assert directory.parent == out
    return directory, pub


@pytest.fixture(scope="module")
def released(pipeline_build: Build, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    build = pipeline_build
    if build.trust is None:  # ASL_TEST_REPO_BUILD reuses a build: its public key comes from ASL_TEST_REPO_TRUST
        trust = os.environ.get("ASL_TEST_REPO_TRUST")
        if not trust:
            pytest.skip("ASL_TEST_REPO_BUILD without ASL_TEST_REPO_TRUST (the build key's .pub)")
        build = dataclasses.replace(build, trust=Path(trust))
    base = tmp_path_factory.mktemp("release")
    return _publish(build, base / "dist", base / "keys", trust=True)


def test_stock_minisign_and_sha256sum_check_the_release(released: tuple[Path, Path], tmp_path: Path) -> None:
    directory, pub = released
    if tools_missing(["minisign", "sha256sum"]):
        pytest.skip("minisign or sha256sum missing")
    mpub = tmp_path / "release.minisign.pub"
    assert cli("asl-keys", "export", "--format", "minisign", pub, "--out", mpub, env=_env()).returncode == 0
    ok = subprocess.run(["minisign", "-Vm", "SHA256SUMS", "-p", str(mpub)], cwd=directory, capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=directory, capture_output=True, check=False)
    assert sums.returncode == 0, sums.stdout
    changed = tmp_path / "SHA256SUMS"
    data = bytearray((directory / "SHA256SUMS").read_bytes())
    data[0] = ord("0") if data[0] != ord("0") else ord("1")
    changed.write_bytes(bytes(data))
    shutil.copy(directory / "SHA256SUMS.minisig", tmp_path / "SHA256SUMS.minisig")
    bad = subprocess.run(["minisign", "-Vm", "SHA256SUMS", "-p", str(mpub)], cwd=tmp_path, capture_output=True,
                         check=False)
    assert bad.returncode != 0


def test_dsse_envelope_checked_independently(released: tuple[Path, Path]) -> None:
    """PAE from the specification (tests/unit/test_dsse.py), the release key, the ISO's own digest."""
    directory, pub = released
    [iso] = [p for p in directory.iterdir() if p.suffix == ".iso"]
    [line] = (directory / f"{iso.name}.intoto.jsonl").read_bytes().splitlines()
    envelope = json.loads(line)
    payload = base64.b64decode(envelope["payload"])
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    load_public(pub).verify(signature, spec_pae(envelope["payloadType"].encode(), payload))
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    assert statement["subject"] == [{"name": iso.name, "digest": {"sha256": digest}}]
    predicate = statement["predicate"]
    assert predicate["buildDefinition"]["resolvedDependencies"], "the Debian sources should be listed"
    assert predicate["runDetails"]["metadata"]["invocationId"]


def test_asl_verify_release_verifies_the_pipeline_release(released: tuple[Path, Path]) -> None:
    directory, pub = released
    result = cli("asl-verify", "release", directory, "--trust", pub, env=_env(), timeout=900)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"VERIFIED: release asl-auth-host" in result.stdout
    manifest = ReleaseManifest.from_cbor(cose.parse(dcbor.decode(
        (directory / "RELEASE.cbor").read_bytes(), tags=cose.COSE_TAGS)).payload)
    assert f"image identity: sha256:{manifest.image.hex()}".encode() in result.stdout


def test_ephemeral_key_build_verifies_through_the_release_key_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("ephemeral")
    repo = copy_tree(base / "repo")
    env = {**_env(), "SOURCE_DATE_EPOCH": source_date_epoch(), "XDG_CONFIG_HOME": str(base / "xdg"),
           "ASL_CAPTURE": f"{sys.executable} -m asl_capture.cli.capture"}
    build = subprocess.run([sys.executable, "-m", "asl_capture.cli.capture", "--ephemeral-key", "--",
                            "./pipeline/build.sh"], cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr[-4000:]
    assert not (base / "xdg").exists(), "no key file may be created"
    [iso] = (repo / "out").glob("*.iso")
    done = Build(repo=repo, iso=iso, provenance=repo / "out" / "provenance", trust=None, seconds=0.0, log="")
    directory, pub = _publish(done, base / "dist", base / "keys", trust=False)
    manifest = ReleaseManifest.from_cbor(cose.parse(dcbor.decode(
        (directory / "RELEASE.cbor").read_bytes(), tags=cose.COSE_TAGS)).payload)
    [key] = manifest.build_keys
    assert key.ephemeral
    outer = StepRecord.from_cbor(cose.parse(dcbor.decode(
        _last_item(directory / "provenance" / "chain.cbor"), tags=cose.COSE_TAGS)).payload)
    assert outer.parent is None and outer.ephemeral_key == key.public
    result = cli("asl-verify", "release", directory, "--trust", pub, env=_env(), timeout=900)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def _last_item(path: Path) -> bytes:
    return chain.read(path).items[-1].raw
