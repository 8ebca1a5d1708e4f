"""asl-capture end to end: real subprocesses, real files, real keys (issue 2, "Done when" and "Bad input")."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_capture.format import Changes, Log, Manifest, Source
from asl_capture.keys import generate
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error, object_bytes, read_records

CAPTURE_MODULE = "asl_capture.cli.capture"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty working directory (the default snapshot root), apart from keys and provenance."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def prov_of(env: dict[str, str]) -> Path:
    return Path(env["ASL_CAPTURE_DIR"])


# --- exit codes and status ------------------------------------------------------------------------------


def test_failing_command_exits_with_its_code_and_leaves_signed_failed_record(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    result = cli("asl-capture", "--", "sh", "-c", "exit 7", env=cli_env, cwd=work)
    assert result.returncode == 7, result.stderr
    assert b"Traceback" not in result.stderr
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.status == "failed"
    assert record.exit == 7
    assert record.argv == ("sh", "-c", "exit 7")
    assert record.step == "sh"
    assert record.seq == 0 and record.prev is None and record.parent is None
    verify = cli("asl-verify", "chain", prov_of(cli_env), "--trust", keypair.pub, env=cli_env)
    assert verify.returncode == 1
    assert_one_line_error(verify.stderr, "VerificationError")
    assert b"[status] record 0" in verify.stderr and b"failed (exit 7)" in verify.stderr


@pytest.mark.parametrize("code", [0, 1, 2, 255])
def test_exit_code_is_the_childs(cli_env: dict[str, str], keypair: KeyPair, work: Path, code: int) -> None:
    result = cli("asl-capture", "--", "sh", "-c", f"exit {code}", env=cli_env, cwd=work)
    assert result.returncode == code, result.stderr
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.exit == code
    assert record.status == ("ok" if code == 0 else "failed")


def test_source_date_epoch_is_recorded(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    env = {**cli_env, "SOURCE_DATE_EPOCH": "1700000000"}
    assert cli("asl-capture", "--", "true", env=env, cwd=work).returncode == 0
    cli_env.pop("SOURCE_DATE_EPOCH", None)
    assert cli("asl-capture", "--", "true", env=cli_env, cwd=work).returncode == 0
    with_sde, without = read_records(prov_of(cli_env), keypair.pub)
    assert with_sde.source_date_epoch == 1700000000
    assert with_sde.env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert without.source_date_epoch is None


# --- signals --------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_signal_is_forwarded_child_ends_and_record_is_interrupted(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, sig: signal.Signals, code: int) -> None:
    mark = work / "MARK"
    proc = subprocess.Popen(
        [sys.executable, "-m", CAPTURE_MODULE, "--", "sh", "-c", f"touch {mark}; exec sleep 30"],
        env=cli_env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.01)
        [child] = _children(proc.pid)
        assert _alive(child)
        assert Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
        start = time.monotonic()
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=10)
        assert time.monotonic() - start < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert b"Traceback" not in err
    assert not _alive(child)
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.status == "interrupted"
    assert record.exit == -int(sig)
    assert record.signals == (int(sig),)
    assert record.finished - record.started < 10 * 10**9


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_the_record_is_being_written_does_not_lose_it(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, sig: signal.Signals) -> None:
    """The child has exited; a signal arrives while its 200 MB output is hashed: the record is still written."""
    mark = work / "MARK"
    (work / "out").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", CAPTURE_MODULE, "-o", "out", "--", "sh", "-c",
         f"head -c 200000000 /dev/zero > out/big; touch {mark}"],
        env=cli_env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.02)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in err
    assert proc.returncode != 0
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.status in ("ok", "interrupted")
    assert record.outputs.created == 1
    verify = cli("asl-verify", "chain", prov_of(cli_env), "--trust", keypair.pub, env=cli_env)
    assert verify.returncode == (0 if record.status == "ok" else 1)


# --- output pass-through ----------------------------------------------------------------------------------


def test_20mb_binary_stdout_passes_through_byte_identical(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, tmp_path: Path) -> None:
    data = os.urandom(20_000_000)
    blob = tmp_path / "blob"  # outside the snapshot root
    blob.write_bytes(data)
    result = cli("asl-capture", "--", "cat", blob, env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    assert result.stderr == b""
    [record] = read_records(prov_of(cli_env), keypair.pub)
    digest = hashlib.sha256(data).digest()
    assert record.stdout == Log(digest=digest, size=len(data))
    assert object_bytes(prov_of(cli_env), digest) == data
    assert record.stderr == Log(digest=hashlib.sha256(b"").digest(), size=0)


def test_stderr_and_non_utf8_bytes_are_kept_separate_and_exact(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, tmp_path: Path) -> None:
    out_bytes = b"\xff\xfe\x00\x80 not utf-8 \xc3\x28\n" + os.urandom(100_000)
    err_bytes = b"\x00\x01\xfe\xff stderr \xe2\x82\n" + os.urandom(300_000)
    (tmp_path / "o").write_bytes(out_bytes)
    (tmp_path / "e").write_bytes(err_bytes)
    script = f"cat {tmp_path / 'o'}; cat {tmp_path / 'e'} >&2"
    result = cli("asl-capture", "--", "sh", "-c", script, env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == out_bytes
    assert result.stderr == err_bytes
    [record] = read_records(prov_of(cli_env), keypair.pub)
    prov = prov_of(cli_env)
    for name, data in (("stdout", out_bytes), ("stderr", err_bytes)):
        digest = hashlib.sha256(data).digest()
        assert getattr(record, name) == Log(digest=digest, size=len(data))
        assert object_bytes(prov, digest) == data


def test_stdin_is_inherited(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    payload = b"from stdin \xff\x00\n" * 1000
    result = cli("asl-capture", "--", "cat", env=cli_env, cwd=work, stdin=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


# --- concurrency and nesting ----------------------------------------------------------------------------


def test_32_concurrent_captures_on_one_chain(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, tmp_path: Path) -> None:
    go = tmp_path / "GO"  # a barrier, so that all 32 finish together and race to append
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-m", CAPTURE_MODULE, "--step", f"s{n}", "--", "sh", "-c",
                          f"touch {ready}/{n}; while [ ! -e {go} ]; do sleep 0.005; done; echo {n}"],
                         env=cli_env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for n in range(32)
    ]
    deadline = time.monotonic() + 60
    while len(list(ready.iterdir())) < 32 and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for n, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, err
        assert out == f"{n}\n".encode()
    records = read_records(prov_of(cli_env), keypair.pub)
    assert [r.seq for r in records] == list(range(32))
    assert sorted(r.step for r in records) == sorted(f"s{n}" for n in range(32))
    assert len({r.chain for r in records}) == 1
    for record in records:
        n = int(record.step[1:])
        assert record.stdout.digest == hashlib.sha256(f"{n}\n".encode()).digest()
    verify = cli("asl-verify", "chain", prov_of(cli_env), "--trust", keypair.pub, env=cli_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert b"VERIFIED: 32 records" in verify.stdout


def test_nested_captures_record_parents_and_outer_lands_last(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    script = work / "script.sh"
    script.write_text(
        'set -e\n'
        'for s in a b c; do "$PY" -m asl_capture.cli.capture --step "$s" -- sh -c "echo inner $s"; done\n'
    )
    env = {**cli_env, "PY": sys.executable}
    result = cli("asl-capture", "--step", "outer", "--", "sh", script, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"inner a\ninner b\ninner c\n"
    records = read_records(prov_of(cli_env), keypair.pub)
    assert [r.step for r in records] == ["a", "b", "c", "outer"]
    outer = records[-1]
    assert outer.parent is None
    assert all(r.parent == outer.id for r in records[:3])
    assert len({r.id for r in records}) == 4
    assert outer.started < records[0].started and records[2].finished < outer.finished

    verify = cli("asl-verify", "chain", prov_of(cli_env), "--trust", keypair.pub, "--json", env=cli_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["verdict"] == "verified"
    assert report["records"] == 4
    [top] = report["steps"]
    assert (top["step"], top["seq"], top["status"], top["id"]) == ("outer", 3, "ok", outer.id.hex())
    assert [(c["step"], c["seq"], c["status"], c["children"]) for c in top["children"]] == [
        ("a", 0, "ok", []), ("b", 1, "ok", []), ("c", 2, "ok", [])]


def test_outer_capture_of_failed_inner_still_nests(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    env = {**cli_env, "PY": sys.executable}
    inner = '"$PY" -m asl_capture.cli.capture --step inner -- sh -c "exit 3"'
    result = cli("asl-capture", "--step", "outer", "--", "sh", "-c", inner, env=env, cwd=work)
    assert result.returncode == 3
    inner_rec, outer_rec = read_records(prov_of(cli_env), keypair.pub)
    assert (inner_rec.status, inner_rec.exit, inner_rec.parent) == ("failed", 3, outer_rec.id)
    assert (outer_rec.status, outer_rec.exit) == ("failed", 3)


# --- secrets --------------------------------------------------------------------------------------------


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if needle in path.read_bytes():
                hits.append(path)
    return hits


def test_secret_env_value_appears_nowhere_under_provenance(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    canary = "c4n4ry" + secrets.token_hex(16)
    prov = prov_of(cli_env)
    env = {**cli_env, "FOO_TOKEN": canary, "MY_SECRET_KEY": canary + "x", "PATH": f"{cli_env['PATH']}:/opt/{canary}"}
    # 1. in a secret-named variable; 2. also in argv; 3. also inside an allow-listed variable's value.
    runs = [["true"], ["true", canary, f"--flag={canary}"], ["sh", "-c", f": {canary}"]]
    for argv in runs:
        result = cli("asl-capture", "--", *argv, env=env, cwd=work)
        assert result.returncode == 0, result.stderr
    records = read_records(prov, keypair.pub)
    assert len(records) == 3
    needle = canary.encode()
    assert _files_containing(prov, needle) == []
    assert _files_containing(prov, needle.hex().encode()) == []
    # the canary really reached the child, and the masked places are recorded as masked
    assert records[0].env["FOO_TOKEN"] is None
    assert "FOO_TOKEN" in records[0].env
    assert records[1].argv == ("true", "<redacted>", "--flag=<redacted>")
    path_value = records[0].env["PATH"]
    assert isinstance(path_value, str) and path_value.endswith("/opt/<redacted>")
    # sanity: the grep does find things that are there
    assert _files_containing(prov, b"--flag=<redacted>")


# --- bad input: nothing runs unrecorded -----------------------------------------------------------------


def _assert_not_run(result: subprocess.CompletedProcess[bytes], mark: Path, name: str) -> None:
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, name)
    assert not mark.exists(), "the command ran although the capture could not be recorded"


def _seed_chain(env: dict[str, str], work: Path) -> bytes:
    """One good record, so each refusal can also show the chain is untouched."""
    assert cli("asl-capture", "--", "true", env=env, cwd=work).returncode == 0
    return (prov_of(env) / "chain.cbor").read_bytes()


def test_no_command_after_double_dash(cli_env: dict[str, str], work: Path) -> None:
    for argv in (["--"], []):
        result = cli("asl-capture", *argv, env=cli_env, cwd=work)
        assert result.returncode == 2
        assert_one_line_error(result.stderr, "UsageError")
        assert not (prov_of(cli_env) / "chain.cbor").exists() or (prov_of(cli_env) / "chain.cbor").stat().st_size == 0


def test_missing_key_file_refuses_to_run(cli_env: dict[str, str], work: Path, tmp_path: Path) -> None:
    before = _seed_chain(cli_env, work)
    mark = work / "MARK"
    for env, args in ((cli_env, ["--key", str(tmp_path / "nope.key")]),
                      ({**cli_env, "ASL_CAPTURE_KEY": str(tmp_path / "nope.key")}, [])):
        result = cli("asl-capture", *args, "--", "touch", mark, env=env, cwd=work)
        _assert_not_run(result, mark, "KeyFileError")
        assert b"nope.key" in result.stderr
    assert (prov_of(cli_env) / "chain.cbor").read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_others_refuses_to_run(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, mode: int) -> None:
    before = _seed_chain(cli_env, work)
    keypair.key.chmod(mode)
    mark = work / "MARK"
    result = cli("asl-capture", "--", "touch", mark, env=cli_env, cwd=work)
    _assert_not_run(result, mark, "KeyFileError")
    assert (prov_of(cli_env) / "chain.cbor").read_bytes() == before


def test_wrong_passphrase_refuses_to_run(cli_env: dict[str, str], work: Path, tmp_path: Path) -> None:
    key, pub, _ = generate("enc", directory=tmp_path / "enc", passphrase=b"right horse battery")
    env = {**cli_env, "ASL_CAPTURE_KEY": str(key)}
    mark = work / "MARK"
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrong horse\n")
    for extra_env, args in (({"ASL_KEY_PASSPHRASE": "wrong horse"}, []), ({}, ["--passphrase-file", str(wrong)]),
                            ({}, [])):  # and no passphrase at all
        result = cli("asl-capture", *args, "--", "touch", mark, env={**env, **extra_env}, cwd=work)
        _assert_not_run(result, mark, "KeyFileError")
        assert b"wrong horse" not in result.stderr
    # the right passphrase works (so the refusals above were about the passphrase)
    right = tmp_path / "right.txt"
    right.write_text("right horse battery\n")
    ok = cli("asl-capture", "--passphrase-file", right, "--", "touch", mark, env=env, cwd=work)
    assert ok.returncode == 0, ok.stderr
    assert mark.exists()
    assert len(read_records(prov_of(cli_env), pub)) == 1
    assert _files_containing(prov_of(cli_env), b"right horse") == []


def test_provenance_path_is_a_file_refuses_to_run(cli_env: dict[str, str], work: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "prov-file"
    not_a_dir.write_bytes(b"keep me")
    mark = work / "MARK"
    for env, args in (({**cli_env, "ASL_CAPTURE_DIR": str(not_a_dir)}, []),
                      (cli_env, ["--provenance", str(not_a_dir)]),
                      (cli_env, ["--provenance", str(not_a_dir / "sub")])):
        result = cli("asl-capture", *args, "--", "touch", mark, env=env, cwd=work)
        _assert_not_run(result, mark, "StoreError")
    assert not_a_dir.read_bytes() == b"keep me"


def test_unusable_provenance_contents_refuse_to_run(cli_env: dict[str, str], work: Path) -> None:
    prov = prov_of(cli_env)
    mark = work / "MARK"
    prov.mkdir()
    (prov / "objects").write_bytes(b"")  # the object store cannot be created
    result = cli("asl-capture", "--", "touch", mark, env=cli_env, cwd=work)
    _assert_not_run(result, mark, "StoreError")
    (prov / "objects").unlink()
    (prov / "chain.cbor").mkdir()  # the chain cannot be opened
    result = cli("asl-capture", "--", "touch", mark, env=cli_env, cwd=work)
    _assert_not_run(result, mark, "ChainError")


def test_missing_declared_input_refuses_to_run(cli_env: dict[str, str], work: Path) -> None:
    before = _seed_chain(cli_env, work)
    mark = work / "MARK"
    result = cli("asl-capture", "-i", "no-such-input", "--", "touch", mark, env=cli_env, cwd=work)
    _assert_not_run(result, mark, "CaptureError")
    assert b"no-such-input" in result.stderr
    assert (prov_of(cli_env) / "chain.cbor").read_bytes() == before


def test_unstartable_command_exits_127_with_failed_record(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    (work / "not-executable").write_text("#!/bin/sh\n")
    for argv in (["/nonexistent"], ["no-such-command-anywhere"], [str(work / "not-executable")]):
        result = cli("asl-capture", "--", *argv, env=cli_env, cwd=work)
        assert result.returncode == 127, result.stderr
        assert b"Traceback" not in result.stderr
        assert result.stderr.count(b"\n") == 1, result.stderr
    records = read_records(prov_of(cli_env), keypair.pub)
    assert len(records) == 3
    for record in records:
        assert (record.status, record.exit) == ("failed", 127)
        assert "cannot start" in str(record.error)
    verify = cli("asl-verify", "chain", prov_of(cli_env), "--trust", keypair.pub, env=cli_env)
    assert verify.returncode == 1


# --- declared inputs and outputs ------------------------------------------------------------------------


def test_inputs_and_output_changes_are_recorded(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    src, out = work / "src", work / "out"
    (src / "deep").mkdir(parents=True)
    out.mkdir()
    inputs = {"src/a.txt": b"alpha\n", "src/deep/b.bin": os.urandom(70_000), "in.cfg": b"x=1\n"}
    for rel, data in inputs.items():
        (work / rel).write_bytes(data)
    os.symlink("a.txt", src / "link")
    (out / "keep.txt").write_text("keep\n")
    (out / "mod.txt").write_text("old\n")
    (out / "del.txt").write_text("gone\n")
    script = ("mkdir out/sub && echo new > out/sub/new.txt && echo created > out/new.txt && "
              "echo changed >> out/mod.txt && rm out/del.txt")
    result = cli("asl-capture", "-i", "src", "-i", "in.cfg", "-o", "out", "--", "sh", "-c", script,
                 env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr
    prov = prov_of(cli_env)
    [record] = read_records(prov, keypair.pub)
    outputs = record.outputs
    assert (outputs.created, outputs.modified, outputs.deleted) == (3, 1, 1)
    changes = Changes.from_cbor(object_bytes(prov, outputs.changes))
    assert {e.path: e.kind for e in changes.created} == {b"out/new.txt": "f", b"out/sub": "d", b"out/sub/new.txt": "f"}
    assert [e.path for e in changes.modified] == [b"out/mod.txt"]
    assert changes.modified[0].extra == hashlib.sha256(b"old\nchanged\n").digest()
    assert changes.deleted == (b"out/del.txt",)
    after = Manifest.from_cbor(object_bytes(prov, outputs.manifest))
    assert {e.path for e in after.entries if e.kind == "f"} == {
        b"out/keep.txt", b"out/mod.txt", b"out/new.txt", b"out/sub/new.txt"}
    before = Manifest.from_cbor(object_bytes(prov, outputs.before))
    assert b"out/del.txt" in before.by_path()

    manifest = Manifest.from_cbor(object_bytes(prov, record.inputs.manifest))
    files = {e.path.decode(): e for e in manifest.entries if e.kind == "f"}
    assert set(files) == set(inputs)
    for rel, data in inputs.items():
        assert files[rel].extra == hashlib.sha256(data).digest()
        assert files[rel].size == len(data)
        assert files[rel].mode & 0o777 == stat.S_IMODE((work / rel).stat().st_mode)
    link = manifest.by_path()[b"src/link"]
    assert (link.kind, link.extra) == ("l", b"a.txt")
    assert record.inputs.files == 3


# --- the development key --------------------------------------------------------------------------------


def test_dev_key_created_0600_announced_once_and_verifiable(
        cli_env: dict[str, str], work: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_KEY"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-dev")
    first = cli("asl-capture", "--", "true", env=env, cwd=work)
    assert first.returncode == 0, first.stderr
    key = tmp_path / "xdg-dev" / "asl-capture" / "dev.key"
    pub = key.with_suffix(".pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    kid = cli("asl-keys", "id", pub, env=env).stdout.strip()
    assert len(kid) == 64
    assert first.stderr.count(kid) == 1
    assert first.stderr.count(b"\n") == 1 and b"development" in first.stderr
    second = cli("asl-capture", "--", "true", env=env, cwd=work)
    assert second.returncode == 0
    assert second.stderr == b""
    verify = cli("asl-verify", "chain", prov_of(env), "--trust", pub, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert b"VERIFIED: 2 records" in verify.stdout
    assert len(read_records(prov_of(env), pub)) == 2


def test_project_config_sets_provenance_and_excludes_but_env_wins(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "scratch").mkdir(parents=True)
    (project / "scratch" / "big").write_bytes(b"x" * 10)
    (project / "pyproject.toml").write_text('[tool.asl-capture]\nprovenance = "out/prov"\nexclude = ["scratch"]\n')
    env = {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_DIR"}
    done = cli("asl-capture", "--", "sh", "-c", "echo new > made", env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    records = read_records(project / "out" / "prov", keypair.pub)
    assert len(records) == 1
    prov = project / "out" / "prov"
    changes = Changes.from_cbor(object_bytes(prov, records[0].outputs.changes))
    assert [e.path for e in changes.created] == [b"made"]
    manifest = Manifest.from_cbor(object_bytes(prov, records[0].inputs.manifest))
    assert manifest.entries and not any(e.path.startswith(b"scratch") for e in manifest.entries)
    # $ASL_CAPTURE_DIR beats the project's value
    assert cli("asl-capture", "--", "true", env=cli_env, cwd=project).returncode == 0
    assert (Path(cli_env["ASL_CAPTURE_DIR"]) / "chain.cbor").is_file()
    assert len(read_records(project / "out" / "prov", keypair.pub)) == 1


# --- sources ---------------------------------------------------------------------------------------------


def test_sources_written_by_the_step_are_recorded(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    digest = hashlib.sha256(b"pkg").hexdigest()
    line = json.dumps({"uri": "http://deb.example/x.deb", "sha256": digest, "kind": "deb"})
    result = cli("asl-capture", "--sources", "src.jsonl", "--", "sh", "-c", f"echo '{line}' > src.jsonl",
                 env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.status == "ok"
    assert record.sources == (Source(uri="http://deb.example/x.deb", sha256=bytes.fromhex(digest), kind="deb"),)


@pytest.mark.parametrize(("script", "error"), [
    ("echo 'not json' > src.jsonl", "src.jsonl:1: not JSON"),
    ("true", "src.jsonl: sources file was not written by the step"),
])
def test_bad_or_missing_sources_fail_the_step_but_keep_its_record(
        cli_env: dict[str, str], keypair: KeyPair, work: Path, script: str, error: str) -> None:
    result = cli("asl-capture", "--sources", "src.jsonl", "--", "sh", "-c", script, env=cli_env, cwd=work)
    assert result.returncode == 125, result.stderr
    assert b"Traceback" not in result.stderr
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.status == "failed" and record.exit == 0
    assert error in str(record.error)
    assert record.sources is None


# --- attachments ------------------------------------------------------------------------------------------


def test_attached_files_are_stored_as_objects(cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    script = "mkdir -p meta/sub && printf signed > meta/InRelease && printf idx > meta/sub/Packages && " \
             "ln -s InRelease meta/link && printf one > single"
    result = cli("asl-capture", "--attach", "meta", "--attach", "single", "--", "sh", "-c", script,
                 env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr
    [record] = read_records(prov_of(cli_env), keypair.pub)
    prov = prov_of(cli_env)
    got = {a.path: object_bytes(prov, a.digest) for a in record.attached or ()}
    assert got == {"meta/InRelease": b"signed", "meta/sub/Packages": b"idx", "single": b"one"}  # no symlink
    assert cli("asl-verify", "chain", prov, "--trust", keypair.pub, env=cli_env).returncode == 0
    gone = (record.attached or ())[1].digest.hex()
    (prov / "objects" / "sha256" / gone[:2] / gone[2:]).unlink()
    verify = cli("asl-verify", "chain", prov, "--trust", keypair.pub, env=cli_env)
    assert verify.returncode == 1 and b"attached[1].digest" in verify.stderr and gone.encode() in verify.stderr


def test_missing_attachment_fails_the_step_but_keeps_its_record(
        cli_env: dict[str, str], keypair: KeyPair, work: Path) -> None:
    result = cli("asl-capture", "--attach", "nothing-here", "--", "true", env=cli_env, cwd=work)
    assert result.returncode == 125
    [record] = read_records(prov_of(cli_env), keypair.pub)
    assert record.status == "failed" and "nothing-here: cannot attach" in str(record.error)
    assert record.attached == ()
