"""Issue 13 items 7-9 and 11-13: provenance directory ownership and temporary files, odd bytes,
closed standard descriptors, a deleted working directory, background processes, nested captures
into another directory, secrets on the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_capture import envpolicy
from asl_capture.capture import CaptureConfig, capture
from asl_capture.keys import generate
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error, object_bytes, read_records

CAPTURE = [sys.executable, "-m", "asl_capture.cli.capture"]


def _verify_ok(prov: Path, pub: Path, env: dict[str, str]) -> None:
    result = cli("asl-verify", "chain", prov, "--trust", pub, env=env)
    assert result.returncode == 0, result.stderr


# -- item 7: the provenance directory and its temporary files ------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_provenance_directory_owned_by_another_user_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    prov.mkdir(mode=0o755)
    os.chown(prov, 65534, 65534)
    marker = tmp_path / "ran"
    result = cli("asl-capture", "--", "touch", marker, env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "StoreError")
    assert b"owned by uid 65534" in result.stderr
    assert not marker.exists() and not (prov / "chain.cbor").exists()


def test_a_provenance_directory_writable_by_others_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    prov.mkdir()
    prov.chmod(0o777)
    marker = tmp_path / "ran"
    result = cli("asl-capture", "--", "touch", marker, env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "StoreError")
    assert b"writable by group or others" in result.stderr
    assert not marker.exists()


def test_a_new_provenance_directory_is_not_group_writable_whatever_the_umask(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert cli("asl-capture", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
        assert cli("asl-capture", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    finally:
        os.umask(old)
    for sub in ("", "objects", "objects/sha256"):
        assert (Path(cli_env["ASL_CAPTURE_DIR"]) / sub).stat().st_mode & 0o777 == 0o755


def test_predictable_temporary_names_are_never_opened(tmp_path: Path, keypair: KeyPair,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Main wrote ``.checkpoint.<pid>``, ``.head.<pid>`` and ``.statcache.<pid>.tmp`` following symlinks."""
    prov = tmp_path / "prov"
    work = tmp_path / "work"
    work.mkdir()
    prov.mkdir(mode=0o755)
    pid = 424242
    monkeypatch.setattr(os, "getpid", lambda: pid)
    victims = {}
    for name in (f".checkpoint.{pid}", f".head.{pid}", f".statcache.{pid}.tmp", "torn-at-0.bin"):
        victim = tmp_path / f"victim-{name}"
        victim.write_bytes(b"precious")
        (prov / name).symlink_to(victim)
        victims[name] = victim
    (work / "f").write_bytes(b"x" * 10)
    config = CaptureConfig(argv=("true",), environ={"PATH": os.environ["PATH"]}, cwd=work, provenance=prov,
                           as_root=True, key=keypair.key)
    assert capture(config, notify=lambda _m: None).exit_code == 0
    assert all(v.read_bytes() == b"precious" for v in victims.values())


# -- item 8: text that is not UTF-8 is recorded as bytes, and checked before the command runs ----

def test_non_utf8_names_values_step_and_errors_are_recorded_as_bytes(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    odd = os.fsdecode
    tool = tmp_path / odd(b"tool-\xff")
    tool.write_text("#!/bin/sh\necho ran > ran\n")
    tool.chmod(0o755)
    env = {**cli_env, odd(b"ODD_\xffNAME"): "x", "PWD": odd(b"/caf\xe9"), "LANG": odd(b"C.\xe9")}
    first = cli("asl-capture", "--", tool, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli("asl-capture", "--step", odd(b"step-\xfe"), "--sources", odd(b"src-\xfd.jsonl"), "--", "true",
                 env=env, cwd=tmp_path)
    assert second.returncode == 125, second.stderr  # the sources file was not written: recorded as an error
    assert (tmp_path / "ran").exists()
    one, two = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)
    assert one.step == b"tool-\xff"
    assert one.env["PWD"] == b"/caf\xe9" and one.env["LANG"] == b"C.\xe9"
    assert one.env_bytes == ((b"ODD_\xffNAME", None),)
    assert two.step == b"step-\xfe"
    assert isinstance(two.error, bytes) and b"src-\xfd.jsonl" in two.error


# -- item 9: closed standard descriptors ---------------------------------------------------------

@pytest.mark.parametrize("closed", ["stdout", "stderr", "both"])
def test_closed_standard_descriptors(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path,
                                     closed: str) -> None:
    redirect = {"stdout": ">&-", "stderr": "2>&-", "both": ">&- 2>&-"}[closed]
    script = f'exec "$@" {redirect}'
    payload = "x" * 300_000
    result = subprocess.run(["sh", "-c", script, "sh", *CAPTURE, "--", "sh", "-c",
                             "head -c 300000 /dev/zero | tr '\\0' x; printf err >&2; touch ran"],
                            env=cli_env, cwd=tmp_path, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").exists()
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    record = read_records(prov, keypair.pub)[-1]
    assert object_bytes(prov, record.stdout.digest) == payload.encode()
    assert object_bytes(prov, record.stderr.digest) == b"err"
    _verify_ok(prov, keypair.pub, cli_env)


# -- item 11: a deleted working directory, a background process holding stdout -------------------

def test_a_deleted_working_directory_is_a_one_line_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    script = 'mkdir gone && cd gone && rmdir ../gone && exec "$@"'
    result = subprocess.run(["sh", "-c", script, "sh", *CAPTURE, "--", "true"], env=cli_env, cwd=tmp_path,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "UsageError")


def test_a_background_process_holding_stdout_is_not_waited_for(cli_env: dict[str, str], keypair: KeyPair,
                                                                 tmp_path: Path) -> None:
    start = time.monotonic()
    result = cli("asl-capture", "--", "sh", "-c", "sleep 25 & echo started", env=cli_env, cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"started\n"
    assert elapsed < 20, elapsed
    record = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)[-1]
    assert record.finished - record.started < 15_000_000_000
    assert object_bytes(Path(cli_env["ASL_CAPTURE_DIR"]), record.stdout.digest) == b"started\n"


# -- item 12: a nested capture into another provenance directory -------------------------------

def test_a_nested_capture_into_another_directory_has_no_foreign_parent(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    other = tmp_path / "other"
    inner = [*CAPTURE, "--provenance", str(other), "--key", str(keypair.key), "--step", "inner", "--", "true"]
    result = cli("asl-capture", "--step", "outer", "--", *inner, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (record,) = read_records(other, keypair.pub)
    assert record.parent is None
    _verify_ok(other, keypair.pub, cli_env)
    _verify_ok(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub, cli_env)


# -- item 13: secrets on the command line and in secret-named variables -----------------------

def test_secrets_on_the_command_line_are_masked(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    env = {**cli_env, "DB_PASS": "hunter2-db-pass", "MYSQL_PWD": "hunter2-mysql", "PWD": str(tmp_path)}
    argv = ["true", "--password=hunter2-password", "--api-token", "hunter2-token", "-phunter2-p",
            "https://user:hunter2-url@example.org/repo.git", "--client-secret=hunter2-secret",
            "https://hunter2-token-user@example.org/x", "--db-pass=$DB_PASS", "hunter2-db-pass"]
    result = cli("asl-capture", "--", *argv, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    record = read_records(prov, keypair.pub)[-1]
    raw = (prov / "chain.cbor").read_bytes()
    assert b"hunter2" not in raw
    assert record.argv == ("true", "--password=<redacted>", "--api-token", "<redacted>", "-p<redacted>",
                           "https://user:<redacted>@example.org/repo.git", "--client-secret=<redacted>",
                           "https://<redacted>@example.org/x", "--db-pass=<redacted>", "<redacted>")
    assert record.env["DB_PASS"] is None and record.env["MYSQL_PWD"] is None
    assert record.env["PWD"] == str(tmp_path)


@pytest.mark.parametrize(("arg", "kept"), [
    ("-pthread", True), ("-p1", True), ("-pR", True), ("--passphrase-file", True), ("--no-password", True),
    ("-print0", True), ("-pSECRET1", False)])
def test_ordinary_p_options_are_kept(arg: str, kept: bool) -> None:
    assert (envpolicy.mask_argv(["x", arg], []) == ["x", arg]) is kept



def test_a_passphrase_given_through_process_substitution_serves_every_nested_capture(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    """``--passphrase-file <(...)`` can be read once: nested captures sign through the outer one."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed for process substitution")
    key, pub, _kid = generate("enc", directory=tmp_path / "enc-keys", passphrase=b"correct horse")
    env = {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_KEY"}
    nested = " ".join([*CAPTURE, "--step", "inner", "--", "true"])
    script = (f'{" ".join(CAPTURE)} --key {key} --passphrase-file <(printf "correct horse") --step outer -- '
              f'sh -c "{nested} && {nested}"')
    result = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    records = read_records(Path(env["ASL_CAPTURE_DIR"]), pub)
    assert [r.step for r in records] == ["inner", "inner", "outer"]
    assert records[0].parent == records[2].id
    _verify_ok(Path(env["ASL_CAPTURE_DIR"]), pub, env)


def test_a_command_that_closes_its_output_early_is_still_waited_for(cli_env: dict[str, str], keypair: KeyPair,
                                                                     tmp_path: Path) -> None:
    """The other side of not waiting for the pipes: ``finished`` is when the command exited."""
    result = cli("asl-capture", "--", "sh", "-c", "exec >&- 2>&-; sleep 2; touch done", env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "done").exists()
    record = read_records(Path(cli_env["ASL_CAPTURE_DIR"]), keypair.pub)[-1]
    assert record.finished - record.started >= 2_000_000_000
