"""asl-verify chain against real chains, and against every kind of tampering the issue lists."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from asl_capture import chain
from asl_capture.cli.verify import cli as verify_cli
from asl_capture.keys import generate
from tests.conftest import AS_ROOT, KeyPair, cli
from tests.integration.records import assert_one_line_error, read_records


@dataclass(frozen=True)
class Chain:
    prov: Path
    key: KeyPair
    other: KeyPair
    env: dict[str, str]
    work: Path


def _small_env(tmp: Path, key: Path, prov: Path) -> dict[str, str]:
    """A minimal environment, so records stay small and the every-byte test stays fast."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "xdg"),
            "ASL_CAPTURE_KEY": str(key), "ASL_CAPTURE_DIR": str(prov), "PY": sys.executable, "LANG": "C.UTF-8",
            **AS_ROOT}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Four records: a plain step, two inner steps of a session, and the session's own record (last)."""
    tmp = tmp_path_factory.mktemp("chain")
    key, pub, kid = generate("signer", directory=tmp / "keys")
    okey, opub, okid = generate("other", directory=tmp / "other-keys")
    work = tmp / "work"
    work.mkdir()
    prov = tmp / "prov"
    env = _small_env(tmp, key, prov)
    assert cli("asl-capture", "--step", "first", "--", "sh", "-c", "echo one", env=env, cwd=work).returncode == 0
    inner = ('"$PY" -m asl_capture.cli.capture --step inner-a -- true && '
             '"$PY" -m asl_capture.cli.capture --step inner-b -- sh -c "echo two >&2"')
    result = cli("asl-capture", "--step", "outer", "--", "sh", "-c", inner, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    records = read_records(prov, pub)
    assert [r.step for r in records] == ["first", "inner-a", "inner-b", "outer"]
    return Chain(prov=prov, key=KeyPair(key, pub, kid), other=KeyPair(okey, opub, okid), env=env, work=work)


@pytest.fixture
def copy(built: Chain, tmp_path: Path) -> Path:
    """A private copy of the provenance directory to tamper with."""
    target = tmp_path / "prov"
    shutil.copytree(built.prov, target)
    return target


def invoke(prov: Path, *trust: Path, json_out: bool = False) -> Result:
    args = ["chain", str(prov), *(a for t in trust for a in ("--trust", str(t)))]
    return CliRunner().invoke(verify_cli, args + (["--json"] if json_out else []))


def assert_fails(result: Result, check: str | None = None, code: int = 1) -> None:
    """Non-zero by a clean exit (no traceback) with a one-line ``ClassName: message`` on stderr."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert_one_line_error(result.stderr.encode())
    if check is not None:
        assert f"[{check}]" in result.stderr, result.stderr


def write_items(prov: Path, items: list[bytes]) -> None:
    (prov / "chain.cbor").write_bytes(b"".join(items))


def items_of(prov: Path) -> list[bytes]:
    scan = chain.read(prov / "chain.cbor")
    assert scan.torn is None
    return [i.raw for i in scan.items]


# --- the good chain -------------------------------------------------------------------------------------


def test_good_chain_verifies(built: Chain, copy: Path) -> None:
    result = invoke(copy, built.key.pub)
    assert result.exit_code == 0, result.output
    assert "VERIFIED: 4 records" in result.output
    for n, name in enumerate(("decode", "signature", "payload", "linkage", "objects", "status"), start=1):
        assert f"{n}. {name}" in result.output
    report = json.loads(invoke(copy, built.key.pub, json_out=True).output)
    assert report["verdict"] == "verified" and report["records"] == 4 and report["error"] is None
    assert report["keys"] == [built.key.kid.hex()]
    assert [s["step"] for s in report["steps"]] == ["first", "outer"]
    assert [c["step"] for c in report["steps"][1]["children"]] == ["inner-a", "inner-b"]


def test_failed_step_fails_the_status_check(built: Chain, copy: Path) -> None:
    env = {**built.env, "ASL_CAPTURE_DIR": str(copy)}
    assert cli("asl-capture", "--", "sh", "-c", "exit 7", env=env, cwd=built.work).returncode == 7
    result = cli("asl-verify", "chain", copy, "--trust", built.key.pub, env=env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "VerificationError")
    assert b"[status] record 4" in result.stderr and b"exit 7" in result.stderr
    assert b"6. status    FAIL" in result.stdout
    report = json.loads(cli("asl-verify", "chain", copy, "--trust", built.key.pub, "--json", env=env).stdout)
    assert report["verdict"] == "failed"
    assert (report["error"]["check"], report["error"]["record"]) == ("status", 4)


# --- every single byte ----------------------------------------------------------------------------------


def test_flipping_any_single_byte_fails_verification(built: Chain, copy: Path) -> None:
    original = (copy / "chain.cbor").read_bytes()
    (copy / "head").unlink(missing_ok=True)
    assert invoke(copy, built.key.pub).exit_code == 0
    survivors = []
    checks: dict[str, int] = {}
    for mask in (0xFF, 0x01):
        for pos in range(len(original)):
            tampered = bytearray(original)
            tampered[pos] ^= mask
            (copy / "chain.cbor").write_bytes(tampered)
            result = invoke(copy, built.key.pub)
            if result.exit_code == 0 or not isinstance(result.exception, SystemExit):
                survivors.append((pos, mask, result.exit_code, repr(result.exception)))
                continue
            assert_fails(result)
            check = result.stderr.split("[", 1)[1].split("]", 1)[0]
            checks[check] = checks.get(check, 0) + 1
    assert survivors == []
    assert {"decode", "signature"} <= set(checks)  # both the structure and the signature are exercised


def test_flipped_bytes_spot_checked_with_real_subprocesses(built: Chain, copy: Path) -> None:
    original = (copy / "chain.cbor").read_bytes()
    rng = random.Random(2)
    positions = [0, 1, len(original) - 1, *rng.sample(range(2, len(original) - 1), 17)]
    for pos in positions:
        tampered = bytearray(original)
        tampered[pos] ^= 0xFF
        (copy / "chain.cbor").write_bytes(tampered)
        result = cli("asl-verify", "chain", copy, "--trust", built.key.pub, env=built.env)
        assert result.returncode == 1, (pos, result.stdout, result.stderr)
        assert_one_line_error(result.stderr, "VerificationError")
        assert b"FAIL" in result.stdout


# --- whole records --------------------------------------------------------------------------------------


def test_removing_any_record_fails(built: Chain, copy: Path) -> None:
    items = items_of(copy)
    for index in range(len(items)):
        write_items(copy, items[:index] + items[index + 1:])
        result = invoke(copy, built.key.pub)
        # Removing the last record is caught by the signed checkpoint, which vouches for it.
        assert_fails(result, "linkage")
        if index == len(items) - 1:
            assert "records were removed from its end" in result.stderr


def test_cutting_independent_records_from_the_end_fails(cli_env: dict[str, str], keypair: KeyPair,
                                                       tmp_path: Path) -> None:
    """No nesting to betray it: only the signed checkpoint shows that finished records were cut off."""
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    for n in range(3):
        assert cli("asl-capture", "--step", f"s{n}", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    items = items_of(prov)
    for keep in (1, 2):
        write_items(prov, items[:keep])
        result = invoke(prov, keypair.pub)
        assert_fails(result, "linkage")
        assert f"vouches for seq 2 but the chain ends at seq {keep - 1}" in result.stderr
    missing = tmp_path / "no-checkpoint"
    shutil.copytree(prov, missing)
    write_items(missing, items)
    (missing / "checkpoint.cose").unlink()
    assert_fails(invoke(missing, keypair.pub), "linkage")
    write_items(prov, items)
    assert invoke(prov, keypair.pub).exit_code == 0


def test_duplicating_any_record_fails(built: Chain, copy: Path) -> None:
    items = items_of(copy)
    for index in range(len(items)):
        write_items(copy, items[:index + 1] + items[index:])
        assert_fails(invoke(copy, built.key.pub), "linkage")
    write_items(copy, [*items, items[0]])
    assert_fails(invoke(copy, built.key.pub), "linkage")


def test_swapping_any_two_records_fails(built: Chain, copy: Path) -> None:
    items = items_of(copy)
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            swapped = list(items)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            write_items(copy, swapped)
            assert_fails(invoke(copy, built.key.pub), "linkage")


def test_record_from_another_chain_fails(built: Chain, copy: Path, tmp_path: Path) -> None:
    other_prov = tmp_path / "other-prov"
    env = {**built.env, "ASL_CAPTURE_DIR": str(other_prov)}
    assert cli("asl-capture", "--step", "first", "--", "sh", "-c", "echo one", env=env, cwd=built.work).returncode == 0
    foreign = items_of(other_prov)[0]
    items = items_of(copy)
    write_items(copy, [foreign, *items[1:]])  # same key, seq 0, prev null: only the chain id differs
    result = invoke(copy, built.key.pub)
    assert_fails(result, "linkage")
    assert "chain id" in result.stderr


def test_record_signed_by_untrusted_key_fails(built: Chain, copy: Path) -> None:
    env = {**built.env, "ASL_CAPTURE_DIR": str(copy)}
    appended = cli("asl-capture", "--key", built.other.key, "--", "true", env=env, cwd=built.work)
    assert appended.returncode == 0, appended.stderr
    result = invoke(copy, built.key.pub)
    assert_fails(result, "signature")
    assert "record 4" in result.stderr and built.other.kid.hex() in result.stderr
    sub = cli("asl-verify", "chain", copy, "--trust", built.key.pub, env=env)
    assert sub.returncode == 1
    assert_one_line_error(sub.stderr, "VerificationError")
    # trusting only the other key fails at the first record; trusting both verifies
    assert_fails(invoke(copy, built.other.pub), "signature")
    assert invoke(copy, built.key.pub, built.other.pub).exit_code == 0


def test_kid_replaced_by_another_trusted_kid_fails(built: Chain, copy: Path) -> None:
    """Pointing a record at another (trusted) key id changes the signed header: the signature fails."""
    items = items_of(copy)
    assert items[1].count(built.key.kid) == 1
    forged = items[1].replace(built.key.kid, built.other.kid)
    write_items(copy, [items[0], forged, *items[2:]])
    assert_fails(invoke(copy, built.key.pub), "signature")
    result = invoke(copy, built.key.pub, built.other.pub)
    assert_fails(result, "signature")
    assert "record 1" in result.stderr and "does not verify" in result.stderr


# --- objects --------------------------------------------------------------------------------------------


def _objects(prov: Path) -> list[Path]:
    return sorted(p for p in (prov / "objects" / "sha256").rglob("*") if p.is_file() and not p.name.startswith("."))


def test_missing_object_fails(built: Chain, copy: Path) -> None:
    objects = _objects(copy)
    referenced = {o.parent.name + o.name for o in objects}
    records = read_records(copy, built.key.pub)
    digests = {d.hex() for r in records for d in (r.inputs.manifest, r.outputs.manifest, r.outputs.before,
                                                 r.outputs.changes, r.stdout.digest, r.stderr.digest)}
    assert digests <= referenced
    for path in objects:
        if path.parent.name + path.name not in digests:
            continue
        data = path.read_bytes()
        path.unlink()
        result = invoke(copy, built.key.pub)
        path.write_bytes(data)
        assert_fails(result, "objects")
        assert path.parent.name + path.name in result.stderr
    assert invoke(copy, built.key.pub).exit_code == 0


def test_swapped_object_fails(built: Chain, copy: Path) -> None:
    objects = _objects(copy)
    assert len(objects) >= 2
    first, second = objects[0], objects[1]
    first.chmod(0o644)
    first.write_bytes(second.read_bytes())
    result = invoke(copy, built.key.pub)
    assert_fails(result, "objects")
    assert "does not match" in result.stderr


def test_truncated_object_fails(built: Chain, copy: Path) -> None:
    records = read_records(copy, built.key.pub)
    digest = records[2].stderr.digest
    path = copy / "objects" / "sha256" / digest.hex()[:2] / digest.hex()[2:]
    assert path.read_bytes() == b"two\n"
    path.chmod(0o644)
    path.write_bytes(b"tw0\n")
    assert_fails(invoke(copy, built.key.pub), "objects")


# --- unreadable input and torn tails ----------------------------------------------------------------------


def test_empty_provenance_dir_is_exit_2(built: Chain, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("asl-verify", "chain", empty, "--trust", built.key.pub, env=built.env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "StoreError")


def test_empty_chain_file_fails_closed(built: Chain, copy: Path) -> None:
    (copy / "chain.cbor").write_bytes(b"")
    assert_fails(invoke(copy, built.key.pub), "decode")


def test_nonexistent_dir_is_exit_2(built: Chain, tmp_path: Path) -> None:
    result = cli("asl-verify", "chain", tmp_path / "nowhere", "--trust", built.key.pub, env=built.env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "StoreError")
    assert b"nowhere" in result.stderr


def test_missing_or_bad_trust_is_exit_2(built: Chain, copy: Path, tmp_path: Path) -> None:
    result = cli("asl-verify", "chain", copy, "--trust", tmp_path / "nope.pub", env=built.env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "KeyFileError")
    empty = tmp_path / "no-keys"
    empty.mkdir()
    result = cli("asl-verify", "chain", copy, "--trust", empty, env=built.env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "KeyFileError")
    result = cli("asl-verify", "chain", copy, "--trust", built.key.key, env=built.env)  # a private key
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "KeyFileError")


def test_directory_of_trusted_keys(built: Chain, copy: Path) -> None:
    result = cli("asl-verify", "chain", copy, "--trust", built.key.pub.parent, env=built.env)
    assert result.returncode == 0, result.stderr


def test_torn_tail_is_reported_by_offset(built: Chain, copy: Path) -> None:
    items = items_of(copy)
    last_offset = sum(len(i) for i in items[:-1])
    for keep in (1, len(items[-1]) // 2, len(items[-1]) - 1):
        write_items(copy, [*items[:-1], items[-1][:keep]])
        result = cli("asl-verify", "chain", copy, "--trust", built.key.pub, env=built.env)
        assert result.returncode == 1, result.stderr
        assert_one_line_error(result.stderr, "VerificationError")
        assert f"byte offset {last_offset}".encode() in result.stderr
        assert f"torn tail of {keep} bytes".encode() in result.stderr
        report = json.loads(cli("asl-verify", "chain", copy, "--trust", built.key.pub, "--json",
                                env=built.env).stdout)
        assert report["verdict"] == "failed" and report["error"]["check"] == "decode"


def test_garbage_appended_fails(built: Chain, copy: Path) -> None:
    items = items_of(copy)
    for junk in (b"\x00", b"\xff", b"\xd2\x84", b"hello", b"\xa0"):
        write_items(copy, [*items, junk])
        assert_fails(invoke(copy, built.key.pub))
