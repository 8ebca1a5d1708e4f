"""Issue 23: no build step decides what the record says; the key holder owns the chain.

Each attack is a real run: an outer ``asl-capture`` whose command is a hostile build script. The
steps run as root here (``ASL_CAPTURE_USER=root``, as ``--as-root``), so they *can* write the
provenance directory: what is tested is that the key holder notices, restores and fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from asl_capture import chain
from tests.conftest import KeyPair, cli
from tests.integration.records import read_records

NESTED = '"$PY" -m asl_capture.cli.capture'
FAILED_TESTS = f"{NESTED} --step tests -- sh -c 'echo \"3 tests FAILED\"; exit 1' || true\n"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _build(cli_env: dict[str, str], work: Path, script: str) -> tuple[int, str]:
    result = cli("asl-capture", "--step", "build", "--", "sh", "-c", script, env={**cli_env, "PY": sys.executable},
                 cwd=work)
    return result.returncode, result.stderr.decode()


def _verify(cli_env: dict[str, str], keypair: KeyPair) -> tuple[int, str]:
    result = cli("asl-verify", "chain", cli_env["ASL_CAPTURE_DIR"], "--trust", keypair.pub, env=cli_env)
    return result.returncode, result.stdout.decode() + result.stderr.decode()


def _assert_restored(cli_env: dict[str, str], keypair: KeyPair, steps: list[str], what: str) -> None:
    """The chain holds every record of the build, the outer one failed naming ``what``, and the
    verdict is not VERIFIED; the altered copy is kept."""
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    records = read_records(prov, keypair.pub)
    assert [r.step for r in records] == steps
    outer = records[-1]
    assert outer.status == "failed" and isinstance(outer.error, str)
    assert what in outer.error and "restored from the key holder's copy" in outer.error, outer.error
    assert sorted(p.name for p in prov.glob("altered-*")), "the altered chain was not kept"
    code, out = _verify(cli_env, keypair)
    assert code == 1 and "VERIFIED" not in out.replace("NOT VERIFIED", ""), out


def test_a_step_that_wipes_the_chain_fails_the_build_and_loses_nothing(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    script = (FAILED_TESTS +
              f"{NESTED} --step innocent -- sh -c ': > \"$ASL_CAPTURE_DIR/chain.cbor\"; "
              f"rm -f \"$ASL_CAPTURE_DIR/checkpoint.cose\" \"$ASL_CAPTURE_DIR/head\"'\n")
    code, err = _build(cli_env, work, script)
    assert code == 125, err
    assert "chain.cbor was cut to 0 of its" in err and "(recorded as seq 2, status failed)" in err
    _assert_restored(cli_env, keypair, ["tests", "innocent", "build"], "chain.cbor was cut to 0 of its")
    records = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)
    assert records[0].status == "failed"  # the failed step is still there


def test_a_step_that_cuts_the_chain_to_its_first_record_is_caught_at_the_end(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    cut = ("import sys; from asl_capture import chain; from pathlib import Path; "
           "p = Path(sys.argv[1]) / 'chain.cbor'; first = chain.read(p).items[0]; "
           "p.write_bytes(first.raw)")
    script = (f"{NESTED} --step one -- true\n{NESTED} --step two -- true\n{NESTED} --step three -- true\n"
              f"\"$PY\" -c \"{cut}\" \"$ASL_CAPTURE_DIR\"\n")  # not under capture: the outer must still see it
    code, err = _build(cli_env, work, script)
    assert code == 125, err
    _assert_restored(cli_env, keypair, ["one", "two", "three", "build"], "chain.cbor was cut to")
    assert "records seq 1-2 affected" in err


def test_a_step_that_rewrites_an_earlier_record_is_caught(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    flip = ("import sys; from pathlib import Path; p = Path(sys.argv[1]) / 'chain.cbor'; "
            "d = bytearray(p.read_bytes()); d[200] ^= 1; p.write_bytes(bytes(d))")
    script = FAILED_TESTS + f"\"$PY\" -c \"{flip}\" \"$ASL_CAPTURE_DIR\"\n{NESTED} --step after -- true\n"
    code, err = _build(cli_env, work, script)
    assert code == 125, err
    _assert_restored(cli_env, keypair, ["tests", "after", "build"], "chain.cbor was rewritten from byte 200 on")


def test_a_chain_replaced_by_a_symlink_is_put_back(cli_env: dict[str, str], keypair: KeyPair, work: Path,
                                                   tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    script = (f"{NESTED} --step one -- true\n"
              f"rm \"$ASL_CAPTURE_DIR/chain.cbor\"; ln -s {tmp_path / 'empty'} \"$ASL_CAPTURE_DIR/chain.cbor\"\n")
    code, err = _build(cli_env, work, script)
    assert code == 125, err
    _assert_restored(cli_env, keypair, ["one", "build"], "chain.cbor was replaced")
    assert not Path(cli_env["ASL_CAPTURE_DIR"], "chain.cbor").is_symlink()


def test_a_step_cannot_get_a_forged_record_or_checkpoint_signed(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, tmp_path: Path) -> None:
    """Cut the chain and ask the agent for a forged copy of an earlier record (failed turned ok) and a
    checkpoint for it, then for records at a chosen seq, with a repeated id and a random parent."""
    out = tmp_path / "attack.txt"
    attack = tmp_path / "attack.py"
    attack.write_text(f"""
import os, struct, sys
from pathlib import Path
from asl_capture import agent, chain, dcbor
from asl_capture.errors import AgentError
from asl_capture.format import StepRecord
prov = Path(os.environ["ASL_CAPTURE_DIR"])
items = chain.read(prov / "chain.cbor").items
from asl_capture import cose
first = StepRecord.from_cbor(cose.parse(items[0].value).payload)
forged = first.__class__(**{{**{{f: getattr(first, f) for f in first.__slots__}}, "status": "ok", "exit": 0}})
(prov / "chain.cbor").write_bytes(b"")
path = os.environ["ASL_CAPTURE_AGENT"]
results = []
for request in ({{"op": "sign", "type": "application/vnd.asl.step+cbor", "payload": forged.to_cbor()}},
                {{"op": "sign", "type": "application/vnd.asl.checkpoint+cbor", "payload": b"x"}}):
    try:
        agent._call(path, request); results.append("signed")
    except AgentError as exc:
        results.append("refused: " + str(exc))
client = agent.connect(path)
parent = bytes.fromhex(os.environ["ASL_CAPTURE_PARENT"])
for record in (forged, forged.__class__(**{{**{{f: getattr(forged, f) for f in forged.__slots__}},
                                           "id": os.urandom(16)}})):
    try:
        client.append(record); results.append("appended")
    except AgentError as exc:
        results.append("refused: " + str(exc))
try:
    client.begin(os.urandom(16)); results.append("begun")
except AgentError as exc:
    results.append("refused: " + str(exc))
Path({str(out)!r}).write_text("\\n".join(results))
""")
    script = FAILED_TESTS + f"\"$PY\" {attack}\n"
    code, err = _build(cli_env, work, script)
    assert code == 125, err
    results = out.read_text().splitlines()
    assert len(results) == 5 and all(r.startswith("refused: ") for r in results), results
    assert "unknown request 'sign'" in results[0] and "unknown request 'sign'" in results[1]
    assert "still running" in results[2] and "still running" in results[3]  # first's id, then a random one
    assert "not a capture of this build that is still running" in results[4]
    _assert_restored(cli_env, keypair, ["tests", "build"], "chain.cbor was cut to 0 of its")
    records = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)
    assert records[0].status == "failed"


def test_a_nested_capture_with_its_own_key_cannot_write_the_holders_chain(
        cli_env: dict[str, str], keypair: KeyPair, other_keypair: KeyPair, work: Path) -> None:
    code, err = _build(cli_env, work, f"{NESTED} --key {other_keypair.key} --step mine -- true; echo rc=$? >&2\n")
    assert code == 0, err
    assert "rc=2" in err and "the enclosing capture holds this chain" in err
    assert [r.step for r in read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)] == ["build"]


def test_a_nested_capture_killed_before_its_record_fails_the_build(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    script = f"{NESTED} --step victim -- sh -c 'kill -9 $PPID; sleep 5' ; true\n"
    code, err = _build(cli_env, work, script)
    assert code == 125, err
    records = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)
    assert [r.step for r in records] == ["build"]
    assert isinstance(records[0].error, str) and "began but appended no record" in records[0].error


@pytest.mark.slow
def test_200_concurrent_nested_captures_are_all_recorded(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    script = f'for i in $(seq 200); do {NESTED} --step "n$i" -- true & done; wait\n'
    code, err = _build(cli_env, work, script)
    assert code == 0, err
    records = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)
    assert sorted(r.step for r in records[:-1]) == sorted(f"n{i}" for i in range(1, 201))
    assert all(r.parent == records[-1].id and r.status == "ok" for r in records[:-1])
    assert len({r.id for r in records}) == 201
    vcode, out = _verify(cli_env, keypair)
    assert vcode == 0, out
    assert chain.read(Path(cli_env["ASL_CAPTURE_DIR"]) / "chain.cbor").torn is None


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="runs its recipes as the build user")
def test_make_j8_of_zlib_with_every_recipe_under_capture(cli_env: dict[str, str], keypair: KeyPair) -> None:
    """A real third-party build, make -j8, each recipe a nested capture of its own, as the build user."""
    from asl_capture import builduser
    from tests.integration import thirdparty

    shared = Path(tempfile.mkdtemp(prefix="asl-make-test-"))
    try:
        os.chmod(shared, 0o755)
        tree = thirdparty.unpack(shared)
        user = builduser.resolve(builduser.DEFAULT_USER)
        subprocess.run(["./configure"], cwd=tree, check=True, capture_output=True, timeout=300)
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(tree)], check=True)
        wrapper = shared / "recipe-shell"
        wrapper.write_text('#!/bin/sh\nexec asl-capture --step recipe -i Makefile -- /bin/sh "$@"\n')
        wrapper.chmod(0o755)
        env = {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_USER"}
        env["ASL_CAPTURE_DIR"] = str(shared / "prov")
        result = cli("asl-capture", "--step", "make", "--", "make", "-j8", f"SHELL={wrapper}", "libz.a", "example",
                     "minigzip", env=env, cwd=tree, timeout=900)
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        records = read_records(shared / "prov", keypair.pub)
        nested = records[:-1]
        assert len(nested) >= 20 and all(r.step == "recipe" and r.status == "ok" for r in nested)
        assert all(r.parent == records[-1].id for r in nested)
        assert records[-1].user is not None and records[-1].user.name == builduser.DEFAULT_USER
        assert (tree / "libz.a").stat().st_uid == user.uid
        code, out = _verify({**cli_env, "ASL_CAPTURE_DIR": str(shared / "prov")}, keypair)
        assert code == 0, out
    finally:
        shutil.rmtree(shared, ignore_errors=True)
