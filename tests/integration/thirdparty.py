"""A real third-party C project for the tests: Debian's zlib source package.

Downloaded once with apt-get (from a private deb-src list, so the machine's apt state is left
alone; apt checks every file against the signed Sources index) into a cache kept across runs, and
unpacked fresh for each test that asks for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

SOURCE = "zlib"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asl-capture-tests" / "zlib"
_LIST = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _apt(*args: str, cwd: Path) -> None:
    options = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={CACHE / 'sources'}",
               "-o", f"Dir::State::Lists={CACHE / 'lists'}", "-o", "Debug::NoLocking=1", "-q"]
    done = subprocess.run(["apt-get", *options, *args], cwd=cwd, capture_output=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"apt-get {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()[-500:]}")


def orig_tarball() -> Path:
    """The upstream tarball of Debian's zlib source package (downloaded on first use)."""
    found = sorted(CACHE.glob("download/zlib_*.orig.tar.*"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is missing: cannot fetch the zlib source package")
    for sub in ("sources", "lists/partial", "download"):
        (CACHE / sub).mkdir(parents=True, exist_ok=True)
    (CACHE / "sources" / "deb-src.sources").write_text(_LIST)
    _apt("update", cwd=CACHE)
    _apt("source", "--download-only", SOURCE, cwd=CACHE / "download")
    found = sorted(CACHE.glob("download/zlib_*.orig.tar.*"))
    assert found, "apt-get source gave no orig tarball"
    return found[-1]


def unpack(into: Path) -> Path:
    """A fresh copy of zlib's upstream source tree under ``into``; its path."""
    with tarfile.open(orig_tarball()) as archive:
        archive.extractall(into, filter="data")
    (tree,) = [p for p in into.iterdir() if p.is_dir() and p.name.startswith("zlib-")]
    return tree
