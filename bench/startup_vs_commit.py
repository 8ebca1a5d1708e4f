"""Benchmark: this tree against an earlier commit, side by side in one run.

  (i)  ``asl-capture -- true`` start-up (a key, an empty world-readable working directory): as root
       the new code runs the command as the build user by default, so that cost is included; a
       second row times it with ``--as-root`` where the tree knows that option;
  (ii) ``asl-verify chain`` of a 1,000-record chain (built once through the library).

Each round runs every variant once, in a rotating order; medians and the new/old ratios are
printed. The old tree is a ``git worktree`` of ``--base`` (default ``HEAD~1``), its bytecode
compiled like this tree's.

Usage: ``python bench/startup_vs_commit.py [--base REV] [--rounds N]``
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_chain import build_chain
from common import summary

REPO = Path(__file__).resolve().parents[1]


def _time(argv: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time, and the CPU time (user + system) of the process and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="asl-bench-vs-"))
    os.chmod(scratch, 0o755)  # a build user must reach the working directory
    old = scratch / "old"
    try:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(old), args.base], check=True)
        for tree in (REPO, old):
            compileall.compile_dir(str(tree / "asl_capture"), quiet=1)
        work = scratch / "work"
        work.mkdir()
        os.chmod(work, 0o755)
        from asl_capture.keys import generate

        key, _pub, _kid = generate("bench", directory=scratch / "keys")
        chain_pub = build_chain(scratch / "chain", 1000)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ASL_")}
        base_env.update({"ASL_CAPTURE_KEY": str(key), "XDG_CONFIG_HOME": str(scratch / "xdg")})
        variants: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name, tree in (("old", old), ("new", REPO)):
            env = {**base_env, "PYTHONPATH": str(tree), "ASL_CAPTURE_DIR": str(scratch / f"prov-{name}")}
            variants[f"capture {name}"] = ([sys.executable, "-m", "asl_capture.cli.capture", "--", "true"], env)
            variants[f"verify {name}"] = ([sys.executable, "-m", "asl_capture.cli.verify", "chain",
                                           str(scratch / "chain" / "prov"), "--trust", str(chain_pub)], env)
        if os.geteuid() == 0:
            new_env = variants["capture new"][1]
            variants["capture new --as-root"] = ([sys.executable, "-m", "asl_capture.cli.capture", "--as-root", "--",
                                                  "true"], new_env)
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for _ in range(2):  # warm-up: page cache, the build user created, bytecode
            for name in names:
                _time(variants[name][0], env=variants[name][1], cwd=work)
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                argv, env = variants[name]
                wall, used = _time(argv, env=env, cwd=work)
                times[name].append(wall)
                cpu[name].append(used)
        print(f"base {args.base}; rounds {args.rounds}; uid {os.geteuid()}; cores {os.cpu_count()}")
        for name in names:
            print(summary(name, [t * 1000 for t in times[name]], digits=1) + "  ms")
        for name in names:
            print(summary(f"{name} (CPU)", [t * 1000 for t in cpu[name]], digits=1) + "  ms")
        med = {name: statistics.median(values) for name, values in times.items()}
        cmed = {name: statistics.median(values) for name, values in cpu.items()}
        print(f"CPU ratio capture new/old: {cmed['capture new'] / cmed['capture old']:.3f}; "
              f"--as-root/old: {cmed.get('capture new --as-root', 0.0) / cmed['capture old']:.3f}; "
              f"verify new/old: {cmed['verify new'] / cmed['verify old']:.3f}")
        print(f"ratio capture new/old (medians): {med['capture new'] / med['capture old']:.3f}  (target <= 1.05)")
        if "capture new --as-root" in med:
            print(f"ratio capture new --as-root/old: {med['capture new --as-root'] / med['capture old']:.3f}")
        print(f"ratio verify new/old (medians):  {med['verify new'] / med['verify old']:.3f}  (target <= 1.05)")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False,
                       capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
