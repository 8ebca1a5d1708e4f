"""Key files: generation, permissions, encryption, openssl interop, trust roots, no key material in repr."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asl_capture.errors import KeyFileError
from asl_capture.keys import (
    PASSPHRASE_ENV,
    dev_key_path,
    ensure_dev_key,
    generate,
    load_public,
    load_signer,
    load_trust,
    public_key_id,
    read_passphrase,
)
from tests.conftest import KeyPair


def openssl(*args: str | os.PathLike[str]) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def raw_public_of(path: Path) -> bytes:
    pem = path.read_bytes()
    key = serialization.load_pem_public_key(pem)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ----------------------------------------------------------------------------------------------------
# generate


def test_generate_writes_0600_key_and_0644_pub(tmp_path: Path) -> None:
    old = os.umask(0o000)  # a permissive umask must not widen the private key
    try:
        key, pub, kid = generate("k", directory=tmp_path / "d")
    finally:
        os.umask(old)
    assert (key, pub) == (tmp_path / "d" / "k.key", tmp_path / "d" / "k.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert kid == hashlib.sha256(raw_public_of(pub)).digest()


def test_generate_under_strict_umask_still_makes_pub_readable(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        key, pub, _ = generate("k", directory=tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644


def test_key_id_is_sha256_of_raw_public_key(keypair: KeyPair) -> None:
    signer = load_signer(keypair.key)
    raw = signer.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.kid == keypair.kid == hashlib.sha256(raw).digest()
    assert public_key_id(load_public(keypair.pub)) == keypair.kid
    assert raw == raw_public_of(keypair.pub)


def test_generate_refuses_to_overwrite(keypair: KeyPair) -> None:
    before = (keypair.key.read_bytes(), keypair.pub.read_bytes())
    with pytest.raises(KeyFileError, match="already exists"):
        generate("signer", directory=keypair.key.parent)
    assert (keypair.key.read_bytes(), keypair.pub.read_bytes()) == before


def test_generate_refuses_when_only_the_pub_exists(tmp_path: Path) -> None:
    (tmp_path / "x.pub").write_bytes(b"old")
    with pytest.raises(KeyFileError, match="already exists"):
        generate("x", directory=tmp_path)
    assert not (tmp_path / "x.key").exists()
    assert (tmp_path / "x.pub").read_bytes() == b"old"


def test_generate_refuses_when_only_the_key_exists(tmp_path: Path) -> None:
    (tmp_path / "x.key").write_bytes(b"old")
    with pytest.raises(KeyFileError, match="already exists"):
        generate("x", directory=tmp_path)
    assert (tmp_path / "x.key").read_bytes() == b"old"
    assert not (tmp_path / "x.pub").exists()


def test_generate_does_not_follow_a_symlink_at_the_key_path(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "x.key").symlink_to(target)
    with pytest.raises(KeyFileError):
        generate("x", directory=tmp_path)
    assert not target.exists()


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "../up"])
def test_generate_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="invalid key name"):
        generate(name, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# passphrases


def test_encrypted_key_round_trip(tmp_path: Path) -> None:
    key, pub, kid = generate("enc", directory=tmp_path, passphrase=b"correct horse")
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    signer = load_signer(key, passphrase=b"correct horse")
    assert signer.kid == kid == public_key_id(load_public(pub))


def test_encrypted_key_without_passphrase(tmp_path: Path) -> None:
    key, _, _ = generate("enc", directory=tmp_path, passphrase=b"pw-123456")
    with pytest.raises(KeyFileError, match=r"key is encrypted; give its passphrase") as info:
        load_signer(key)
    assert PASSPHRASE_ENV in str(info.value) and str(key) in str(info.value)


def test_encrypted_key_with_wrong_passphrase(tmp_path: Path) -> None:
    key, _, _ = generate("enc", directory=tmp_path, passphrase=b"pw-123456")
    with pytest.raises(KeyFileError, match="wrong passphrase") as info:
        load_signer(key, passphrase=b"pw-654321")
    assert str(key) in str(info.value)


def test_passphrase_given_for_plain_key(keypair: KeyPair) -> None:
    with pytest.raises(KeyFileError, match="not encrypted but a passphrase was given"):
        load_signer(keypair.key, passphrase=b"anything")


def test_passphrase_from_file(tmp_path: Path) -> None:
    key, _, kid = generate("enc", directory=tmp_path, passphrase=b"s3cret pass")
    pfile = tmp_path / "pass.txt"
    pfile.write_bytes(b"s3cret pass\r\nsecond line ignored\n")
    passphrase = read_passphrase(passphrase_file=pfile, environ={PASSPHRASE_ENV: "env loses"})
    assert passphrase == b"s3cret pass"
    assert load_signer(key, passphrase=passphrase).kid == kid


def test_passphrase_from_environment(tmp_path: Path) -> None:
    key, _, kid = generate("enc", directory=tmp_path, passphrase="pässwörd".encode())
    passphrase = read_passphrase(passphrase_file=None, environ={PASSPHRASE_ENV: "pässwörd"})
    assert passphrase == "pässwörd".encode()
    assert load_signer(key, passphrase=passphrase).kid == kid
    wrong = read_passphrase(passphrase_file=None, environ={PASSPHRASE_ENV: "passwort"})
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signer(key, passphrase=wrong)


def test_no_passphrase_anywhere() -> None:
    assert read_passphrase(passphrase_file=None, environ={}) is None
    assert read_passphrase(passphrase_file=None, environ={PASSPHRASE_ENV: ""}) is None


def test_passphrase_file_empty_or_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"\nsecond")
    with pytest.raises(KeyFileError, match="passphrase file is empty"):
        read_passphrase(passphrase_file=empty, environ={})
    with pytest.raises(KeyFileError, match="cannot read passphrase file"):
        read_passphrase(passphrase_file=tmp_path / "missing", environ={PASSPHRASE_ENV: "x"})


# ----------------------------------------------------------------------------------------------------
# openssl interop


def test_openssl_ed25519_key_loads_and_ids_match(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", key)
    key.chmod(0o600)
    pub = tmp_path / "k.pub"
    openssl("pkey", "-in", key, "-pubout", "-out", pub)
    der = tmp_path / "k.der"
    openssl("pkey", "-in", key, "-pubout", "-outform", "DER", "-out", der)
    signer = load_signer(key)
    assert public_key_id(load_public(pub)) == signer.kid
    assert public_key_id(load_public(der)) == signer.kid  # DER loads too
    raw = der.read_bytes()[-32:]  # SubjectPublicKeyInfo for Ed25519 ends with the raw 32-byte key
    assert signer.kid == hashlib.sha256(raw).digest()


def test_openssl_encrypted_pkcs8_key(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:hunter22", "-out", key)
    key.chmod(0o600)
    pub = tmp_path / "k.pub"
    openssl("pkey", "-in", key, "-passin", "pass:hunter22", "-pubout", "-out", pub)
    assert load_signer(key, passphrase=b"hunter22").kid == public_key_id(load_public(pub))
    with pytest.raises(KeyFileError, match="encrypted"):
        load_signer(key)


@pytest.mark.parametrize("args", [
    ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"),
    ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
    ("-algorithm", "X25519"),
    ("-algorithm", "ed448"),
])
def test_non_ed25519_keys_refused(tmp_path: Path, args: tuple[str, ...]) -> None:
    key = tmp_path / "k.pem"
    openssl("genpkey", *args, "-out", key)
    key.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"not an Ed25519 private key|not a PKCS#8 Ed25519 key"):
        load_signer(key)
    pub = tmp_path / "k.pub"
    openssl("pkey", "-in", key, "-pubout", "-out", pub)
    with pytest.raises(KeyFileError, match=r"not an Ed25519 public key|not a SubjectPublicKeyInfo"):
        load_public(pub)
    with pytest.raises(KeyFileError):
        load_trust([pub])


# ----------------------------------------------------------------------------------------------------
# permissions, symlinks, odd files


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o610, 0o601, 0o666, 0o777])
def test_permissive_private_key_refused(keypair: KeyPair, mode: int) -> None:
    keypair.key.chmod(mode)
    with pytest.raises(KeyFileError, match="accessible by group or others") as info:
        load_signer(keypair.key)
    assert f"{mode:04o}" in str(info.value)
    assert "chmod 600" in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_private_key_accepted(keypair: KeyPair, mode: int) -> None:
    keypair.key.chmod(mode)
    assert load_signer(keypair.key).kid == keypair.kid


def test_symlinked_private_key_refused(keypair: KeyPair, tmp_path: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(keypair.key)
    assert load_signer(keypair.key).kid == keypair.kid  # the target itself is fine
    with pytest.raises(KeyFileError, match="cannot open key file"):
        load_signer(link)


def test_symlinked_public_key_refused(keypair: KeyPair, tmp_path: Path) -> None:
    link = tmp_path / "link.pub"
    link.symlink_to(keypair.pub)
    with pytest.raises(KeyFileError, match="cannot open key file"):
        load_public(link)


def test_missing_and_non_regular_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="key file not found"):
        load_signer(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match="key file not found"):
        load_public(tmp_path / "nope.pub")
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_signer(directory)


def test_fifo_at_key_path_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            load_signer(fifo)
        except KeyFileError as exc:
            errors.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "opening a FIFO key path blocked"
    assert len(errors) == 1 and "not a regular file" in str(errors[0])


def test_garbage_and_oversized_key_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="cannot load private key"):
        load_signer(junk)
    der = tmp_path / "junk.der"
    der.write_bytes(b"\x30\x03\x02\x01\x00")
    der.chmod(0o600)
    with pytest.raises(KeyFileError, match="cannot load private key"):
        load_signer(der)
    big = tmp_path / "big.pub"
    big.write_bytes(b"-" * (64 * 1024 + 1))
    with pytest.raises(KeyFileError, match="too large"):
        load_public(big)
    bad_pub = tmp_path / "bad.pub"
    bad_pub.write_bytes(b"hello")
    with pytest.raises(KeyFileError, match="not a SubjectPublicKeyInfo"):
        load_public(bad_pub)


def test_private_key_given_as_public_key_refused(keypair: KeyPair) -> None:
    with pytest.raises(KeyFileError):
        load_public(keypair.key)


def test_der_private_key_loads(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "k.der"
    path.write_bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    assert load_signer(path).kid == public_key_id(key.public_key())


# ----------------------------------------------------------------------------------------------------
# trust roots


def test_load_trust_from_directory_and_files(keypair: KeyPair, other_keypair: KeyPair, tmp_path: Path) -> None:
    trusted = load_trust([keypair.key.parent])
    assert set(trusted) == {keypair.kid}
    both = load_trust([keypair.pub, other_keypair.pub])
    assert set(both) == {keypair.kid, other_keypair.kid}
    assert public_key_id(both[other_keypair.kid]) == other_keypair.kid


def test_load_trust_directory_ignores_non_pub_files(keypair: KeyPair, tmp_path: Path) -> None:
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    (trust_dir / "a.pub").write_bytes(keypair.pub.read_bytes())
    (trust_dir / "notes.txt").write_text("not a key")
    (trust_dir / "sub.pub").mkdir()  # a directory named *.pub is not a key file
    assert set(load_trust([trust_dir])) == {keypair.kid}


def test_load_trust_of_directory_without_pub_fails(tmp_path: Path, keypair: KeyPair) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match=r"no \*\.pub trusted keys"):
        load_trust([empty])
    (empty / "signer.key").write_bytes(keypair.key.read_bytes())
    (empty / "README").write_text("x")
    with pytest.raises(KeyFileError, match=r"no \*\.pub trusted keys"):
        load_trust([empty])


def test_load_trust_requires_a_path_and_loadable_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no trusted key given"):
        load_trust([])
    with pytest.raises(KeyFileError, match="not found"):
        load_trust([tmp_path / "missing.pub"])
    trust_dir = tmp_path / "t"
    trust_dir.mkdir()
    (trust_dir / "bad.pub").write_text("garbage")
    with pytest.raises(KeyFileError, match=r"bad\.pub"):
        load_trust([trust_dir])


# ----------------------------------------------------------------------------------------------------
# repr, development key


def test_signer_repr_contains_no_key_material(keypair: KeyPair) -> None:
    signer = load_signer(keypair.key)
    raw_private = signer.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                   serialization.NoEncryption())
    pem_body = b"".join(keypair.key.read_bytes().splitlines()[1:-1]).decode()
    for text in (repr(signer), str(signer), f"{signer!r}", repr([signer])):
        assert keypair.kid.hex() in text
        assert raw_private.hex() not in text and raw_private.hex().upper() not in text
        assert base64.b64encode(raw_private).decode() not in text
        assert pem_body not in text and pem_body[:16] not in text
        assert "private_key" not in text and "Ed25519PrivateKey" not in text


def test_dev_key_created_once(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    path, created = ensure_dev_key(environ)
    assert path == tmp_path / "xdg" / "asl-capture" / "dev.key" == dev_key_path(environ)
    assert created is not None and load_signer(path).kid == created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_dev_key(environ)
    assert (again, created_again) == (path, None)
    assert load_signer(path).kid == created  # not replaced
    assert dev_key_path({"HOME": str(tmp_path / "home")}) == tmp_path / "home" / ".config" / "asl-capture" / "dev.key"
