"""Fixtures and helpers for the pipeline and boot tests (real tools: mmdebstrap, grub, qemu TCG).

``pipeline_build`` builds the ISO once per session, under ``asl-capture`` with a throw-away signing
key, in a copy of the working tree (so ``out/`` of the checkout is left alone). Set
``ASL_TEST_REPO_BUILD=DIR`` to reuse a tree that was already built there (``DIR/out/*.iso``).
Import the fixture into ``tests/conftest.py`` (``from tests.integration.pipeline_fixtures import
pipeline_build``); the build is cached at module level, so importing it into test modules directly
also builds only once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION_RE = re.compile(r"^version:\s*(\S+)", re.M)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
_SKIP_TOP = {"out", ".git", "provenance", ".venv"}
_SKIP_ANY = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


@dataclass(frozen=True)
class Build:
    """One pipeline build: its tree, ISO, provenance directory, trust key and wall time."""

    repo: Path
    iso: Path
    provenance: Path
    trust: Path | None
    seconds: float
    log: str
    #: The offline roots directory (private keys included) whose root set and policy.hash the image pins.
    authority: Path | None = None


@dataclass
class Boot:
    """One qemu boot: the serial console lines, how long it ran, when READY appeared."""

    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    ready_after: float | None = None
    exit_code: int | None = None

    def checks(self) -> dict[str, str]:
        """``ASL-CHECK name rest`` lines as ``{name: rest}``."""
        out: dict[str, str] = {}
        for line in self.lines:
            if line.startswith("ASL-CHECK "):
                name, _, rest = line[len("ASL-CHECK "):].partition(" ")
                out[name] = rest.strip()
        return out

    def text(self) -> str:
        return "\n".join(self.lines)


def source_date_epoch(repo: Path = REPO) -> str:
    """The pipeline's default: the last commit's time, or its fixed fallback."""
    res = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%ct"], capture_output=True, text=True)
    value = res.stdout.strip()
    return value if res.returncode == 0 and value.isdigit() else "1735689600"


def copy_tree(dest: Path, src: Path = REPO) -> Path:
    """Copy the working tree (without build outputs, caches and .git) to ``dest``."""

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts  # "./out/x" -> ("out", "x"): Path drops the leading "."
        skipped = (bool(parts) and parts[0] in _SKIP_TOP) or any(p in _SKIP_ANY for p in parts)
        return None if skipped or info.name.endswith(".pyc") else info

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f"{dest.name}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(str(src), arcname=".", filter=skip)
    with tarfile.open(archive) as tar:
        tar.extractall(dest)
    archive.unlink()
    return dest


def iso_name(repo: Path) -> str:
    text = (repo / "pipeline" / "image.yaml").read_text(encoding="utf-8")
    m = VERSION_RE.search(text)
    assert m, "pipeline/image.yaml has no version"
    return f"asl-auth-host-{m.group(1)}.iso"


def run_build(repo: Path, *, env: Mapping[str, str] | None = None, umask: int = 0o022,
              captured: bool = True, key_dir: Path | None = None, steps: str | None = None) -> Build:
    """Run ``pipeline/build.sh`` in ``repo`` (captured with a fresh key, or bare; ``steps``: only these)."""
    full = dict(os.environ)
    for var in ("ASL_CAPTURE_DIR", "ASL_CAPTURE_PARENT", "ASL_CAPTURE_KEY", "ASL_STEPS"):
        full.pop(var, None)
    full.setdefault("SOURCE_DATE_EPOCH", source_date_epoch())
    full.update(env or {})
    if steps is not None:
        full["ASL_STEPS"] = steps
    trust: Path | None = None
    if captured:
        from asl_capture.keys import generate

        key, trust, _kid = generate("pipeline-test", directory=key_dir or repo.parent / f"{repo.name}-keys")
        full["ASL_CAPTURE_KEY"] = str(key)
        full["ASL_CAPTURE"] = f"{sys.executable} -m asl_capture.cli.capture"
    else:
        full["ASL_CAPTURE_BARE"] = "1"
    t0 = time.monotonic()
    old = os.umask(umask)
    try:
        # captured: exactly the README's main job, `asl-capture -- ./pipeline/build.sh`, whose record
        # nests the four step records (the project's pyproject.toml puts the chain in out/provenance)
        argv = [sys.executable, "-m", "asl_capture.cli.capture", "--", "./pipeline/build.sh"] if captured else [
            "sh", "pipeline/build.sh"]
        res = subprocess.run(argv, cwd=repo, env=full, capture_output=True, text=True)
    finally:
        os.umask(old)
    seconds = time.monotonic() - t0
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"build failed ({res.returncode}):\n{log[-4000:]}"
    return Build(repo=repo, iso=repo / "out" / iso_name(repo), provenance=repo / "out" / "provenance",
                 trust=trust, seconds=seconds, log=log)


_BUILDS: dict[str, Build] = {}


@pytest.fixture(scope="session")
def pipeline_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The ISO built once per session (captured), in a copy of the working tree."""
    if "main" not in _BUILDS:
        reuse = os.environ.get("ASL_TEST_REPO_BUILD")
        if reuse:
            repo = Path(reuse)
            trust = os.environ.get("ASL_TEST_REPO_TRUST")  # the build's public key, when its tests need one
            authority = repo.parent / "authority"  # where the fixture puts it beside a tree it built
            _BUILDS["main"] = Build(repo=repo, iso=repo / "out" / iso_name(repo),
                                    provenance=repo / "out" / "provenance", trust=Path(trust) if trust else None,
                                    seconds=0.0, log="",
                                    authority=authority if (authority / "roots.cbor").is_file() else None)
        else:
            # a directory every user can enter (the _apt user too), unlike pytest's 0700 temporary tree,
            # so builds under umask 077 in a root-only directory are compared with a build where apt
            # could have dropped privileges; a git checkout with one commit, so the record names it
            top = Path(tempfile.mkdtemp(prefix="asl-pipeline-"))
            top.chmod(0o755)
            atexit.register(shutil.rmtree, top, True)
            authority = make_test_authority(top / "authority")
            repo = commit_tree(install_trust(copy_tree(top / "a"), authority))
            _BUILDS["main"] = replace(run_build(repo), authority=authority)
    return _BUILDS["main"]


def commit_tree(repo: Path) -> Path:
    """Make ``repo`` a git checkout holding its files in one commit (dated SOURCE_DATE_EPOCH)."""
    if (repo / ".git").exists() or (repo / ".git").is_symlink():
        raise AssertionError(f"{repo} is already a git checkout")
    date = f"@{source_date_epoch()} +0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull}
    for argv in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=pipeline-test", "-c", "user.email=test@invalid", "commit", "-q", "-m", "tree"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env, capture_output=True)
    return repo


def make_test_authority(directory: Path) -> Path:
    """Offline roots for the test image (3 keys, threshold 2) with the example policy pinned beside them."""
    if not (directory / "roots.cbor").is_file():
        from asl_host.actions import RootsDir, init_roots, pin_policy
        from asl_host.policyfile import load_policy

        init_roots(directory, count=3, threshold=2, passphrase=None)
        pin_policy(RootsDir(directory), load_policy(REPO / "docs" / "examples" / "policy.yaml"))
    return directory


def install_trust(repo: Path, authority: Path) -> Path:
    """Point the image of the tree ``repo`` at ``authority``'s root set and policy.hash (the trust defaults)."""
    dest = repo / "overlay" / "etc" / "asl-auth-host"
    for name in ("roots.cbor", "policy.hash"):
        shutil.copyfile(authority / name, dest / name)
    return repo


def make_data_disk(path: Path, *, label: str = "ASL-DATA", test_mode: bool = True, size_mb: int = 64,
                   seed: Path | None = None) -> Path:
    """A raw ext4 image labelled ``label`` holding the tree ``seed``; ``test_mode`` puts ``.asl-test-mode``
    on it (no root mount needed)."""
    seed = seed or path.with_suffix(".seed")
    seed.mkdir(exist_ok=True)
    if test_mode:
        (seed / ".asl-test-mode").write_text("print checks and power off\n", encoding="utf-8")
    with path.open("wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(seed), str(path)], check=True)
    return path


def qemu_argv(iso: Path, *, disk: Path | None, uefi: bool, vars_file: Path | None) -> list[str]:
    """qemu (TCG) with the ISO as CD-ROM, the data disk on virtio, a restricted e1000 NIC, serial on stdio."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1", "-display", "none",
            "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-nic", "user,restrict=on,model=e1000", "-cdrom", str(iso)]
    if disk is not None:
        argv += ["-drive", f"file={disk},if=virtio,format=raw"]
    if uefi:
        assert vars_file is not None
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,file={vars_file}"]
    return argv


def boot(iso: Path, *, disk: Path | None, uefi: bool, workdir: Path, timeout: float = 240.0,
         until: str | None = None, commands: Sequence[str] = ()) -> Boot:
    """Boot under qemu until it powers off (or ``until`` appears, or ``timeout``); collect the console.

    In self-test mode the guest reads commands from the console after ``ASL-CHECK console``: the
    ``commands`` are typed there, then ``poweroff``."""
    vars_file = None
    if uefi:
        vars_file = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_file)
    result = Boot()
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu_argv(iso, disk=disk, uefi=uefi, vars_file=vars_file),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        for line in _lines(proc, t0 + timeout):
            text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line.decode("utf-8", "replace")).strip()
            result.lines.append(text)
            if "READY" in text and text.startswith("ASL-AUTH-HOST") and result.ready_after is None:
                result.ready_after = time.monotonic() - t0
            if until is not None and until in text:
                break
            if text == "ASL-CHECK console":
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write("".join(f"{c}\n" for c in [*commands, "poweroff"]).encode())
                    proc.stdin.flush()
    finally:
        if proc.poll() is None:
            proc.kill()
        result.exit_code = proc.wait()
        result.seconds = time.monotonic() - t0
    return result


def _lines(proc: subprocess.Popen[bytes], deadline: float) -> Iterator[bytes]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if pending:
                yield pending
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.rstrip(b"\r")


def extract_from_iso(iso: Path, member: str, dest: Path) -> Path:
    """Copy one file out of the ISO with xorriso (no mount)."""
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", member, str(dest)],
                   check=True, capture_output=True)
    return dest


def sha256_file(path: Path) -> str:
    from asl_capture.hashing import sha256_path

    return sha256_path(path).hex()


def tools_missing(tools: Sequence[str]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]
