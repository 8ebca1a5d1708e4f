"""Closure (check 5 of asl-verify iso) on chains made by the real asl-capture: origins and exclusions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asl_capture.audit.closure import check_closure, could_exclude
from asl_capture.audit.recorded import Recorded
from asl_capture.errors import VerificationError
from asl_capture.keys import load_trust
from asl_capture.verify import verify_chain
from tests.conftest import AS_ROOT, KeyPair


def test_literal_path_patterns_outside_the_roots_excluded_nothing() -> None:
    assert not could_exclude("out/work", (b"out/work/rootfs", b"pipeline/image.yaml"))
    assert not could_exclude("out/work", (b"out/asl-auth-host-1.0.0.iso",))
    assert could_exclude("out/work", (b".",)) and could_exclude("out/work", (b"out",))
    assert could_exclude("out/work/x", (b"out/work",))
    assert could_exclude("*.pyc", (b"asl_capture",)) and could_exclude("__pycache__", (b"asl_capture",))


def _session(work: Path, keypair: KeyPair, script: str) -> Recorded:
    """An outer capture of ``script`` (which runs nested captures) in ``work``; the verified chain."""
    prov = work.parent / "prov"
    capture = f"{sys.executable} -m asl_capture.cli.capture"
    env = {"PATH": "/usr/bin:/bin", "ASL_CAPTURE_DIR": str(prov), "ASL_CAPTURE_KEY": str(keypair.key), **AS_ROOT,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "CAP": capture}
    done = subprocess.run([*capture.split(), "--", "sh", "-c", script], cwd=work, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    report = verify_chain(prov, load_trust([keypair.pub]))
    return Recorded(prov, report)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    (path / "src.txt").write_text("source\n")
    return path


def test_inputs_from_earlier_outputs_and_the_source_snapshot_close(work: Path, keypair: KeyPair) -> None:
    recorded = _session(work, keypair, "$CAP --step a -i src.txt -o mid -- sh -c 'mkdir mid && cp src.txt mid/'"
                                       " && $CAP --step b -i mid -o out.txt -- cp mid/src.txt out.txt")
    detail, notes = check_closure(recorded)
    assert "2 steps" in detail and "none without an origin" in detail
    assert any(n.startswith("source snapshot: record 2") for n in notes)


def test_an_input_nobody_produced_fails_naming_it(work: Path, keypair: KeyPair) -> None:
    recorded = _session(work, keypair, "$CAP --step a -o mid -- mkdir mid && echo sneaky > planted.txt"
                                       " && $CAP --step b -i planted.txt -o out.txt -- cp planted.txt out.txt")
    with pytest.raises(VerificationError) as info:
        check_closure(recorded)
    assert info.value.check == "closure" and info.value.record == 1
    assert "step 'b' (record 1) input planted.txt: produced by no earlier step" in str(info.value)


def test_a_step_that_excluded_paths_is_reported_naming_the_pattern(work: Path, keypair: KeyPair) -> None:
    recorded = _session(work, keypair, "$CAP --step a --exclude '*.tmp' -i src.txt -o out -- "
                                       "sh -c 'mkdir out && cp src.txt out/ && touch out/x.tmp'")
    _detail, notes = check_closure(recorded)
    assert "exclusions: step 'a' (record 0) excluded paths matching '*.tmp' from its inputs: those paths are not " \
           "recorded, so nothing here vouches for them" in notes
