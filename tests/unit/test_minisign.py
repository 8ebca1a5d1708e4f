"""minisign files made here are what Debian's stock ``minisign`` reads, and the other way round."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from asl_capture import minisign
from asl_capture.cose import raw_public_bytes
from asl_capture.errors import VerificationError
from asl_capture.keys import Signer, load_signer
from tests.conftest import KeyPair

MINISIGN = shutil.which("minisign")
needs_minisign = pytest.mark.skipif(MINISIGN is None, reason="minisign not installed (pipeline/install-deps.sh)")


@pytest.fixture
def signer(keypair: KeyPair) -> Signer:
    return load_signer(keypair.key)


def stock_verify(data: Path, sig: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    assert MINISIGN is not None
    return subprocess.run([MINISIGN, "-Vm", str(data), "-x", str(sig), "-p", str(pub)], capture_output=True,
                          text=True, check=False)


@needs_minisign
def test_stock_minisign_accepts_ours_and_rejects_one_changed_byte(signer: Signer, tmp_path: Path) -> None:
    data = tmp_path / "SHA256SUMS"
    data.write_bytes(b"0" * 64 + b"  a.iso\n")
    sig, pub = tmp_path / "SHA256SUMS.minisig", tmp_path / "release.minisign.pub"
    sig.write_text(minisign.sign(data.read_bytes(), signer.private_key, trusted_comment="asl-release test 1.0.0"))
    pub.write_text(minisign.public_key_file(signer.public_raw()))
    ok = stock_verify(data, sig, pub)
    assert ok.returncode == 0, ok.stderr
    assert "Trusted comment: asl-release test 1.0.0" in ok.stdout
    assert base64.b64decode(sig.read_text().splitlines()[1])[:2] == b"ED"  # the prehashed algorithm
    for position in (0, 64, len(data.read_bytes()) - 1):
        changed = bytearray(data.read_bytes())
        changed[position] ^= 0x01
        bad = tmp_path / f"changed-{position}"
        bad.write_bytes(bytes(changed))
        assert stock_verify(bad, sig, pub).returncode != 0
        with pytest.raises(VerificationError, match="does not verify"):
            minisign.verify(bytes(changed), sig.read_text(), signer.public_raw())
    assert minisign.verify(data.read_bytes(), sig.read_text(), signer.public_raw()) == "asl-release test 1.0.0"


@needs_minisign
def test_changed_trusted_comment_is_rejected_by_both(signer: Signer, tmp_path: Path) -> None:
    data = tmp_path / "f"
    data.write_bytes(b"payload\n")
    lines = minisign.sign(data.read_bytes(), signer.private_key, trusted_comment="version 1.0.0").splitlines()
    lines[2] = "trusted comment: version 9.9.9"
    sig, pub = tmp_path / "f.minisig", tmp_path / "pub"
    sig.write_text("\n".join(lines) + "\n")
    pub.write_text(minisign.public_key_file(signer.public_raw()))
    assert stock_verify(data, sig, pub).returncode != 0
    with pytest.raises(VerificationError, match="trusted comment"):
        minisign.verify(data.read_bytes(), sig.read_text(), signer.public_raw())


@needs_minisign
def test_our_verifier_reads_what_stock_minisign_signs(tmp_path: Path) -> None:
    assert MINISIGN is not None
    pub, sec, data = tmp_path / "m.pub", tmp_path / "m.key", tmp_path / "data"
    subprocess.run([MINISIGN, "-G", "-W", "-p", str(pub), "-s", str(sec)], check=True, capture_output=True)
    data.write_bytes(b"hello\n")
    subprocess.run([MINISIGN, "-S", "-s", str(sec), "-m", str(data), "-t", "made by minisign"], check=True,
                   capture_output=True)
    mkid, public = minisign.parse_public_key_file(pub.read_text())
    sig = Path(f"{data}.minisig").read_text()
    assert minisign.verify(data.read_bytes(), sig, public, mkid=mkid) == "made by minisign"
    with pytest.raises(VerificationError, match="is by key"):  # the key id is checked
        minisign.verify(data.read_bytes(), sig, public)


def test_public_key_file_names_the_key(signer: Signer, other_keypair: KeyPair) -> None:
    text = minisign.public_key_file(signer.public_raw())
    first, _key = text.splitlines()
    mkid = minisign.minisign_key_id(signer.public_raw())
    assert first == f"untrusted comment: minisign public key {mkid[::-1].hex().upper()}"
    assert minisign.parse_public_key_file(text) == (mkid, signer.public_raw())
    assert mkid == signer.kid[:8]
    other = raw_public_bytes(load_signer(other_keypair.key).private_key.public_key())
    assert minisign.public_key_file(other) != text


@pytest.mark.parametrize("text", ["", "untrusted comment: x\n", "untrusted comment: x\n!!!\n",
                                  "untrusted comment: x\nRWQ=\n", "comment\nRWQ=\n"])
def test_malformed_public_key_files_are_refused(text: str) -> None:
    with pytest.raises(VerificationError):
        minisign.parse_public_key_file(text)


def test_malformed_signatures_are_refused(signer: Signer) -> None:
    good = minisign.sign(b"x", signer.private_key, trusted_comment="t").splitlines()
    cases = ["", "\n".join(good[:2]), "\n".join([good[0], "!!", good[2], good[3]]),
             "\n".join([good[0], good[1], "comment: t", good[3]])]
    legacy = bytearray(base64.b64decode(good[1]))
    legacy[:2] = b"Ed"
    cases.append("\n".join([good[0], base64.b64encode(bytes(legacy)).decode(), good[2], good[3]]))
    for text in cases:
        with pytest.raises(VerificationError):
            minisign.verify(b"x", text + "\n", signer.public_raw())


def test_comments_must_be_one_line(signer: Signer) -> None:
    with pytest.raises(ValueError, match="one line"):
        minisign.sign(b"x", signer.private_key, trusted_comment="a\nb")
