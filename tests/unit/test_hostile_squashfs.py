"""The squashfs reader's bounds (issue 26): hard links read once, block lists read only for a recorded
size, path limits; and forked helpers that keep their errors' class and die with their parent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_capture.audit.limits import Limits
from asl_capture.audit.squashcheck import link_groups
from asl_capture.audit.squashfs import SquashImage
from asl_capture.errors import ImageError, VerificationError
from asl_capture.parallel import run_shards

needs_mksquashfs = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs")


def _image(tmp: Path, src: Path) -> tuple[int, SquashImage]:
    img = tmp / "img.sqfs"
    subprocess.run(["mksquashfs", str(src), str(img), "-noappend", "-no-progress", "-quiet", "-comp", "gzip"],
                   check=True, capture_output=True)
    fd = os.open(img, os.O_RDONLY)
    return fd, SquashImage(fd, name="img")


@needs_mksquashfs
def test_a_thousand_hard_links_are_one_inode_read_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(300_000))
    for i in range(1000):
        os.link(src / "big", src / f"link{i}")
    fd, sq = _image(tmp_path, src)
    try:
        nodes = sq.walk()
        files = [n for n in nodes if n.kind == "f"]
        assert len(files) == 1001 and len({n.ref for n in files}) == 1
        assert len(sq._inodes) == 1  # the inode (and its block list) was read once
        groups = link_groups(nodes)
        assert len(groups) == 1 and len(next(iter(groups))) == 1001
    finally:
        os.close(fd)


@needs_mksquashfs
def test_a_block_list_is_read_only_for_the_recorded_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(500_000))
    fd, sq = _image(tmp_path, src)
    try:
        other = {n.path: n for n in sq.walk(Limits(sizes={b"f": 7}))}
        assert other[b"f"].size == 500_000 and other[b"f"].data is None
        fd2, sq2 = os.dup(fd), SquashImage(fd, name="img")
        os.close(fd2)
        same = {n.path: n for n in sq2.walk(Limits(sizes={b"f": 500_000}))}
        assert same[b"f"].data is not None and len(same[b"f"].data.blocks) == 4
    finally:
        os.close(fd)


@needs_mksquashfs
def test_deep_paths_and_too_many_paths_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    deep = src / "/".join(["d" * 200] * 12)
    deep.mkdir(parents=True)
    fd, sq = _image(tmp_path, src)
    try:
        with pytest.raises(ImageError, match="more than 2000\\) or more path bytes"):
            SquashImage(fd, name="img").walk(Limits(max_path=2000))
        with pytest.raises(ImageError, match="more than 5 paths"):
            SquashImage(fd, name="img").walk(Limits(max_paths=5))
        assert len(sq.walk()) == 13
    finally:
        os.close(fd)


def _fail(part: int) -> int:
    if part == 1:
        raise VerificationError("helper says no", check="squashfs", record=4)
    return part


def test_a_helpers_error_keeps_its_class() -> None:
    with pytest.raises(VerificationError, match="helper says no") as info:
        run_shards([0, 1], _fail)
    assert info.value.check == "squashfs" and info.value.record == 4


def test_sigterm_to_the_parent_leaves_no_helper(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (f"import os, time\nfrom asl_capture.parallel import start_shards\n"
              f"def work(_s):\n    open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n    time.sleep(60)\n"
              f"p = start_shards([0, 1], work)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(Path.cwd())))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.05)
    helpers = [int(p) for p in pids.read_text().split()]
    assert len(helpers) == 2
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = helpers
    while alive and time.monotonic() < deadline:
        alive = [p for p in helpers if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
        time.sleep(0.05)
    assert not alive, alive
