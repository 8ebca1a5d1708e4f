"""Issue 23: as root, asl-capture runs its command as the build user, out of the key's reach."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asl_capture.keys import generate
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error, read_records

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to a build user needs root")

PROBE = """
me=$(id -u); echo "uid=$me"
head -c 1 /proc/$HOLDER/environ > /dev/null 2>&1 && echo environ=readable || echo environ=denied
start=$(head -n 1 /proc/$HOLDER/maps 2>/dev/null | cut -d- -f1)
mem=denied
dd if=/proc/$HOLDER/mem of=/dev/null count=0 2>/dev/null && [ -n "$start" ] \
    && dd if=/proc/$HOLDER/mem of=/dev/null bs=1 count=1 iflag=skip_bytes skip=$((0x$start)) 2>/dev/null && mem=readable
echo "mem=$mem"
head -c 1 "$KEYFILE" > /dev/null 2>&1 && echo key=readable || echo key=denied
true > "$ASL_CAPTURE_DIR/chain.cbor" 2>/dev/null && echo chain=writable || echo chain=denied
touch "$ASL_CAPTURE_DIR/planted" 2>/dev/null && echo provenance=writable || echo provenance=denied
found=no
for f in /proc/[0-9]*/environ; do
    grep -qa -- "$PASSPHRASE" "$f" 2>/dev/null && found="yes:$f"
done
echo "passphrase=$found"
"""


@pytest.fixture
def shared(shared_tmp: Path) -> Path:
    """A directory the build user can reach (tests/conftest.py)."""
    return shared_tmp


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_USER"}  # the default: the build user


def _lines(out: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)


def test_a_step_cannot_reach_the_key_holders_memory_environment_key_or_chain(
        env: dict[str, str], shared: Path) -> None:
    passphrase = "correct horse battery staple 23"
    key, pub, _kid = generate("enc", directory=shared / "keys", passphrase=passphrase.encode())
    work = shared / "work"
    work.mkdir()
    prov = shared / "prov"
    env = {**env, "ASL_CAPTURE_KEY": str(key), "ASL_KEY_PASSPHRASE": passphrase, "ASL_CAPTURE_DIR": str(prov),
           }
    probe = PROBE.replace("$KEYFILE", str(key)).replace("$PASSPHRASE", passphrase[:-1] + "[3]")
    # the probe runs as the outer step and again as a nested one, both against the key holder
    nested = probe.replace(chr(39), "")
    script = (f"HOLDER=$PPID; export HOLDER\n{probe}"
              f"asl-capture --step nested -- sh -c '{nested}' > \"{work}/nested.out\"\n")
    result = cli("asl-capture", "--step", "outer", "--writable", work, "--", "sh", "-c", script, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    for seen in (_lines(result.stdout), _lines((work / "nested.out").read_bytes())):
        assert seen["uid"] != "0", seen
        assert {k: seen[k] for k in ("mem", "environ", "key", "chain", "provenance")} == dict.fromkeys(
            ("mem", "environ", "key", "chain", "provenance"), "denied"), seen
        assert seen["passphrase"] == "no", seen
    records = read_records(prov, pub)
    assert [r.step for r in records] == ["nested", "outer"]
    for record in records:
        assert record.user is not None and record.user.name == "asl-build" and record.user.uid != 0
        assert record.env.get("HOME") in (None, "/var/lib/asl-build")
    assert not (prov / "planted").exists()


def test_the_probe_finds_all_of_it_from_a_root_step(env: dict[str, str], shared: Path) -> None:
    """The same probe as root (--as-root, today's old behaviour) reads everything: it can fail."""
    passphrase = "correct horse battery staple 23"
    key, _pub, _kid = generate("enc", directory=shared / "keys", passphrase=passphrase.encode())
    env = {**env, "ASL_CAPTURE_KEY": str(key), "ASL_KEY_PASSPHRASE": passphrase}
    probe = PROBE.replace("$KEYFILE", str(key)).replace("$PASSPHRASE", passphrase[:-1] + "[3]")
    result = cli("asl-capture", "--as-root", "--", "sh", "-c", "HOLDER=$PPID\n" + probe, env=env, cwd=shared)
    seen = _lines(result.stdout)
    assert (seen["uid"], seen["mem"], seen["environ"], seen["key"], seen["chain"]) == (
        "0", "readable", "readable", "readable", "writable"), seen
    assert seen["passphrase"].startswith("yes:"), seen


def test_as_root_keeps_root_and_the_record_says_so(env: dict[str, str], shared: Path, keypair: KeyPair) -> None:
    work = shared / "work"
    work.mkdir()
    result = cli("asl-capture", "--as-root", "--", "sh", "-c", "id -u", env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"0"
    record = read_records(Path(env["ASL_CAPTURE_DIR"]), keypair.pub)[-1]
    assert record.user is not None and (record.user.uid, record.user.name) == (0, "root")


def test_user_names_another_build_user(env: dict[str, str], shared: Path, keypair: KeyPair) -> None:
    work = shared / "work"
    work.mkdir()
    result = cli("asl-capture", "--user", "nobody", "--", "id", "-u", env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"65534"
    record = read_records(Path(env["ASL_CAPTURE_DIR"]), keypair.pub)[-1]
    assert record.user is not None and record.user.name == "nobody"


@pytest.mark.parametrize(("args", "message"), [
    (("--user", "root"), "use --as-root"),
    (("--user", "no-such-user-23"), "no such user"),
    (("--user", "nobody", "--as-root"), "exclude each other"),
])
def test_bad_user_options_are_one_line_errors(env: dict[str, str], shared: Path, args: tuple[str, ...],
                                              message: str) -> None:
    result = cli("asl-capture", *args, "--", "true", env=env, cwd=shared)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "UsageError")
    assert message in result.stderr.decode()


def test_writable_lets_the_build_user_create_but_not_remove_roots_entries(
        env: dict[str, str], shared: Path, keypair: KeyPair) -> None:
    work = shared / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "roots").write_text("root's\n")
    script = "echo made > out/new && rm -f out/roots; test -e out/roots && echo kept"
    result = cli("asl-capture", "--writable", "out", "--", "sh", "-c", script, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"kept" and (work / "out" / "new").read_text() == "made\n"
    assert (work / "out" / "new").stat().st_uid != 0


def test_a_nested_capture_cannot_change_user(env: dict[str, str], shared: Path) -> None:
    work = shared / "work"
    work.mkdir()
    script = "asl-capture --as-root -- id -u; echo rc=$?"
    result = cli("asl-capture", "--", "sh", "-c", script, env=env, cwd=work)
    assert b"rc=2" in result.stdout, result.stdout + result.stderr
    assert b"belong to the outermost capture" in result.stderr


def test_a_working_directory_the_build_user_cannot_enter_is_refused_before_running(
        env: dict[str, str], tmp_path: Path) -> None:
    """pytest's tmp_path sits below a mode-0700 directory: the command would not even start."""
    result = cli("asl-capture", "--", "touch", "ran", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "UsageError")
    assert b"cannot enter the working directory" in result.stderr and not (tmp_path / "ran").exists()


def test_a_project_can_keep_its_steps_as_root_and_the_record_says_so(
        env: dict[str, str], shared: Path, keypair: KeyPair) -> None:
    (shared / "pyproject.toml").write_text('[tool.asl-capture]\nuser = "root"\n')
    result = cli("asl-capture", "--", "id", "-u", env=env, cwd=shared)
    assert result.returncode == 0 and result.stdout.strip() == b"0", result.stderr
    record = read_records(Path(env["ASL_CAPTURE_DIR"]), keypair.pub)[-1]
    assert record.user is not None and record.user.uid == 0
    result = cli("asl-capture", "--user", "nobody", "--", "id", "-u", env=env, cwd=shared)
    assert result.stdout.strip() == b"65534"  # the command line still decides
