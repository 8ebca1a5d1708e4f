"""``asl-verify iso`` and ``asl-verify show`` on small chains made by asl-capture (fast): bad input is one
line and a documented exit code, never a traceback; ``--json`` and ``--graph`` as documented.

The pipeline's ISO is verified (and tampered with) in ``test_verify_iso.py`` (slow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error


def _chain(work: Path, env: dict[str, str], script: str) -> Path:
    """A chain whose one step, ``iso``, runs ``script`` and records ``out/x.iso`` as its output."""
    (work / "out").mkdir(parents=True, exist_ok=True)
    done = cli("asl-capture", "--step", "iso", "-o", "out/x.iso", "--", "sh", "-c", script, env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    return Path(env["ASL_CAPTURE_DIR"])


def _iso(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path, script: str,
         *args: str) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    work = tmp_path / "work"
    prov = _chain(work, cli_env, script)
    return cli("asl-verify", "iso", work / "out/x.iso", "--provenance", prov, "--trust", keypair.pub, *args,
               env=cli_env), work


def _line(out: bytes, number: int) -> str:
    lines = [ln for ln in out.decode().splitlines() if ln.startswith(f"  {number}. ")]
    assert lines, out.decode()
    return lines[0]


def test_missing_iso_or_provenance_is_exit_2(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    done = cli("asl-verify", "iso", tmp_path / "none.iso", "--provenance", tmp_path, "--trust", keypair.pub,
               env=cli_env)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "ImageError")
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"x")
    done = cli("asl-verify", "iso", iso, "--provenance", tmp_path / "nowhere", "--trust", keypair.pub, env=cli_env)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "StoreError")


def test_a_file_that_is_not_an_iso_fails_naming_it(cli_env: dict[str, str], keypair: KeyPair,
                                                     tmp_path: Path) -> None:
    """The chain records these very bytes (check 2 holds), but they are no ISO 9660 image."""
    done, _work = _iso(cli_env, keypair, tmp_path, "head -c 100000 /dev/zero > out/x.iso", "--quick")
    assert done.returncode == 1, done.stdout + done.stderr
    assert " ok " in _line(done.stdout, 1) and " ok " in _line(done.stdout, 2)
    assert "FAIL" in _line(done.stdout, 3)
    assert_one_line_error(done.stderr, "IsoVerificationError")


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
def test_an_iso_without_the_iso_tools_record_fails_check_3(cli_env: dict[str, str], keypair: KeyPair,
                                                           tmp_path: Path) -> None:
    script = "mkdir -p t && echo hi > t/a && xorriso -outdev out/x.iso -map t / >/dev/null 2>&1"
    done, work = _iso(cli_env, keypair, tmp_path, script, "--quick", "--json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["schema"] == "asl-verify/iso/1" and doc["verdict"] == "failed" and doc["mode"] == "quick"
    assert [c["number"] for c in doc["checks"]] == [1, 2, 3, 7]
    assert [c["ok"] for c in doc["checks"]] == [True, True, False, False]
    assert "asl-iso-contents" in doc["checks"][2]["detail"] and doc["checks"][2]["record"] == 0
    assert doc["iso_sha256"] is not None and doc["image_identity"] is None
    assert doc["error"]["check"] == "iso-files" and doc["error"]["type"] == "IsoVerificationError"
    # a truncated copy of that ISO fails check 2 (and says so), and check 3 names the reader's problem
    iso = work / "out/x.iso"
    cut = tmp_path / "cut.iso"
    cut.write_bytes(iso.read_bytes()[: 40000])
    done = cli("asl-verify", "iso", cut, "--provenance", cli_env["ASL_CAPTURE_DIR"], "--trust", keypair.pub,
               env=cli_env)
    assert done.returncode == 1
    assert "FAIL" in _line(done.stdout, 2) and "another build, or changed bytes" in _line(done.stdout, 2)
    assert "FAIL" in _line(done.stdout, 3)
    assert b"Traceback" not in done.stderr


def test_graph_and_show(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    dot = tmp_path / "g.dot"
    done, _work = _iso(cli_env, keypair, tmp_path, "echo not-an-iso > out/x.iso", "--quick", "--graph", str(dot))
    assert done.returncode == 1  # not an ISO: but the chain verified, so the graph is written
    text = dot.read_text()
    assert text.startswith("digraph build {") and '"iso\\nrecord 0' in text and "out/x.iso (1 entries)" in text
    prov = cli_env["ASL_CAPTURE_DIR"]
    shown = cli("asl-verify", "show", prov, env=cli_env)
    assert shown.returncode == 0
    out = shown.stdout.decode()
    assert "signatures NOT checked" in out and "record 0: iso  ok (exit 0)" in out
    assert "  when      20" in out and "Z .. 20" in out  # UTC ISO 8601
    full = cli("asl-verify", "show", prov, "0", "--trust", keypair.pub, "--json", env=cli_env)
    doc = json.loads(full.stdout)
    assert doc["verified"] is True and doc["records"][0]["step"] == "iso"
    assert doc["records"][0]["started"].endswith("Z") and doc["records"][0]["duration_s"] >= 0
    missing = cli("asl-verify", "show", prov, "7", env=cli_env)
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "UsageError")
