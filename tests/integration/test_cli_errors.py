"""One error path for every console script (asl_capture.cli.run): exit code from the error's class,
usage errors as JSON under --json, --version everywhere, and messages that say what is wrong."""

from __future__ import annotations

import importlib
import json
import os
import tomllib
from pathlib import Path

import pytest

from asl_capture import __version__
from asl_capture.cli import run
from asl_capture.errors import AslError, KeyFileError, RecordWriteError, UsageError, VerificationError
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]


def test_every_console_script_goes_through_the_one_wrapper() -> None:
    """Every asl_capture console script (the host runtime, asl_host, has its own errors and base)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    ours = {name: target for name, target in scripts.items() if target.startswith("asl_capture.")}
    assert len(ours) >= 4
    for name, target in ours.items():
        module_name, _, func = target.partition(":")
        module = importlib.import_module(module_name)
        assert func == "main" and isinstance(module.cli, run.ToolCommand | run.ToolGroup), name


@pytest.mark.parametrize("args", [
    ("asl-capture",), ("asl-verify",), ("asl-verify", "chain"), ("asl-verify", "release"),
    ("asl-verify", "rebuild"), ("asl-verify", "iso"), ("asl-verify", "show"),
    ("asl-keys",), ("asl-keys", "generate"), ("asl-keys", "id"), ("asl-keys", "export"),
    ("asl-chain",), ("asl-chain", "repair"), ("asl-release",), ("asl-release", "publish"),
], ids=" ".join)
def test_version_on_every_command(args: tuple[str, ...], cli_env: dict[str, str]) -> None:
    result = cli(args[0], *args[1:], "--version", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{args[0]} {__version__}\n"


@pytest.mark.parametrize(("error", "code"), [
    (VerificationError("bad", check="payload", record=3), 1), (UsageError("no"), 2), (KeyFileError("k"), 2),
    (RecordWriteError("late"), 125),
])
def test_exit_code_comes_from_the_error_class(error: AslError, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    @run.command(epilog="")
    def failing() -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        failing.main([], prog_name="t")
    assert info.value.code == code == error.exit_code
    assert capsys.readouterr().err == f"{type(error).__name__}: {error}\n"


def test_returned_code_is_the_exit_code() -> None:
    @run.command(epilog="")
    def seven() -> int:
        return 7

    with pytest.raises(SystemExit) as info:
        seven.main([], prog_name="t")
    assert info.value.code == 7


@pytest.mark.parametrize("args", [
    ("chain", "--json"), ("chain", "--json", "somewhere"), ("chain", "--json", "d", "--trust"),
    ("chain", "--json", "--bogus"),
], ids=" ".join)
def test_usage_errors_under_json_are_json(args: tuple[str, ...], cli_env: dict[str, str]) -> None:
    result = cli("asl-verify", *args, env=cli_env)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["schema"] == "asl-verify/chain/1" and report["verdict"] == "error"
    assert report["error"]["type"] == "UsageError" and report["error"]["message"]
    assert b"Traceback" not in result.stderr


def test_usage_error_of_the_group_under_json(cli_env: dict[str, str]) -> None:
    result = cli("asl-verify", "--json", env=cli_env)
    assert result.returncode == 2
    assert json.loads(result.stdout)["schema"] == "asl-verify/error/1"


def test_usage_error_without_json_is_text(cli_env: dict[str, str]) -> None:
    result = cli("asl-verify", "chain", env=cli_env)
    assert result.returncode == 2 and result.stdout == b""
    assert b"Error: Missing argument 'DIRECTORY'" in result.stderr


def test_json_after_the_double_dash_belongs_to_the_command(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = cli("asl-capture", "--bogus", "--", "true", "--json", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == b""


def test_public_key_given_as_signing_key_says_so(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    result = cli("asl-capture", "--key", keypair.pub, "--", "true", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "KeyFileError")
    assert b"is a public key" in result.stderr and b"chmod" not in result.stderr


def test_non_key_file_as_signing_key_says_so(cli_env: dict[str, str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    os.chmod(notes, 0o644)
    result = cli("asl-capture", "--key", notes, "--", "true", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert b"not a private key file" in result.stderr and b"chmod" not in result.stderr


def test_too_open_private_key_still_gets_chmod_advice(cli_env: dict[str, str], keypair: KeyPair,
                                                      tmp_path: Path) -> None:
    os.chmod(keypair.key, 0o644)
    result = cli("asl-capture", "--key", keypair.key, "--", "true", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2 and b"chmod 600" in result.stderr


def test_keys_id_on_a_non_key_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    result = cli("asl-keys", "id", notes, env=cli_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "KeyFileError")
    assert b"not a key file" in result.stderr and b"chmod" not in result.stderr


def test_keys_id_on_public_and_private(cli_env: dict[str, str], keypair: KeyPair) -> None:
    for path in (keypair.pub, keypair.key):
        result = cli("asl-keys", "id", path, env=cli_env)
        assert result.returncode == 0 and result.stdout.decode().strip() == keypair.kid.hex()


def test_verify_given_a_file_says_it_is_a_file(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    prov = tmp_path / "prov"
    prov.mkdir()
    chain = prov / "chain.cbor"
    chain.write_bytes(b"")
    result = cli("asl-verify", "chain", chain, "--trust", keypair.pub, env=cli_env)
    assert result.returncode == 2
    assert b"is a file, not a provenance directory; give the directory holding it" in result.stderr
    assert b"no such" not in result.stderr


def test_asl_verify_imports_a_subcommand_only_when_it_is_used() -> None:
    import subprocess
    import sys

    probe = ("import sys; import asl_capture.cli.verify; "
             "print(sorted(m for m in sys.modules if m.startswith(('asl_capture.release', 'asl_capture.audit', "
             "'asl_capture.cli.verify_', 'asl_capture.cli.rebuild', 'asl_capture.rebuild'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


def test_the_lazy_subcommands_are_the_real_ones_with_their_own_schemas(cli_env: dict[str, str]) -> None:
    import click

    from asl_capture.cli import verify, verify_iso
    from asl_capture.release.verify import JSON_SCHEMA

    assert verify.cli.json_schemas == {**verify.JSON_SCHEMAS, **verify_iso.JSON_SCHEMAS, "release": JSON_SCHEMA}
    with click.Context(verify.cli) as ctx:
        assert verify.cli.list_commands(ctx) == ["chain", "iso", "rebuild", "release", "show"]
        for name in verify.cli.list_commands(ctx):
            command = verify.cli.get_command(ctx, name)
            assert command is not None and command.name == name
        assert verify.cli.get_command(ctx, "nosuch") is None
    shown = cli("asl-verify", "--help", env=cli_env)
    assert shown.returncode == 0
    assert all(f"  {name} " in shown.stdout.decode() for name in ("chain", "iso", "rebuild", "release", "show"))


def test_a_lazy_entry_that_names_another_command_is_refused() -> None:
    import click

    group = run.ToolGroup(name="t")
    group.lazy = {"iso": "asl_capture.cli.verify_iso:show_cmd"}
    with click.Context(group) as ctx, pytest.raises(TypeError, match="is not the command 'iso'"):
        group.get_command(ctx, "iso")
