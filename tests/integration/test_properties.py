"""Issue 13: a property-based test of the whole toolchain.

Hypothesis drives random sequences of operations against one provenance directory: a capture, a
nested capture, a capture killed with SIGKILL at a random moment, a capture on a disk that fills
at a random byte (a small tmpfs, when it can be mounted), and a repair. After each one the chain
must either verify with every completed command recorded, or fail for a named, repairable reason
(a torn or zero-filled tail) whose repair loses no completed record. The example count is bounded
so that this runs in the default suite.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import KeyPair, cli
from tests.integration.records import ONE_LINE_ERROR, read_records
from tests.integration.test_disk_full import fill, leftovers, small_tmpfs

CAPTURE = [sys.executable, "-m", "asl_capture.cli.capture"]
#: Examples per run: small in the default suite; raise it (ASL_PROPERTY_EXAMPLES) to search harder.
EXAMPLES = int(os.environ.get("ASL_PROPERTY_EXAMPLES", "6"))

OPS = st.one_of(
    st.just(("capture",)),
    st.just(("nested",)),
    st.tuples(st.just("kill"), st.floats(min_value=0.0, max_value=1.3)),
    st.tuples(st.just("diskfull"), st.integers(min_value=0, max_value=40_000)),
    st.just(("repair",)),
)


@dataclass
class World:
    env: dict[str, str]
    prov: Path
    work: Path
    pub: Path
    disk: Path | None
    full: float
    completed: set[str] = field(default_factory=set)
    count: int = 0

    def name(self) -> str:
        self.count += 1
        return f"op{self.count}"

    def capture(self, *extra: str, step: str | None = None) -> subprocess.CompletedProcess[bytes]:
        step = step or self.name()
        result = cli("asl-capture", "--step", step, *extra, "--", "sh", "-c", f"echo {step} >> log",
                     env=self.env, cwd=self.work)
        if result.returncode == 0:
            self.completed.add(step)
        else:
            assert b"Traceback" not in result.stderr and ONE_LINE_ERROR.match(result.stderr), result.stderr
        return result


def apply(world: World, op: tuple[object, ...]) -> None:
    kind = op[0]
    if kind == "capture":
        world.capture()
    elif kind == "nested":
        outer, inner = world.name(), world.name()
        result = cli("asl-capture", "--step", outer, "--", *CAPTURE, "--step", inner, "--", "true",
                     env=world.env, cwd=world.work)
        if result.returncode == 0:
            world.completed |= {outer, inner}
        else:  # refused before running (a torn tail left by an earlier operation)
            assert result.returncode == 2, result.stderr
    elif kind == "kill":
        step = world.name()
        proc = subprocess.Popen([*CAPTURE, "--step", step, "--", "sh", "-c", f"echo {step} >> log"],
                                env=world.env, cwd=world.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(op[1]) * world.full)  # type: ignore[arg-type]
        proc.kill()
        if proc.wait() == 0:
            world.completed.add(step)
    elif kind == "diskfull":
        if world.disk is None:
            world.capture()
            return
        filler = fill(world.disk, 0)
        filler.unlink()
        st_ = os.statvfs(world.disk)
        free = int(op[1])  # type: ignore[call-overload]
        with open(filler, "wb") as handle, contextlib.suppress(OSError):
            handle.write(bytes(max(st_.f_bavail * st_.f_frsize - free, 0)))
        try:
            result = world.capture()
            assert result.returncode in (0, 2, 125), result.stderr
            assert leftovers(world.prov) == []
        finally:
            filler.unlink()
    else:
        result = cli("asl-chain", "repair", world.prov, env=world.env)
        assert result.returncode in (0, 2), result.stderr
        assert b"Traceback" not in result.stderr


def check(world: World) -> None:
    """The chain verifies with every completed command, or names a repairable tail that repair
    removes without losing a completed record."""
    chain_file = world.prov / "chain.cbor"
    if not chain_file.exists() or chain_file.stat().st_size == 0:  # nothing appended yet
        assert not world.completed
        return
    verify = cli("asl-verify", "chain", world.prov, "--trust", world.pub, env=world.env)
    if verify.returncode != 0:
        assert verify.returncode == 1, verify.stderr
        assert (b"torn tail" in verify.stderr or b"zero-filled tail" in verify.stderr
                or b"an interrupted append left its signed checkpoint" in verify.stderr), verify.stderr
        repaired = cli("asl-chain", "repair", world.prov, env=world.env)
        assert repaired.returncode == 0, repaired.stderr
        verify = cli("asl-verify", "chain", world.prov, "--trust", world.pub, env=world.env)
        assert verify.returncode == 0, verify.stderr
    steps = {r.step for r in read_records(world.prov, world.pub)}
    assert world.completed <= steps, world.completed - steps


def test_random_operations_never_lose_a_completed_record(cli_env: dict[str, str], keypair: KeyPair,
                                                         tmp_path: Path) -> None:
    disk: Path | None = None
    mounts = []
    if os.geteuid() == 0:
        context = small_tmpfs(tmp_path / "disk", size="4m")
        try:
            disk = context.__enter__()
            mounts.append(context)
        except pytest.skip.Exception:
            disk = None
    base = disk if disk is not None else tmp_path
    work = tmp_path / "work"
    work.mkdir()
    start = time.monotonic()
    assert cli("asl-capture", "--provenance", tmp_path / "warm", "--", "true", env=cli_env, cwd=work).returncode == 0
    full = time.monotonic() - start
    examples = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(OPS, min_size=2, max_size=5))
    def run(ops: list[tuple[object, ...]]) -> None:
        nonlocal examples
        examples += 1
        prov = base / f"prov{examples}"
        env = {**cli_env, "ASL_CAPTURE_DIR": str(prov)}
        world = World(env=env, prov=prov, work=work, pub=keypair.pub, disk=disk, full=full)
        for op in ops:
            apply(world, op)
            check(world)

    try:
        run()
    finally:
        for context in mounts:
            context.__exit__(None, None, None)
    assert examples >= EXAMPLES
