"""Crashes while appending: kill -9 at random moments, torn tails, and the explicit repair command."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path

from asl_capture import chain
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error, read_records

CAPTURE = [sys.executable, "-m", "asl_capture.cli.capture"]


def _verify(prov: Path, pub: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return cli("asl-verify", "chain", prov, "--trust", pub, env=env)


def _repair_torn_tail(prov: Path, pub: Path, env: dict[str, str], work: Path) -> int:
    """With a torn tail present: verify names it by offset, appends refuse, repair truncates exactly it."""
    scan = chain.read(prov / "chain.cbor")
    assert scan.torn is not None
    offset, length = scan.torn
    whole = (prov / "chain.cbor").read_bytes()[:offset]

    verify = _verify(prov, pub, env)
    assert verify.returncode == 1, verify.stderr
    assert_one_line_error(verify.stderr, "VerificationError")
    assert f"byte offset {offset}".encode() in verify.stderr and b"torn tail" in verify.stderr

    mark = work / "MARK"
    refused = cli("asl-capture", "--", "touch", mark, env=env, cwd=work)
    assert refused.returncode == 2, refused.stderr
    assert_one_line_error(refused.stderr, "TornTailError")
    assert f"byte offset {offset}".encode() in refused.stderr and b"asl-chain repair" in refused.stderr
    assert not mark.exists()

    repaired = cli("asl-chain", "repair", prov, env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert re.search(rb"truncated %d torn byte\(s\) at offset %d" % (length, offset), repaired.stdout), repaired.stdout
    assert (prov / "chain.cbor").read_bytes() == whole  # whole records untouched
    assert (prov / f"torn-at-{offset}.bin").stat().st_size == length  # and the torn bytes kept aside
    (prov / f"torn-at-{offset}.bin").unlink()
    again = _verify(prov, pub, env)
    assert again.returncode == 0, again.stderr
    return length


def test_kill_9_at_random_moments_never_loses_the_chain(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    start = time.monotonic()
    assert cli("asl-capture", "--", "true", env=cli_env, cwd=work).returncode == 0
    full = time.monotonic() - start  # how long one whole capture takes here: kills land across all of it
    rng = random.Random(0xA51)
    completed = killed = 0
    before = (prov / "chain.cbor").read_bytes()
    for _ in range(50):
        proc = subprocess.Popen([*CAPTURE, "--", "sh", "-c", "echo x"], env=cli_env, cwd=work,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 1.3 * full))
        proc.kill()
        code = proc.wait()
        if code == 0:
            completed += 1
        else:
            assert code == -9
            killed += 1
        after = (prov / "chain.cbor").read_bytes()
        assert after.startswith(before), "an append changed bytes already in the chain"
        verify = _verify(prov, keypair.pub, cli_env)
        if verify.returncode != 0:
            _repair_torn_tail(prov, keypair.pub, cli_env, work)
        before = (prov / "chain.cbor").read_bytes()
    assert completed >= 3 and killed >= 10, (completed, killed)
    records = read_records(prov, keypair.pub)
    assert [r.seq for r in records] == list(range(len(records)))
    assert 1 + completed <= len(records) <= 51
    assert all(r.status == "ok" for r in records)
    final = cli("asl-capture", "--", "true", env=cli_env, cwd=work)
    assert final.returncode == 0, final.stderr
    assert _verify(prov, keypair.pub, cli_env).returncode == 0


def test_torn_tail_blocks_appends_until_repaired(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    for n in range(3):
        if n == 2:
            checkpoint = (prov / "checkpoint.cose").read_bytes()
        assert cli("asl-capture", "--step", f"s{n}", "--", "true", env=cli_env, cwd=work).returncode == 0
    # a crash while record 2 was being appended: its checkpoint was never written
    (prov / "checkpoint.cose").write_bytes(checkpoint)
    items = chain.read(prov / "chain.cbor").items
    data = (prov / "chain.cbor").read_bytes()
    for cut in (items[2].offset + 1, items[2].offset + len(items[2].raw) // 2, len(data) - 1):
        (prov / "chain.cbor").write_bytes(data[:cut])
        removed = _repair_torn_tail(prov, keypair.pub, cli_env, work)
        assert removed == cut - items[2].offset
        assert [r.step for r in read_records(prov, keypair.pub)] == ["s0", "s1"]
        (prov / "chain.cbor").write_bytes(data)
    # after a repair, appends work again and the chain continues from the last whole record
    (prov / "chain.cbor").write_bytes(data[:items[2].offset + 100])
    _repair_torn_tail(prov, keypair.pub, cli_env, work)
    assert cli("asl-capture", "--step", "again", "--", "true", env=cli_env, cwd=work).returncode == 0
    records = read_records(prov, keypair.pub)
    assert [(r.seq, r.step) for r in records] == [(0, "s0"), (1, "s1"), (2, "again")]
    assert _verify(prov, keypair.pub, cli_env).returncode == 0


def test_repair_with_nothing_to_repair_changes_nothing(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    assert cli("asl-capture", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    data = (prov / "chain.cbor").read_bytes()
    result = cli("asl-chain", "repair", prov, env=cli_env)
    assert result.returncode == 0
    assert b"nothing to repair" in result.stdout
    assert (prov / "chain.cbor").read_bytes() == data
    missing = cli("asl-chain", "repair", tmp_path / "nowhere", env=cli_env)
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "StoreError")


def test_repair_refuses_corruption_before_whole_records(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    """A damaged length in a middle record looks like a long torn tail; repair must not cut the records after it."""
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    for _ in range(3):
        assert cli("asl-capture", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    items = chain.read(prov / "chain.cbor").items
    data = bytearray((prov / "chain.cbor").read_bytes())
    # record 1's payload is a byte string with a 2-byte length (0x59); make it claim a 4-byte length
    header = data.index(b"\x59", items[1].offset + 4 + 0x46)
    assert header < items[1].offset + 80
    data[header] = 0x5A
    (prov / "chain.cbor").write_bytes(data)
    result = cli("asl-chain", "repair", prov, env=cli_env)
    assert result.returncode == 2, result.stdout
    assert_one_line_error(result.stderr, "ChainError")
    assert (prov / "chain.cbor").read_bytes() == data
    verify = _verify(prov, keypair.pub, cli_env)
    assert verify.returncode == 1
    assert_one_line_error(verify.stderr, "VerificationError")
    assert f"byte offset {items[1].offset}".encode() in verify.stderr
    assert b"torn" not in verify.stderr  # not misreported as an interrupted append


def test_crash_between_record_and_checkpoint_still_verifies(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    """A crash after the record is durable but before its checkpoint: the older checkpoint still holds."""
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    assert cli("asl-capture", "--step", "a", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    older = (prov / "checkpoint.cose").read_bytes()
    assert cli("asl-capture", "--step", "b", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    (prov / "checkpoint.cose").write_bytes(older)
    result = _verify(prov, keypair.pub, cli_env)
    assert result.returncode == 0, result.stderr
    assert b"signed checkpoint at seq 0 (1 later record(s) appended after it)" in result.stdout
