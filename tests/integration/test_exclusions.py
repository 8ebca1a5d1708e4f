"""Issue 13 item 14: exclusions are recorded, a missing --root is refused, the provenance directory
is excluded however it is reached."""

from __future__ import annotations

import os
from pathlib import Path

from asl_capture.format import Manifest
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error, object_bytes, read_records


def _manifest(prov: Path, digest: bytes) -> Manifest:
    return Manifest.from_cbor(object_bytes(prov, digest))


def test_exclusion_patterns_are_recorded_in_every_manifest(tmp_path: Path, cli_env: dict[str, str],
                                                             keypair: KeyPair) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").write_text('[tool.asl-capture]\nexclude = ["*"]\n')
    (work / "a.c").write_text("int x;\n")
    prov = tmp_path / "prov"
    result = cli("asl-capture", "--exclude", "*.o", "--", "sh", "-c", "echo > out.o", env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr
    record = read_records(prov, keypair.pub)[-1]
    for digest in (record.inputs.manifest, record.outputs.manifest, record.outputs.before):
        assert _manifest(prov, digest).exclude == ("*.o", "*")


def test_no_exclusions_no_exclude_field(tmp_path: Path, cli_env: dict[str, str], keypair: KeyPair) -> None:
    work = tmp_path / "work"
    work.mkdir()
    prov = tmp_path / "prov"
    assert cli("asl-capture", "--", "true", env=cli_env, cwd=work).returncode == 0
    inputs = read_records(prov, keypair.pub)[-1].inputs
    assert b"exclude" not in object_bytes(prov, inputs.manifest)


def test_a_missing_root_is_refused_before_the_command_runs(tmp_path: Path, cli_env: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    result = cli("asl-capture", "--root", tmp_path / "nope", "--", "touch", marker, env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "UsageError")
    assert not marker.exists()


def test_a_provenance_directory_reached_through_a_symlink_is_excluded(tmp_path: Path, cli_env: dict[str, str],
                                                                        keypair: KeyPair) -> None:
    work = tmp_path / "work"
    (work / "prov").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(work / "prov")
    cli_env["ASL_CAPTURE_DIR"] = str(link)
    for _ in range(2):
        result = cli("asl-capture", "--", "true", env=cli_env, cwd=work)
        assert result.returncode == 0, result.stderr
    inputs = read_records(work / "prov", keypair.pub)[-1].inputs
    paths = {e.path for e in _manifest(work / "prov", inputs.manifest).entries}
    assert paths == {b"."}, paths


def test_the_working_directory_as_provenance_directory_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    marker = tmp_path / "ran"
    result = cli("asl-capture", "--provenance", ".", "--", "touch", marker, env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "UsageError")
    assert not marker.exists()
    assert not os.path.exists(tmp_path / "chain.cbor")
    assert not os.path.exists(tmp_path / "objects")


def test_paths_longer_than_path_max_are_captured(tmp_path: Path, cli_env: dict[str, str], keypair: KeyPair) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fd = os.open(work, os.O_RDONLY)
    try:
        for _ in range(25):  # 25 x 201 bytes: well past PATH_MAX (4096)
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)
    result = cli("asl-capture", "--", "true", env=cli_env, cwd=work)
    assert result.returncode == 0, result.stderr[-300:]
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    manifest = _manifest(prov, read_records(prov, keypair.pub)[-1].inputs.manifest)
    [leaf_entry] = [e for e in manifest.entries if e.path.endswith(b"/leaf")]
    assert len(leaf_entry.path) > 5000 and leaf_entry.kind == "f"
    assert cli("asl-verify", "chain", prov, "--trust", keypair.pub, env=cli_env).returncode == 0
