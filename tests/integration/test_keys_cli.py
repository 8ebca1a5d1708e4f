"""asl-keys generate/id, passphrases, and interoperability with keys made by openssl."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.integration.records import assert_one_line_error, read_records

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_KEY"}


def _openssl_kid(key: Path) -> str:
    """Key id computed by openssl alone: SHA-256 of the last 32 bytes of the SPKI DER."""
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert len(der) == 44  # 12-byte Ed25519 SPKI prefix + 32-byte raw key
    return hashlib.sha256(der[-32:]).hexdigest()


def test_generate_writes_0600_key_and_matching_ids(env: dict[str, str], tmp_path: Path) -> None:
    keys = tmp_path / "k"
    # a permissive umask must not widen the private key's mode
    gen = subprocess.run(["sh", "-c", 'umask 000; exec "$0" -m asl_capture.cli.keys generate alice --dir "$1"',
                          sys.executable, str(keys)], env=env, capture_output=True, check=False)
    assert gen.returncode == 0, gen.stderr
    kid = gen.stdout.strip().decode()
    assert len(kid) == 64 and int(kid, 16) >= 0
    key, pub = keys / "alice.key", keys / "alice.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    for path in (pub, key):
        result = cli("asl-keys", "id", path, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().strip() == kid
    if shutil.which("openssl"):
        assert _openssl_kid(key) == kid
    # never overwrites
    again = cli("asl-keys", "generate", "alice", "--dir", keys, env=env)
    assert again.returncode == 2
    assert_one_line_error(again.stderr, "KeyFileError")
    assert cli("asl-keys", "id", pub, env=env).stdout.decode().strip() == kid


def test_generate_with_passphrase_file_and_env(env: dict[str, str], tmp_path: Path) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text("correct horse\n")
    gen = cli("asl-keys", "generate", "enc", "--dir", tmp_path / "k", "--passphrase-file", pwfile, env=env)
    assert gen.returncode == 0, gen.stderr
    kid = gen.stdout.strip()
    key = tmp_path / "k" / "enc.key"
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # the private key needs the passphrase; the public key does not
    assert cli("asl-keys", "id", tmp_path / "k" / "enc.pub", env=env).stdout.strip() == kid
    assert cli("asl-keys", "id", key, "--passphrase-file", pwfile, env=env).stdout.strip() == kid
    assert cli("asl-keys", "id", key, env={**env, "ASL_KEY_PASSPHRASE": "correct horse"}).stdout.strip() == kid
    for bad_env in ({}, {"ASL_KEY_PASSPHRASE": "wrong"}):
        bad = cli("asl-keys", "id", key, env={**env, **bad_env})
        assert bad.returncode == 2
        assert_one_line_error(bad.stderr, "KeyFileError")

    envgen = cli("asl-keys", "generate", "env", "--dir", tmp_path / "k",
                 env={**env, "ASL_KEY_PASSPHRASE": "from env"})
    assert envgen.returncode == 0, envgen.stderr
    env_key = tmp_path / "k" / "env.key"
    assert env_key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # the encrypted key signs captures with the passphrase from the environment, and only then
    work = tmp_path / "work"
    work.mkdir()
    ok = cli("asl-capture", "--key", env_key, "--", "true", env={**env, "ASL_KEY_PASSPHRASE": "from env"}, cwd=work)
    assert ok.returncode == 0, ok.stderr
    assert len(read_records(Path(env["ASL_CAPTURE_DIR"]), tmp_path / "k" / "env.pub")) == 1
    for f in Path(env["ASL_CAPTURE_DIR"]).rglob("*"):
        assert not f.is_file() or b"from env" not in f.read_bytes()


def test_empty_or_missing_passphrase_file(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    for pw in (empty, tmp_path / "missing"):
        result = cli("asl-keys", "generate", "x", "--dir", tmp_path / "k", "--passphrase-file", pw, env=env)
        assert result.returncode == 2
        assert_one_line_error(result.stderr, "KeyFileError")
        assert not (tmp_path / "k" / "x.key").exists()


def test_id_of_missing_or_non_key_file(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    junk.chmod(0o600)
    for path in (tmp_path / "missing.pub", junk):
        result = cli("asl-keys", "id", path, env=env)
        assert result.returncode == 2
        assert_one_line_error(result.stderr, "KeyFileError")


@needs_openssl
def test_openssl_generated_key_interoperates(env: dict[str, str], tmp_path: Path) -> None:
    key, pub = tmp_path / "ossl.pem", tmp_path / "ossl.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    expected = _openssl_kid(key)
    key.chmod(0o600)
    assert cli("asl-keys", "id", key, env=env).stdout.decode().strip() == expected
    assert cli("asl-keys", "id", pub, env=env).stdout.decode().strip() == expected

    work = tmp_path / "work"
    work.mkdir()
    mark = work / "MARK"
    key.chmod(0o644)  # as openssl leaves it under a common umask: refused, command not run
    refused = cli("asl-capture", "--key", key, "--", "touch", mark, env=env, cwd=work)
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "KeyFileError")
    assert b"chmod 600" in refused.stderr
    assert not mark.exists()
    key.chmod(0o600)
    ok = cli("asl-capture", "--key", key, "--", "touch", mark, env=env, cwd=work)
    assert ok.returncode == 0, ok.stderr
    assert mark.exists()
    prov = Path(env["ASL_CAPTURE_DIR"])
    verify = cli("asl-verify", "chain", prov, "--trust", pub, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert expected[:16].encode() in verify.stdout


@needs_openssl
def test_openssl_encrypted_key_with_passphrase(env: dict[str, str], tmp_path: Path) -> None:
    key = tmp_path / "enc.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:open sesame",
                    "-out", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    expected = subprocess.run(["openssl", "pkey", "-in", str(key), "-passin", "pass:open sesame", "-pubout",
                               "-outform", "DER"], capture_output=True, check=True).stdout[-32:]
    result = cli("asl-keys", "id", key, env={**env, "ASL_KEY_PASSPHRASE": "open sesame"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == hashlib.sha256(expected).hexdigest()


def test_non_ed25519_key_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key = tmp_path / "ec.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    work = tmp_path / "work"
    work.mkdir()
    mark = work / "MARK"
    refused = cli("asl-capture", "--key", key, "--", "touch", mark, env=env, cwd=work)
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "KeyFileError")
    assert not mark.exists()


def test_export_minisign_from_public_or_private_key(env: dict[str, str], tmp_path: Path) -> None:
    from asl_capture import minisign
    from asl_capture.keys import generate, load_signer

    key, pub, kid = generate("rel", directory=tmp_path / "k", passphrase=b"open sesame")
    from_pub = cli("asl-keys", "export", "--format", "minisign", pub, env=env)
    assert from_pub.returncode == 0, from_pub.stderr
    from_key = cli("asl-keys", "export", "--format", "minisign", key, env={**env, "ASL_KEY_PASSPHRASE": "open sesame"})
    assert from_key.stdout == from_pub.stdout
    assert b"PRIVATE" not in from_key.stdout
    mkid, public = minisign.parse_public_key_file(from_pub.stdout.decode())
    assert public == load_signer(key, passphrase=b"open sesame").public_raw() and mkid == kid[:8]
    out = tmp_path / "rel.minisign.pub"
    assert cli("asl-keys", "export", "--format", "minisign", pub, "--out", out, env=env).returncode == 0
    assert out.read_bytes() == from_pub.stdout
    again = cli("asl-keys", "export", "--format", "minisign", pub, "--out", out, env=env)
    assert again.returncode == 2
    assert_one_line_error(again.stderr, "KeyFileError")
    bad_args: list[list[str | os.PathLike[str]]] = [["--format", "pem", pub],
                                                    ["--format", "minisign", tmp_path / "missing.pub"]]
    for bad in bad_args:
        result = cli("asl-keys", "export", *bad, env=env)
        assert result.returncode == 2 and b"Traceback" not in result.stderr
