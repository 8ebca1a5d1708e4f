"""Builder tools: package rows, digests, and the comparison a rebuild makes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from asl_capture.builder import Tool, compare, files_digest, package, project_tool


def _tool(package: str = "xorriso", version: str = "1.5.4-4", sha: str = "a" * 64) -> Tool:
    return Tool(tool="xorriso", package=package, version=version, architecture="amd64", sha256=sha)


def test_files_digest_is_sha256sum_output_over_sorted_files(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"two\n")
    (tmp_path / "a").write_bytes(b"one\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    text = subprocess.run(["sha256sum", str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True,
                          check=True).stdout
    paths = [tmp_path / "b", tmp_path / "dir", tmp_path / "link", tmp_path / "a", tmp_path / "gone"]
    assert files_digest(paths) == hashlib.sha256(text).hexdigest()


def test_source_row_round_trips() -> None:
    tool = _tool()
    row = tool.source()
    assert row["uri"] == "deb:xorriso=1.5.4-4?arch=amd64" and row["kind"] == "tool"
    recorded = {**row, "sha256": bytes.fromhex(row["sha256"])}  # as the record holds it
    assert Tool.from_source(recorded) == tool
    assert Tool.from_source({**row, "kind": "deb"}) is None


def test_compare_names_version_file_and_missing_differences() -> None:
    recorded = [_tool(), _tool("mtools", "4.0.32"), _tool("cpio", "2.13", "c" * 64), _tool("gzip")]
    host = [_tool(), _tool("mtools", "4.0.33"), _tool("cpio", "2.13", "d" * 64)]
    diffs = [str(d) for d in compare(recorded, host)]
    assert diffs[0].startswith("mtools: recorded 4.0.32 (amd64), host 4.0.33 (amd64)")
    assert diffs[1].startswith("cpio: recorded 2.13 files") and "modified?" in diffs[1]
    assert diffs[2] == "gzip: recorded 1.5.4-4, host not installed"
    assert compare(recorded[:1], host) == []


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg")
def test_installed_package_row() -> None:
    row = package("gzip", "gzip")
    assert row is not None and row.version and row.architecture and len(row.sha256) == 64
    assert package("gzip", "no-such-package-asl") is None


def test_project_tool_digest_changes_with_a_byte(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "c.pyc").write_bytes(b"ignored")
    before = project_tool(pkg).sha256
    (pkg / "__pycache__" / "c.pyc").write_bytes(b"still ignored")
    assert project_tool(pkg).sha256 == before
    (pkg / "__init__.py").write_text("x = 2\n")
    assert project_tool(pkg).sha256 != before
