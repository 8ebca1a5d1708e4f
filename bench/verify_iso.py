"""Benchmark (issue 9): ``asl-verify iso`` against what an auditor would otherwise do by hand, same run.

Peers, on the same built ISO and provenance, alternated ``--rounds`` times (page cache warm):

- *manual*: ``xorriso -osirrox on -indev ISO -extract / A`` + ``unsquashfs -d B A/live/system.squashfs``
  + ``find A B -type f -exec openssl dgst -sha256 {} +`` (what reaching "same bytes" takes by hand;
  it checks nothing against a record), the scratch trees removed after each round (not timed);
- *full*: ``asl-verify iso ISO --provenance P --trust K`` (all seven checks);
- *dgst*: ``openssl dgst -sha256 ISO``;
- *quick*: ``asl-verify iso ... --quick`` (checks 1, 2, 3, 7).

Prints min/median/max and the ratios of medians full/manual (target <= 1.0) and quick/dgst.
Give a built tree (``out/`` of ``asl-capture -- ./pipeline/build.sh``) and the build's public key:

    python bench/verify_iso.py --repo DIR --trust KEY.pub [--rounds 5]

Without ``--repo``, builds the pipeline once in a temporary copy of the tree (root, minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import compile_package, summary

from tests.integration.pipeline_fixtures import copy_tree, iso_name, run_build

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], *, env: dict[str, str] | None = None, shell: bool = False) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv if not shell else " ".join(argv), shell=shell, env=env, capture_output=True,
                          check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"bench: {argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-400:]}")
    return seconds


def manual(iso: Path, scratch: Path) -> float:
    a, b = scratch / "iso", scratch / "system"
    t0 = time.perf_counter()
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(a)], check=True,
                   capture_output=True)
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(b), str(a / "live/system.squashfs")], check=True,
                   capture_output=True)
    subprocess.run(["find", str(a), str(b), "-type", "f", "-exec", "openssl", "dgst", "-sha256", "{}", "+"],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    subprocess.run(["chmod", "-R", "u+rwX", str(a)], check=True)
    shutil.rmtree(a)
    shutil.rmtree(b)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repo", type=Path, help="a tree built by the pipeline (holds out/)")
    parser.add_argument("--trust", type=Path, help="the public key that signed that build")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    compile_package()
    with tempfile.TemporaryDirectory(prefix="asl-bench-verify-iso-") as tmp:
        work = Path(tmp)
        if args.repo is None:
            built = run_build(copy_tree(work / "repo"))
            repo, trust = built.repo, built.trust
        else:
            repo, trust = args.repo, args.trust
        if trust is None:
            sys.exit("bench: --trust KEY.pub is required with --repo")
        iso, prov = repo / "out" / iso_name(repo), repo / "out" / "provenance"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        verify = [sys.executable, "-m", "asl_capture.cli.verify", "iso", str(iso), "--provenance", str(prov),
                  "--trust", str(trust)]
        times: dict[str, list[float]] = {"manual": [], "full": [], "dgst": [], "quick": []}
        timed([*verify, "--quick"], env=env)  # warm the page cache and the imports once
        for _ in range(args.rounds):
            scratch = work / "scratch"
            scratch.mkdir()
            times["manual"].append(manual(iso, scratch))
            scratch.rmdir()
            times["full"].append(timed(verify, env=env))
            times["dgst"].append(timed(["openssl", "dgst", "-sha256", str(iso)]))
            times["quick"].append(timed([*verify, "--quick"], env=env))
        size = iso.stat().st_size
        print(f"ISO {iso.name}: {size / 2**20:.1f} MiB; cores: {len(os.sched_getaffinity(0))}; "
              f"rounds: {args.rounds}")
        labels = {"manual": "manual (xorriso+unsquashfs+openssl)", "full": "asl-verify iso (full)",
                  "dgst": "openssl dgst -sha256 ISO", "quick": "asl-verify iso --quick"}
        for name, values in times.items():
            print(summary(labels[name], values, width=38))
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"ratio full/manual (medians):  {med['full'] / med['manual']:.3f}  (target <= 1.0)")
        print(f"ratio quick/dgst (medians):   {med['quick'] / med['dgst']:.3f}")


if __name__ == "__main__":
    main()
