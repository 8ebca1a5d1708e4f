"""``asl-verify iso`` on inputs a hostile publisher chooses (fast): a FIFO, a device, huge sparse files,
and an empty provenance directory are refused with one line, in bounded time and memory (issue 26)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
MAX_RSS_KB = 200 * 1024


#: Runs the command given, then prints on stderr's last line the peak RSS (KiB) of it and the helpers it
#: reaped (``wait4`` of that one child: no other process of the test counts).
_WRAP = ("import os, sys\n"
         "pid = os.fork()\n"
         "if pid == 0:\n"
         "    os.execv(sys.argv[1], sys.argv[1:])\n"
         "_p, status, usage = os.wait4(pid, 0)\n"
         "sys.stderr.write(f'\\nRSS {usage.ru_maxrss}\\n')\n"
         "sys.exit(os.waitstatus_to_exitcode(status))\n")


def _measured(args: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes, int]:
    """Run ``asl-verify`` with ``args``; (exit code, stdout, stderr, peak RSS in KiB of it and its helpers)."""
    full = dict(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _WRAP, sys.executable, "-m", "asl_capture.cli.verify", *args],
                          env=full, capture_output=True, timeout=60, check=False)  # a generous guard only
    err, _, rss = done.stderr.rpartition(b"\nRSS ")
    return done.returncode, done.stdout, err, int(rss)


@pytest.fixture
def small_chain(cli_env: dict[str, str], tmp_path: Path) -> Path:
    """A chain whose step ``iso`` recorded a 100 kB ``out/x.iso``."""
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    done = cli("asl-capture", "--step", "iso", "-o", "out/x.iso", "--", "sh", "-c",
               "head -c 100000 /dev/zero > out/x.iso", env=cli_env, cwd=work)
    assert done.returncode == 0, done.stderr
    return Path(cli_env["ASL_CAPTURE_DIR"])


@pytest.mark.parametrize("quick", [False, True])
def test_a_fifo_or_a_device_is_refused_before_it_is_opened(cli_env: dict[str, str], keypair: KeyPair,
                                                           small_chain: Path, tmp_path: Path, quick: bool) -> None:
    fifo = tmp_path / "x.iso"
    os.mkfifo(fifo)
    for target, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        args = ["iso", str(target), "--provenance", str(small_chain), "--trust", str(keypair.pub)]
        code, _out, err, _rss = _measured(args + (["--quick"] if quick else []), cli_env)
        assert code == 2, err
        assert_one_line_error(err, "ImageError")
        assert f"not a regular file ({kind}): refused" in err.decode()


@pytest.mark.parametrize("size", [20 << 30, 2 << 40])
@pytest.mark.parametrize("quick", [False, True])
def test_a_huge_sparse_file_fails_check_2_without_being_hashed(cli_env: dict[str, str], keypair: KeyPair,
                                                               small_chain: Path, tmp_path: Path, size: int,
                                                               quick: bool) -> None:
    big = tmp_path / "work/out/x.iso"
    with big.open("r+b") as f:
        f.truncate(size)
    args = ["iso", str(big), "--provenance", str(small_chain), "--trust", str(keypair.pub)]
    code, out, err, rss = _measured(args + (["--quick"] if quick else []), cli_env)
    assert code == 1, err
    line2 = next(ln for ln in out.decode().splitlines() if ln.startswith("  2. "))
    assert f"{size} bytes, but the out/x.iso" in line2 and "is 100000 bytes" in line2 and "not hashed" in line2
    assert_one_line_error(err, "IsoVerificationError")
    assert 0 < rss < MAX_RSS_KB, rss


def test_nothing_is_read_from_the_image_with_an_empty_provenance_directory(cli_env: dict[str, str],
                                                                         keypair: KeyPair, tmp_path: Path) -> None:
    iso = tmp_path / "bomb.iso"
    iso.write_bytes(os.urandom(1 << 16))
    empty = tmp_path / "prov"
    empty.mkdir()
    code, _out, err, rss = _measured(["iso", str(iso), "--provenance", str(empty), "--trust", str(keypair.pub)],
                                     cli_env)
    assert code == 2 and b"Traceback" not in err and 0 < rss < MAX_RSS_KB
