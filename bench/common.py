"""Helpers shared by the benchmarks: peer installation, a key both tools accept, result lines."""

from __future__ import annotations

import compileall
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


def ensure_in_toto() -> None:
    """Install in-toto 3.1.0 from PyPI if ``in-toto-run`` is missing (the bench only needs it)."""
    if shutil.which("in-toto-run") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "in-toto==3.1.0"], check=True)


def compile_package() -> None:
    """Write the bytecode of ``asl_capture`` as ``pip install`` of a wheel does (and as in-toto's own
    install has). An editable install never writes it, and with ``PYTHONDONTWRITEBYTECODE`` set
    every start would compile the package from source: a start-up figure about the install, not the
    tool."""
    import asl_capture

    compileall.compile_dir(str(Path(asl_capture.__file__).parent), quiet=1)


def make_key(work: Path) -> Path:
    """An Ed25519 PKCS#8 PEM key (mode 0600) that both in-toto-run and asl-capture accept."""
    key = work / "ed25519.pem"
    if not key.exists():
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
        key.chmod(0o600)
    return key


def summary(name: str, values: list[float], *, width: int = 34, digits: int = 3) -> str:
    """One result line: ``name  min X  median Y  max Z  (n=N)``."""
    return (f"{name:<{width}} min {min(values):7.{digits}f}  median {statistics.median(values):7.{digits}f}  "
            f"max {max(values):7.{digits}f}  (n={len(values)})")
