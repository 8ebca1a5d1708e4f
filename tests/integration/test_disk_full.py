"""Issue 13 item 10: a full disk at every write point of a capture gives a one-line error and a
documented exit code, leaves nothing half-written behind, and the next capture works.

The provenance directory (and the development key's directory) live on a small tmpfs mounted for
the test; a filler file leaves exactly N pages free, for every N from 0 up to what a whole capture
writes, so the disk fills at each write point in turn.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asl_capture import chain
from tests.conftest import KeyPair, cli
from tests.integration.records import ONE_LINE_ERROR

PAGE = 4096
#: What asl-capture says when the step's record was written but marks the step failed.
RECORDED_FAILURE = re.compile(rb"\Aasl-capture: [^\n]+ \(recorded as seq \d+, status failed\)\n\Z")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``; skips the test when mounting is not possible here."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, free_pages: int) -> Path:
    """Leave exactly ``free_pages`` pages free on ``disk`` with a filler file; return it."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(disk)
    room = st.f_bavail * st.f_frsize - free_pages * PAGE
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        handle.write(bytes(max(room, 0)))
    return filler


def leftovers(prov: Path) -> list[Path]:
    """Temporary files, and objects whose name is not the SHA-256 of their bytes."""
    bad = [p for p in prov.rglob(".*") if p.is_file()]
    objects = prov / "objects" / "sha256"
    if objects.is_dir():
        for path in objects.rglob("*"):
            if path.is_file() and not path.name.startswith(".") and (
                    hashlib.sha256(path.read_bytes()).hexdigest() != path.parent.name + path.name):
                bad.append(path)
    return bad


def _verify(prov: Path, pub: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return cli("asl-verify", "chain", prov, "--trust", pub, env=env)


@pytest.mark.parametrize(("output", "attach"), [(0, False), (40_000, False), (0, True)],
                         ids=["quiet-step", "step-writing-40k", "step-attaching-20k"])
def test_disk_full_at_every_write_point(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path,
                                        output: int, attach: bool) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        prov = disk / "prov"
        cli_env["ASL_CAPTURE_DIR"] = str(prov)
        work = tmp_path / "work"
        work.mkdir()
        (work / "input").write_bytes(b"i" * 1000)
        step = ["--", "sh", "-c", f"head -c {output} /dev/zero; echo x > out; echo ran >> log"]
        if attach:  # a new 20 kB object each run, streamed into the store
            step = ["--attach", "att", "--", "sh", "-c", "head -c 20000 /dev/urandom > att; echo ran >> log"]
        assert cli("asl-capture", *step, env=cli_env, cwd=work).returncode == 0  # a chain to protect
        recorded = 1
        outcomes: set[int] = set()
        successes = 0
        for free in range(0, 64):
            filler = fill(disk, free)
            before = (prov / "chain.cbor").read_bytes()
            runs = (work / "log").read_text().count("ran")
            result = cli("asl-capture", *step, env=cli_env, cwd=work)
            outcomes.add(result.returncode)
            ran = (work / "log").read_text().count("ran") - runs
            assert result.returncode in (0, 2, 125), (free, result.returncode, result.stderr)
            if result.returncode:  # an error, or a failure the step's record holds (an attachment not stored)
                assert b"Traceback" not in result.stderr, result.stderr
                assert ONE_LINE_ERROR.match(result.stderr) or RECORDED_FAILURE.match(result.stderr), result.stderr
            if result.returncode == 2:
                assert ran == 0, "refused, yet the command ran"
            assert leftovers(prov) == [], free
            after = (prov / "chain.cbor").read_bytes()
            assert chain.read(prov / "chain.cbor").torn is None, free
            appended = len(chain.read(prov / "chain.cbor").items) - recorded
            assert appended in (0, 1) and after.startswith(before)
            if result.returncode == 125 and appended:
                assert b"was appended" in result.stderr or RECORDED_FAILURE.match(result.stderr), result.stderr
            recorded += appended
            filler.unlink()
            verify = _verify(prov, keypair.pub, cli_env)
            # checks 1-5 hold for every record; only a step recorded as failed (its attachment not
            # stored) may fail check 6, which comes after them
            assert verify.returncode == 0 or (attach and verify.stderr.startswith(b"VerificationError: [status]")
                                              and b"is failed" in verify.stderr), (free, verify.stderr)
            successes = successes + 1 if result.returncode == 0 else 0
            if successes == 2:  # with room for a whole capture twice over, more room changes nothing
                break
        assert 125 in outcomes and 0 in outcomes, outcomes
        again = cli("asl-capture", *step, env=cli_env, cwd=work)
        assert again.returncode == 0, again.stderr
        final = _verify(prov, keypair.pub, cli_env)
        assert final.returncode == 0 or (attach and final.stderr.startswith(b"VerificationError: [status]"))


def test_disk_full_while_creating_the_development_key(cli_env: dict[str, str], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", size="64k") as disk:
        env = {k: v for k, v in cli_env.items() if k != "ASL_CAPTURE_KEY"}
        env["XDG_CONFIG_HOME"] = str(disk / "xdg")
        env["ASL_CAPTURE_DIR"] = str(tmp_path / "prov")
        (disk / "xdg" / "asl-capture").mkdir(parents=True, mode=0o700)
        filler = fill(disk, 0)
        marker = tmp_path / "ran"
        result = cli("asl-capture", "--", "touch", marker, env=env, cwd=tmp_path)
        assert result.returncode == 2
        assert ONE_LINE_ERROR.match(result.stderr) and result.stderr.startswith(b"KeyFileError: "), result.stderr
        assert not marker.exists()
        assert list((disk / "xdg" / "asl-capture").iterdir()) == []  # no empty key left to block the next try
        filler.unlink()
        result = cli("asl-capture", "--", "touch", marker, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert marker.exists()
