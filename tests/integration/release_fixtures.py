"""A small real build for the release tests: an ISO with a squashfs system image and a build manifest,
made by two nested ``asl-capture`` steps under an outer capture, in seconds (mksquashfs, xorriso).

The image holds this repository's overlay/ (the spec's layout and config.yaml), optionally changed,
so the versioning rule sees a real surface. It is not the pipeline's ISO: ``asl-verify iso`` proper
runs on that one in the slow tests; these use the reduced check of :mod:`asl_capture.release.image`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asl_capture.keys import generate
from tests.conftest import AS_ROOT

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("mksquashfs", "xorriso", "unsquashfs")

BUILD_SH = """set -e
"$PY" -m asl_capture.cli.capture --step image -i overlay -i mkmanifest.py -o out/work -- sh -c '
  rm -rf out/work && mkdir -p out/work/isofs/live out/work/isofs/asl
  mksquashfs overlay out/work/isofs/live/system.squashfs -noappend -no-progress -all-root >/dev/null
  "$PY" mkmanifest.py out/work/isofs/asl/build-manifest.cbor'
"$PY" -m asl_capture.cli.capture --step iso -i out/work -o "out/$ISO" -- \
  xorriso -as mkisofs -R -quiet -o "out/$ISO" out/work/isofs
"""

MKMANIFEST = """import hashlib, os, sys
from asl_capture.format import BuildManifest, SystemTree, TreeDigest
d = hashlib.sha256(b"placeholder").digest()
m = BuildManifest(name="mini", version=os.environ["VERSION"], source_date_epoch=1700000000, kernel="6.1.0",
                  sources=(), overlay=TreeDigest(manifest=d, paths=1), system=SystemTree(manifest=d, paths=1, files=1),
                  files={})
open(sys.argv[1], "wb").write(m.to_cbor())
"""


@dataclass(frozen=True)
class MiniBuild:
    repo: Path
    iso: Path
    provenance: Path
    trust: Path | None
    key: Path | None


def mini_build(base: Path, *, version: str = "1.0.0", ephemeral: bool = True,
               change: Callable[[Path], None] | None = None) -> MiniBuild:
    """Build ``base/repo/out/mini-<version>.iso`` under ``asl-capture`` (an ephemeral key, or a fresh key file)."""
    repo = base / "repo"
    shutil.copytree(REPO / "overlay", repo / "overlay", symlinks=True)
    if change is not None:
        change(repo / "overlay")
    (repo / "build.sh").write_text(BUILD_SH)
    (repo / "mkmanifest.py").write_text(MKMANIFEST)
    iso_name = f"mini-{version}.iso"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASL_")}
    env.update({"PY": sys.executable, "VERSION": version, "ISO": iso_name, "XDG_CONFIG_HOME": str(base / "xdg"),
                "ASL_CAPTURE_DIR": str(repo / "out" / "provenance"), "PYTHONPATH": str(REPO), **AS_ROOT})
    argv = [sys.executable, "-m", "asl_capture.cli.capture", "--step", "build"]
    key = trust = None
    if ephemeral:
        argv.append("--ephemeral-key")
    else:
        key, trust, _kid = generate("build", directory=base / "build-keys")
        argv += ["--key", str(key)]
    result = subprocess.run([*argv, "--", "sh", "build.sh"], cwd=repo, env=env, capture_output=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return MiniBuild(repo=repo, iso=repo / "out" / iso_name, provenance=repo / "out" / "provenance", trust=trust,
                     key=key)


def tools_missing() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]
