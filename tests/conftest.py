"""Shared fixtures: real Ed25519 keys generated per test, and a clean environment for the CLIs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from asl_capture.keys import generate


@dataclass(frozen=True)
class KeyPair:
    key: Path
    pub: Path
    kid: bytes


@pytest.fixture
def keypair(tmp_path: Path) -> KeyPair:
    """A fresh unencrypted Ed25519 key pair in ``tmp_path/keys``."""
    key, pub, kid = generate("signer", directory=tmp_path / "keys")
    return KeyPair(key, pub, kid)


@pytest.fixture
def other_keypair(tmp_path: Path) -> KeyPair:
    """A second, untrusted key pair."""
    key, pub, kid = generate("other", directory=tmp_path / "other-keys")
    return KeyPair(key, pub, kid)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user (the build user, nobody) can reach: pytest's own tmp_path sits
    below a mode-0700 directory."""
    path = Path(tempfile.mkdtemp(prefix="asl-shared-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cli_env(tmp_path: Path, keypair: KeyPair) -> dict[str, str]:
    """Environment for running the CLIs: signing key set, config dir isolated, no inherited capture."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASL_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env["ASL_CAPTURE_KEY"] = str(keypair.key)
    env["ASL_CAPTURE_DIR"] = str(tmp_path / "prov")
    # pytest's tmp_path sits below a mode-0700 directory no build user can reach: these tests keep the
    # command as root; tests/integration/test_steps_unprivileged.py tests the build user.
    env.update(AS_ROOT)
    return env


def run_without_dac(argv: Sequence[str], *, what: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; as root, without the capabilities that let root read and list anything (so a
    mode-0 file or directory is really unreadable). Skips the test when setpriv(1) is missing."""
    argv = list(argv)
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip(f"running as root and setpriv(1) is missing: cannot make {what} unreadable")
        drop = "-dac_override,-dac_read_search"
        argv = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def cli(tool: str, *args: str | os.PathLike[str], env: dict[str, str], cwd: Path | None = None,
        stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run one of the console scripts (as ``python -m``, so no install of the scripts is assumed)."""
    module = {
        "asl-capture": "asl_capture.cli.capture",
        "asl-verify": "asl_capture.cli.verify",
        "asl-keys": "asl_capture.cli.keys",
        "asl-chain": "asl_capture.cli.chain",
        "asl-release": "asl_capture.cli.release",
        "asl-admin": "asl_host.admin",
        "asl-rescue": "asl_host.rescue",
        "asl-auth-host": "asl_host.authhost",
    }[tool]
    argv: Sequence[str | os.PathLike[str]] = [sys.executable, "-m", module, *args]
    return subprocess.run(argv, env=env, cwd=cwd, input=stdin, capture_output=True, timeout=timeout, check=False)


#: For tests whose steps run in pytest's tmp_path (below a mode-0700 directory no build user can
#: reach): the command stays root, as with --as-root. The build user is tested on its own.
AS_ROOT = {"ASL_CAPTURE_USER": "root"}

NOBODY = 65534
DEBIAN_PYTHON = Path("/usr/bin/python3")


def unprivileged_python(scratch: Path) -> tuple[list[str], dict[str, str]]:
    """The argv prefix (ending in a Python interpreter) and the environment additions that run this
    repository's packages as an unprivileged user (uid 65534) when the tests run as root.

    The interpreter running the tests and its site-packages may sit where that user cannot read (a
    pyenv under /root, a clone below a mode-0700 directory), so the user runs Debian's
    /usr/bin/python3 with the Debian packages pipeline/install-deps.sh installs and a world-readable
    copy of ``asl_capture`` and ``asl_host`` in ``scratch``: what an auditor's machine with Debian's
    packages has. Not root: this interpreter as it is. Skips when setpriv(1) or Debian's python3 is missing.
    """
    if os.geteuid() != 0:
        return [sys.executable], {}
    setpriv = shutil.which("setpriv")
    if setpriv is None or not DEBIAN_PYTHON.is_file():
        pytest.skip("running as root without setpriv(1) or /usr/bin/python3: cannot run as an unprivileged user")
    repo = Path(__file__).resolve().parents[1]
    lib = scratch / "pylib"
    for package in ("asl_capture", "asl_host"):
        if (repo / package).is_dir():
            shutil.copytree(repo / package, lib / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(["chmod", "-R", "a+rX", str(scratch)], check=True)
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
              str(DEBIAN_PYTHON)]
    return prefix, {"PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"}
