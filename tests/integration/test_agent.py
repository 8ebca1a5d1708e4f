"""Nested captures sign through the outer capture's agent; no step can walk away with the key (issue 10)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_capture import chain, cose, dcbor
from asl_capture.format import StepRecord
from asl_capture.keys import generate
from asl_capture.verify import verify_chain
from tests.conftest import NOBODY, KeyPair, cli, unprivileged_python
from tests.integration.records import assert_one_line_error, read_records

NESTED = '"$PY" -m asl_capture.cli.capture'


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "PY": sys.executable}


def test_key_file_deleted_right_after_outer_starts_nested_steps_still_append(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    script = (f'rm -f "{keypair.key}"; test ! -e "{keypair.key}" || exit 9\n'
              f'for s in a b c; do {NESTED} --step "$s" -- sh -c "echo inner $s" || exit 8; done\n')
    result = cli("asl-capture", "--step", "outer", "--", "sh", "-c", script, env=_env(cli_env), cwd=work)
    assert result.returncode == 0, result.stderr
    assert not keypair.key.exists()
    records = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)
    assert [r.step for r in records] == ["a", "b", "c", "outer"]
    assert all(r.status == "ok" and r.parent == records[-1].id for r in records[:3])
    verify = cli("asl-verify", "chain", cli_env["ASL_CAPTURE_DIR"], "--trust", keypair.pub, env=cli_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_no_step_environment_holds_a_key_path_or_passphrase(
        cli_env: dict[str, str], tmp_path: Path, work: Path) -> None:
    passphrase = "correct horse battery staple"
    key, pub, _kid = generate("enc", directory=tmp_path / "enc", passphrase=passphrase.encode())
    pass_file = tmp_path / "pass.txt"
    pass_file.write_text(passphrase + "\n")
    env = {**_env(cli_env), "ASL_CAPTURE_KEY": str(key), "ASL_CAPTURE_PASSPHRASE_FILE": str(pass_file),
           "ASL_KEY_PASSPHRASE": passphrase}
    dumps = tmp_path / "envs"
    dumps.mkdir()
    script = (f'env > "{dumps}/outer.env"\n'
              f'{NESTED} --step inner -- sh -c \'env > "{dumps}/inner.env"; '
              f'{NESTED} --step innermost -- sh -c "env > {dumps}/innermost.env"\'\n')
    result = cli("asl-capture", "--step", "outer", "--", "sh", "-c", script, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    secrets = (str(key), str(pass_file), passphrase, key.name)
    for name in ("outer", "inner", "innermost"):
        text = (dumps / f"{name}.env").read_text()
        assert "ASL_CAPTURE_AGENT=" in text, name  # it could sign: through the agent
        for secret in secrets:
            assert secret not in text, (name, secret)
        for var in ("ASL_CAPTURE_KEY", "ASL_CAPTURE_PASSPHRASE_FILE", "ASL_KEY_PASSPHRASE"):
            assert f"{var}=" not in text, (name, var)
    records = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), pub)
    assert [r.step for r in records] == ["innermost", "inner", "outer"]
    for record in records[:2]:  # what the nested steps saw is what their records say
        env_names = set(record.env)
        assert not env_names & {"ASL_CAPTURE_KEY", "ASL_CAPTURE_PASSPHRASE_FILE", "ASL_KEY_PASSPHRASE"}


def test_nothing_can_be_signed_after_the_outer_capture_ends(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, tmp_path: Path) -> None:
    saved, late = tmp_path / "agent-path", tmp_path / "late"
    # the step leaves a process behind that tries to sign once the build is over
    script = (f'echo "$ASL_CAPTURE_AGENT" > "{saved}"\n'
              f'(sleep 2; {NESTED} --step late -- true > "{late}.out" 2> "{late}.err"; echo $? > "{late}.rc") '
              f'< /dev/null > /dev/null 2>&1 &\n')
    result = cli("asl-capture", "--step", "outer", "--", "sh", "-c", script, env=_env(cli_env), cwd=work)
    assert result.returncode == 0, result.stderr
    agent_path = saved.read_text().strip()
    assert agent_path and not os.path.exists(agent_path) and not os.path.exists(os.path.dirname(agent_path))
    deadline = time.monotonic() + 60
    while not (late.with_suffix(".rc")).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (late.with_suffix(".rc")).read_text().strip() == "2"
    err = Path(f"{late}.err").read_bytes()
    assert_one_line_error(err, "AgentError")
    assert b"is gone: the enclosing capture has ended" in err
    # and directly, with the socket path a step saw
    direct = cli("asl-capture", "--step", "direct", "--", "true", env={**cli_env, "ASL_CAPTURE_AGENT": agent_path},
                 cwd=work)
    assert direct.returncode == 2
    assert_one_line_error(direct.stderr, "AgentError")
    assert [r.step for r in read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)] == ["outer"]


def test_nested_capture_cannot_sign_for_another_chain(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-prov"
    script = f'{NESTED} --provenance "{other}" --step sneaky -- true; echo "rc=$?"'
    result = cli("asl-capture", "--step", "outer", "--", "sh", "-c", script, env=_env(cli_env), cwd=work)
    assert result.returncode == 0, result.stderr
    assert b"rc=2" in result.stdout
    assert b"UsageError: a nested capture signs only for the enclosing build's chain" in result.stderr
    assert not (other / "chain.cbor").exists() or (other / "chain.cbor").stat().st_size == 0


def test_ephemeral_key_build_never_writes_its_key_and_names_it_in_the_outer_record(
        cli_env: dict[str, str], work: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in _env(cli_env).items() if k != "ASL_CAPTURE_KEY"}
    script = f'for s in a b; do {NESTED} --step "$s" -- true || exit 8; done'
    before = set(tmp_path.rglob("*"))
    result = cli("asl-capture", "--ephemeral-key", "--step", "outer", "--", "sh", "-c", script, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "xdg").exists()  # no development key was created either
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    written = {p for p in set(tmp_path.rglob("*")) - before if p.is_file()}
    assert all(prov in p.parents for p in written), written
    messages = [cose.parse(dcbor.decode(i.raw, tags=cose.COSE_TAGS)) for i in chain.read(prov / "chain.cbor").items]
    assert len({m.kid for m in messages}) == 1
    records = [StepRecord.from_cbor(m.payload) for m in messages]
    assert [r.step for r in records] == ["a", "b", "outer"]
    public = records[-1].ephemeral_key
    assert public is not None and cose.key_id(public) == messages[0].kid
    assert f"signed with ephemeral build key {messages[0].kid.hex()}".encode() in result.stderr
    assert all(r.ephemeral_key is None for r in records[:2])
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    report = verify_chain(prov, {messages[0].kid: Ed25519PublicKey.from_public_bytes(public)})
    assert report.head_seq == 2
    # the public key appears nowhere but in the chain: the private key was never written
    for path in written:
        if path.name != "chain.cbor":
            assert public not in path.read_bytes()


def test_ephemeral_key_with_key_is_a_usage_error(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    result = cli("asl-capture", "--ephemeral-key", "--key", keypair.key, "--", "true", env=cli_env, cwd=work)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "UsageError")


def test_the_capturing_process_is_not_dumpable(shared_tmp: Path) -> None:
    """A step running as the same (non-root) user cannot read the capturing process's memory or environment."""
    base = shared_tmp / "nobody"
    base.mkdir()
    work = base / "work"
    work.mkdir()
    prov = base / "prov"
    python, extra = unprivileged_python(shared_tmp / "lib")
    argv = [*python, "-m", "asl_capture.cli.capture", "--ephemeral-key", "--provenance", str(prov), "--",
            "sh", "-c", 'cat /proc/$$/environ > /dev/null && echo own=ok; '
                        'cat /proc/$PPID/environ > /dev/null 2>&1 && echo parent=readable || echo parent=denied; '
                        'head -c 1 /proc/$PPID/mem > /dev/null 2>&1 && echo mem=readable || echo mem=denied']
    env = {"PATH": os.environ["PATH"], "HOME": str(base), "XDG_CONFIG_HOME": str(base / "xdg"), "LANG": "C.UTF-8",
           **extra}
    if os.geteuid() == 0:
        for path in (base, work):
            os.chown(path, NOBODY, NOBODY)
    result = subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert b"own=ok" in result.stdout  # the probe itself works
    assert b"parent=denied" in result.stdout and b"mem=denied" in result.stdout, result.stdout
    assert stat.S_IMODE(prov.stat().st_mode)  # the capture did write its chain as that user
