"""asl-verify rebuild and the builder record through the CLIs, without building (fast)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli

TOOLS = [
    {"uri": "deb:xorriso=1.5.4-4?arch=amd64", "sha256": "a" * 64, "kind": "tool", "name": "xorriso",
     "version": "1.5.4-4", "via": "tool:xorriso"},
    {"uri": "pkg:asl-capture=0.1.0", "sha256": "b" * 64, "kind": "tool", "name": "asl-capture",
     "version": "0.1.0", "via": "tool:asl-capture"},
]


def _builder_chain(tmp_path: Path, env: dict[str, str]) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in TOOLS))
    out = tmp_path / "tools.jsonl"
    res = cli("asl-capture", "--step", "builder", "--sources", out, "--", "cp", rows, out, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return Path(env["ASL_CAPTURE_DIR"])


def test_show_prints_each_builder_tool_package_and_version(tmp_path: Path, cli_env: dict[str, str]) -> None:
    prov = _builder_chain(tmp_path, cli_env)
    res = cli("asl-verify", "show", prov, env=cli_env)
    assert res.returncode == 0, res.stderr
    assert "builder   2 tool packages: xorriso 1.5.4-4, asl-capture 0.1.0" in res.stdout.decode()
    full = cli("asl-verify", "show", prov, "0", env=cli_env).stdout.decode()
    assert f"deb:xorriso=1.5.4-4?arch=amd64 files sha256 {'a' * 64}" in full
    doc = json.loads(cli("asl-verify", "show", prov, "--json", env=cli_env).stdout)
    assert doc["records"][0]["tools"][0] == {"package": "xorriso", "version": "1.5.4-4",
                                             "uri": "deb:xorriso=1.5.4-4?arch=amd64", "sha256": "a" * 64}


def test_rebuild_refuses_a_record_without_an_iso_step(tmp_path: Path, cli_env: dict[str, str]) -> None:
    prov = _builder_chain(tmp_path, cli_env)
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"not an iso")
    res = cli("asl-verify", "rebuild", "--provenance", prov, "--iso", iso, "--source", tmp_path, "--offline",
              env=cli_env)
    assert res.returncode == 2
    assert res.stderr.decode().strip().splitlines()[-1] == (
        "RebuildError: the record holds no successful iso step: nothing to rebuild")


def test_rebuild_of_a_missing_provenance_directory_is_a_usage_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"x")
    res = cli("asl-verify", "rebuild", "--provenance", tmp_path / "nowhere", "--iso", iso, "--source", tmp_path,
              env=cli_env)
    assert res.returncode == 2
    last = res.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("RebuildError: ") and last.endswith("nowhere: no such provenance directory")
    missing = cli("asl-verify", "rebuild", "--provenance", tmp_path, "--iso", tmp_path / "none.iso",
                  "--source", tmp_path, env=cli_env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr.decode()
