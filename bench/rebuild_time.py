"""Benchmark (issue 12): ``asl-verify rebuild`` (warm source store) against the build it rebuilds.

Per round, side by side on the same machine: (build) the README's main job, ``asl-capture --
./pipeline/build.sh``, in a fresh one-commit git copy of the working tree; then (rebuild)
``asl-verify rebuild --provenance ... --iso ... --source COPY --offline`` of that build, from the
durable source store the build filled (clone, local mirror, build, compare; a rebuild needs its
build first, so the two cannot alternate). Prints min/median/max of both, the rebuild/build ratio of medians
(target <= 1.3) and whether every rebuild gave the recorded ISO digest. Needs root and the tools of
``pipeline/install-deps.sh``.

Usage: ``python bench/rebuild_time.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import summary

from tests.integration.pipeline_fixtures import Build, commit_tree, copy_tree, run_build, sha256_file


def _rebuild(build: Build, work: Path) -> tuple[float, bool, str]:
    argv = [sys.executable, "-m", "asl_capture.cli.verify", "rebuild", "--provenance", str(build.provenance),
            "--iso", str(build.iso), "--source", str(build.repo), "--offline", "--work", str(work)]
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    same = res.returncode == 0 and f"REBUILT: sha256:{sha256_file(build.iso)}" in res.stdout
    inner = next((line for line in res.stdout.splitlines() if line.startswith("rebuild: build ")), "")
    return seconds, same, inner if same else (res.stdout + res.stderr)[-2000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    builds: list[float] = []
    rebuilds: list[float] = []
    all_same = True
    with tempfile.TemporaryDirectory(prefix="asl-bench-rebuild-") as tmp:
        top = Path(tmp)
        top.chmod(0o755)
        for r in range(args.rounds):
            repo = commit_tree(copy_tree(top / f"repo-{r}"))
            build = run_build(repo, key_dir=top / f"keys-{r}")
            builds.append(build.seconds)
            print(f"round {r}: build   {build.seconds:6.1f} s", flush=True)
            seconds, same, log = _rebuild(build, top / f"rebuild-{r}")
            rebuilds.append(seconds)
            all_same &= same
            print(f"round {r}: rebuild {seconds:6.1f} s  {'same ISO' if same else 'DIFFERENT/FAILED'}  ({log})"
                  if same else f"round {r}: rebuild {seconds:6.1f} s  DIFFERENT/FAILED\n{log}", flush=True)
            print(f"round {r}: load average {os.getloadavg()[0]:.1f}", flush=True)
            subprocess.run(["rm", "-rf", str(top / f"rebuild-{r}"), str(repo)], check=False)
    print(summary("build s (asl-capture -- ./pipeline/build.sh)", builds, digits=1))
    print(summary("rebuild s (asl-verify rebuild, warm store)", rebuilds, digits=1))
    ratio = statistics.median(rebuilds) / statistics.median(builds)
    print(f"rebuild/build {ratio:8.3f}  target <= 1.3  {'PASS' if ratio <= 1.3 else 'FAIL'}")
    print(f"every rebuild gave the recorded ISO digest: {'yes' if all_same else 'NO'}")


if __name__ == "__main__":
    main()
