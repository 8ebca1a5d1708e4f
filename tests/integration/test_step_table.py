"""The step graph is declared once (pipeline/steps.conf): build.sh runs it, common.sh enforces it."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "pipeline" / "steps.conf"


def rows() -> list[tuple[str, str, str]]:
    out = []
    for line in TABLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            step, role, value = line.split(None, 2)
            out.append((step, role, value))
    return out


def steps() -> list[str]:
    return list(dict.fromkeys(step for step, _r, _v in rows()))


def test_every_step_has_a_script_and_known_roles() -> None:
    assert steps() == ["builder", "rootfs", "overlay", "bootloader", "iso"]
    for step in steps():
        assert (REPO / "pipeline" / "steps" / f"{step}.sh").is_file()
    assert {role for _s, role, _v in rows()} <= {"in", "out", "exclude", "sources", "attach"}


def test_every_work_input_is_an_earlier_steps_output() -> None:
    made: set[str] = set()
    for step in steps():
        for _s, role, value in (r for r in rows() if r[0] == step):
            if role == "in" and value.startswith("$WORK/"):
                assert any(value == m or value.startswith(m + "/") for m in made), (step, value)
        made |= {v for s, r, v in rows() if s == step and r == "out"}


def test_the_code_computing_the_build_manifest_is_an_input_of_the_iso_step() -> None:
    iso_inputs = {v for s, r, v in rows() if s == "iso" and r == "in"}
    assert {"pipeline/tools/buildmanifest.py", "asl_capture"} <= iso_inputs
    assert "PYTHONPATH=$ASL_REPO" in (REPO / "pipeline" / "steps" / "iso.sh").read_text()


def _copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo with space"
    for part in ("pipeline", "asl_capture"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def test_build_sh_passes_the_tables_options(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    stub = tmp_path / "capture-stub"
    log = tmp_path / "calls"
    stub.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> "{log}"\necho END >> "{log}"\n')
    stub.chmod(0o755)
    env = {**os.environ, "ASL_CAPTURE": str(stub), "SOURCE_DATE_EPOCH": "1700000000"}
    env.pop("ASL_CAPTURE_DIR", None)
    done = subprocess.run(["sh", "pipeline/build.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    calls = [c.strip("\n").split("\n") for c in log.read_text().split("END\n") if c.strip()]
    assert [c[c.index("--step") + 1] for c in calls] == steps()
    for call in calls:
        step = call[call.index("--step") + 1]
        args = call[: call.index("--")]
        pairs = set(itertools.pairwise(args))
        for needed in (f"pipeline/steps/{step}.sh", "pipeline/steps/common.sh", "pipeline/steps.conf"):
            assert ("-i", needed) in pairs
        assert call[call.index("--") + 1:] == ["sh", f"pipeline/steps/{step}.sh"]
    iso = calls[-1]
    assert ("-i", "asl_capture") in set(itertools.pairwise(iso))
    assert any(a == "-o" and b.startswith("out/asl-auth-host-") and b.endswith(".iso")
               for a, b in itertools.pairwise(iso))
    builder = calls[0]
    assert ("--exclude", "*.pyc") in set(itertools.pairwise(builder))  # not expanded as a glob


def test_a_step_refuses_to_start_before_the_step_that_makes_its_input(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    for step, maker in (("overlay", "rootfs"), ("iso", "overlay")):
        done = subprocess.run(["sh", f"pipeline/steps/{step}.sh"], cwd=repo, capture_output=True, text=True,
                              check=False, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
        assert done.returncode == 2
        assert f"run the {maker} step first" in done.stderr, done.stderr


def test_an_unknown_step_is_refused(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    done = subprocess.run(["sh", "pipeline/build.sh"], cwd=repo, capture_output=True, text=True, check=False,
                          env={**os.environ, "ASL_STEPS": "bogus", "SOURCE_DATE_EPOCH": "1700000000"})
    assert done.returncode == 2 and "unknown step bogus" in done.stderr
