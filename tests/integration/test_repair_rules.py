"""Issue 13 items 1-3: repair never hides a record, never signs with a key that did not sign the
chain, and a tampered head cache cannot make a capture append a mis-linked record."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from asl_capture import chain, dcbor
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error, read_records


def _verify(prov: Path, pub: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return cli("asl-verify", "chain", prov, "--trust", pub, env=env)


def _three(cli_env: dict[str, str], tmp_path: Path) -> Path:
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    for n in range(3):
        assert cli("asl-capture", "--step", f"s{n}", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    return prov


@pytest.mark.parametrize("junk", [b"", b"\xd2\x84\x58\x46\x00"], ids=["clean-cut", "cut-plus-junk"])
def test_repair_refuses_to_hide_records_cut_from_the_end(cli_env: dict[str, str], keypair: KeyPair,
                                                          tmp_path: Path, junk: bytes) -> None:
    prov = _three(cli_env, tmp_path)
    items = chain.read(prov / "chain.cbor").items
    cut = (prov / "chain.cbor").read_bytes()[: items[1].offset] + junk
    (prov / "chain.cbor").write_bytes(cut)
    checkpoint = (prov / "checkpoint.cose").read_bytes()
    result = cli("asl-chain", "repair", prov, "--key", keypair.key, env=cli_env)
    assert result.returncode == 2, result.stdout
    assert_one_line_error(result.stderr, "ChainError")
    assert b"vouches for record seq 2" in result.stderr and b"refuses" in result.stderr
    assert (prov / "chain.cbor").read_bytes() == cut  # nothing removed
    assert (prov / "checkpoint.cose").read_bytes() == checkpoint  # nothing re-signed
    verify = _verify(prov, keypair.pub, cli_env)
    assert verify.returncode == 1
    assert_one_line_error(verify.stderr, "VerificationError")


def test_repair_refuses_to_remove_a_checkpointed_record_with_a_flipped_length_bit(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    prov = _three(cli_env, tmp_path)
    items = chain.read(prov / "chain.cbor").items
    data = bytearray((prov / "chain.cbor").read_bytes())
    # d2 84 58 46 <protected: 70 bytes> a0 59 <2-byte payload length>: a bit in that length
    assert data[items[2].offset + 74 : items[2].offset + 76] == b"\xa0\x59"
    data[items[2].offset + 76] |= 0x40
    (prov / "chain.cbor").write_bytes(data)
    assert chain.read(prov / "chain.cbor").torn is not None  # looks like a crash mid-append
    result = cli("asl-chain", "repair", prov, "--key", keypair.key, env=cli_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "ChainError")
    assert (prov / "chain.cbor").read_bytes() == data
    assert not list(prov.glob("torn-at-*"))


def test_repair_without_a_key_never_signs_and_a_later_repair_still_refuses(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    """Main used to re-sign the checkpoint with the development key when --key was left out."""
    prov = _three(cli_env, tmp_path)
    items = chain.read(prov / "chain.cbor").items
    (prov / "chain.cbor").write_bytes((prov / "chain.cbor").read_bytes()[: items[2].offset + 10])
    keyless = {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_KEY"}
    # a development key exists: it must not be used
    assert cli("asl-capture", "--provenance", tmp_path / "dev-prov", "--", "true", env=keyless,
               cwd=tmp_path).returncode == 0
    checkpoint = (prov / "checkpoint.cose").read_bytes()
    for env in (keyless, cli_env):
        result = cli("asl-chain", "repair", prov, env=env)
        assert result.returncode == 2, result.stdout
        assert b"refuses" in result.stderr
        assert (prov / "checkpoint.cose").read_bytes() == checkpoint


def test_repair_refuses_a_key_that_did_not_sign_the_chain(cli_env: dict[str, str], keypair: KeyPair,
                                                          other_keypair: KeyPair, tmp_path: Path) -> None:
    prov = _three(cli_env, tmp_path)
    older = (prov / "checkpoint.cose").read_bytes()
    assert cli("asl-capture", "--step", "s3", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    (prov / "checkpoint.cose").write_bytes(older)  # a crash mid-append of s3
    data = (prov / "chain.cbor").read_bytes()
    (prov / "chain.cbor").write_bytes(data[:-7])
    wrong = cli("asl-chain", "repair", prov, "--key", other_keypair.key, env=cli_env)
    assert wrong.returncode == 2
    assert_one_line_error(wrong.stderr, "ChainError")
    assert b"did not sign this chain" in wrong.stderr
    assert (prov / "chain.cbor").read_bytes() == data[:-7]
    right = cli("asl-chain", "repair", prov, "--key", keypair.key, env=cli_env)
    assert right.returncode == 0, right.stderr
    assert _verify(prov, keypair.pub, cli_env).returncode == 0


def test_a_head_cache_spanning_two_records_does_not_mislink_the_next_append(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    prov = _three(cli_env, tmp_path)
    items = chain.read(prov / "chain.cbor").items
    data = (prov / "chain.cbor").read_bytes()
    start = items[1].offset  # two whole records, digest made to match
    (prov / "head").write_bytes(dcbor.encode({"start": start, "end": len(data),
                                              "digest": hashlib.sha256(data[start:]).digest()}))
    assert cli("asl-capture", "--step", "s3", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    records = read_records(prov, keypair.pub)
    assert [r.seq for r in records] == [0, 1, 2, 3]
    assert records[3].prev == items[2].digest
    verify = _verify(prov, keypair.pub, cli_env)
    assert verify.returncode == 0, verify.stderr
