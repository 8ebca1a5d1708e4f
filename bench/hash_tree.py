"""Benchmark: asl-capture tree snapshots against in-toto-run and one openssl pass (issue 3).

Generates (once, reused) a deterministic tree shaped like a Debian root in a temporary directory
outside the repository, warms the page cache, then measures in one run, interleaved round by round:

  (a) ``asl-capture -i TREE -o TREE -- true`` with an empty stat cache (fresh provenance directory),
  (b) the same again on that provenance directory (warm stat cache),
  (c) ``in-toto-run --step-name s --materials TREE --products TREE --signing-key KEY -- true``,
  (d) ``find TREE -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null``,
  (e) for reference, ``python3 -c BARE_WALKS TREE``: the interpreter walking TREE twice with
      ``os.scandir``/``lstat`` and doing nothing else, the floor under (b) for a Python tool,

and prints min/median/max wall times, the ratios against their targets, and the peak RSS of (a).
Then, in a child interpreter per pair, interleaved round by round, the pools against their serial peers:

  (f) the walk of TREE (``asl_capture.scan.scan``) with every file in the stat cache, one process,
  (g) the same walk shared with forked helpers (one per core),
  (h) ``verify_chain`` of a 10,000-record chain (``bench_chain.py``'s), serial (``helpers=0``),
  (i) the same with checks 2 and 3 shared with forked helpers (``asl_capture.opening``),

and prints g/f and i/h: a pool is worth keeping only when it is at least 1.3x faster (ratio <= 0.77).

Usage: ``python bench/hash_tree.py [--rounds N] [--tree DIR]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import compile_package, ensure_in_toto, make_key, summary

SEED = 20240601
SMALL_FILES = 20_000
LARGE_FILES = 20
TREE_VERSION = "v1"
TOP_DIRS = ("bin", "etc", "lib", "sbin", "usr/bin", "usr/lib", "usr/share/doc", "usr/share/locale",
            "usr/share/man", "var/lib/dpkg/info", "var/cache", "opt")


def generate(tree: Path) -> None:
    """Write the deterministic tree at ``tree`` (about 20,000 small files, 20 large ones, symlinks)."""
    rng = random.Random(SEED)
    dirs: list[Path] = []
    for top in TOP_DIRS:
        for i in range(rng.randint(3, 12)):
            sub = tree / top / f"pkg{i:02d}"
            for j in range(rng.randint(0, 4)):
                sub = sub / f"d{j}"
            dirs.append(sub)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for n in range(SMALL_FILES):
        d = dirs[rng.randrange(len(dirs))]
        (d / f"f{n:05d}.dat").write_bytes(rng.randbytes(rng.randint(1024, 30 * 1024)))
    for n in range(LARGE_FILES):
        d = dirs[rng.randrange(len(dirs))]
        (d / f"big{n:02d}.so").write_bytes(rng.randbytes(rng.randint(2 << 20, 10 << 20)))
    (tree / "usr/lib/rel-link").symlink_to("pkg00")
    (tree / "etc/abs-link").symlink_to("/etc/hostname")
    (tree / "var/cache/dangling").symlink_to("../does/not/exist")
    (tree / "bin/sh-link").symlink_to("../usr/bin")


def ensure_tree(tree: Path) -> None:
    """Generate the tree unless a finished one of this version is already there."""
    done = tree.with_name(tree.name + ".done")
    if done.exists() and done.read_text() == TREE_VERSION:
        return
    shutil.rmtree(tree, ignore_errors=True)
    print(f"generating {tree} ...", flush=True)
    generate(tree)
    done.write_text(TREE_VERSION)


def tree_stats(tree: Path) -> tuple[int, int]:
    """Number of regular files and their total size."""
    count = total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                count += 1
                total += st.st_size
    return count, total


def warm(tree: Path) -> None:
    """Read every file once so all runs see a page-cached tree."""
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with open(path, "rb") as handle:
                    while handle.read(1 << 20):
                        pass


def timed(argv: list[str], *, cwd: Path, shell: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run; fails loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv if not shell else argv[0], cwd=cwd, shell=shell,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {argv}\n{err.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss


#: Reference (e): the least any Python tool can do for (b) by the issue's method, namely start the
#: interpreter and walk the tree twice with os.scandir and lstat: no cache, no hashing, no record.
BARE_WALKS = """
import os, sys
def walk(top):
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                entry.stat(follow_symlinks=False)
walk(sys.argv[1])
walk(sys.argv[1])
"""


#: A pair of pool rows, (f) and (g) or (h) and (i), interleaved in a child interpreter of its own:
#: ``python -c POOLS TREE CHAIN_DIR ROUNDS PAIR``. Each pair gets a fresh process because a fork costs
#: more in a process whose heap is large: the walk timed after ten verifications of 10,000 records
#: (with the collector paused) measured its helpers' start-up, not the walk (g/f 0.995 in one run).
POOLS = """
import gc, sys, time
from pathlib import Path
from asl_capture import scan, verify
from asl_capture.hashing import Hasher, available_cpus
from asl_capture.keys import load_trust
from asl_capture.manifest import snapshot
from asl_capture.statcache import StatCache
tree, chain_dir, rounds, pair = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if pair == "fg":
    cache = StatCache()
    snapshot([tree], base=tree, hasher=Hasher(cache=cache, progress_after=1e9))  # every file now cached
    cpus = available_cpus()
    def walk(workers):
        rows, misses = scan.scan([(bytes(tree), b".")], skip=scan.Skip(), cache=cache, workers=workers)
        assert not misses, len(misses)
    runs = {"f": lambda: walk(1), "g": lambda: walk(cpus)}
else:
    trusted = load_trust([chain_dir / "keys" / "bench.pub"])
    runs = {"h": lambda: verify.verify_chain(chain_dir / "prov", trusted, helpers=0),
            "i": lambda: verify.verify_chain(chain_dir / "prov", trusted)}
gc.disable()
for fn in runs.values():
    fn()  # warm-up, untimed
order = list(runs)
for r in range(rounds):
    for k in order[r % 2:] + order[: r % 2]:
        start = time.perf_counter()
        runs[k]()
        print(k, time.perf_counter() - start, flush=True)
        gc.collect()  # untimed: each run starts from the same heap
"""


def pool_rows(tree: Path, rounds: int) -> dict[str, list[float]]:
    """Times of (f)-(i), from a child interpreter per pair (see :data:`POOLS`)."""
    from bench_chain import build_chain

    chain_dir = Path(tempfile.gettempdir()) / "asl-bench-chain-v3"
    build_chain(chain_dir, 10_000)
    out = "".join(subprocess.run([sys.executable, "-c", POOLS, str(tree), str(chain_dir), str(rounds), pair],
                                 capture_output=True, text=True, check=True).stdout for pair in ("fg", "hi"))
    times: dict[str, list[float]] = {k: [] for k in "fghi"}
    for line in out.splitlines():
        key, value = line.split()
        times[key].append(float(value))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool-rounds", type=int, default=15, help="rounds of the pool rows (f)-(i)")
    parser.add_argument("--only-pools", action="store_true", help="measure only the pool rows (f)-(i)")
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / f"asl-bench-tree-{TREE_VERSION}")
    args = parser.parse_args()
    tree: Path = args.tree.absolute()
    ensure_in_toto()
    compile_package()
    ensure_tree(tree)
    files, size = tree_stats(tree)
    print(f"tree {tree}: {files} files, {size / 1e6:.0f} MB; cpus {len(os.sched_getaffinity(0))}")
    warm(tree)
    pools = pool_rows(tree, args.pool_rounds)
    pool_labels = {"f": "(f) walk, warm cache, serial", "g": "(g) walk, warm cache, shared (forked)",
                   "h": "(h) verify_chain 10k records, serial", "i": "(i) verify_chain 10k records, forked"}
    for k, label in pool_labels.items():
        print(summary(label, pools[k], width=38))
    for name, pool, serial in (("g/f walk", "g", "f"), ("i/h verify", "i", "h")):
        ratio = statistics.median(pools[pool]) / statistics.median(pools[serial])
        print(f"{name:<12} {ratio:.3f}  keep the pool only if <= 0.77 (1.3x): {'KEEP' if ratio <= 0.77 else 'CUT'}")
    if args.only_pools:
        return
    with tempfile.TemporaryDirectory(prefix="asl-bench-") as tmp:
        work = Path(tmp)
        key = make_key(work)
        asl = shutil.which("asl-capture") or "asl-capture"
        intoto = shutil.which("in-toto-run") or "in-toto-run"
        find_cmd = f"find {tree} -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null"
        times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": [], "e": []}
        rss_a: list[int] = []
        counter = iter(range(10**6))

        def asl_run(prov: Path) -> tuple[float, int]:
            return timed([asl, "--provenance", str(prov), "--key", str(key), "-i", str(tree), "-o", str(tree),
                          "--", "true"], cwd=work)

        def run_a() -> None:
            prov = work / f"prov{next(counter)}"
            elapsed, rss = asl_run(prov)
            times["a"].append(elapsed)
            rss_a.append(rss)
            times["b"].append(asl_run(prov)[0])
            shutil.rmtree(prov)

        def run_c() -> None:
            times["c"].append(timed([intoto, "--step-name", "s", "--materials", str(tree), "--products", str(tree),
                                     "--signing-key", str(key), "--", "true"], cwd=work)[0])
            for link in work.glob("s.*.link"):
                link.unlink()

        def run_d() -> None:
            times["d"].append(timed([find_cmd], cwd=work, shell=True)[0])
            times["e"].append(timed([sys.executable, "-c", BARE_WALKS, str(tree)], cwd=work)[0])

        # one untimed warm-up of each, then interleaved rounds (rotating the order)
        order: list[Callable[[], None]] = [run_a, run_c, run_d]
        for fn in order:
            fn()
        for values in times.values():
            values.clear()
        rss_a.clear()
        for r in range(args.rounds):
            for fn in order[r % 3:] + order[: r % 3]:
                fn()
            print(f"round {r + 1}/{args.rounds}: a {times['a'][-1]:.3f}  b {times['b'][-1]:.3f}  "
                  f"c {times['c'][-1]:.3f}  d {times['d'][-1]:.3f}  e {times['e'][-1]:.3f}", flush=True)

    labels = {"a": "(a) asl-capture, empty cache", "b": "(b) asl-capture, warm cache",
              "c": "(c) in-toto-run materials+products", "d": "(d) find | xargs openssl dgst",
              "e": "(e) python + 2 bare lstat walks"}
    for k, label in labels.items():
        print(summary(label, times[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    peak = max(rss_a) / 1024
    checks = [("a/c", med["a"] / med["c"], 0.15), ("a/d", med["a"] / med["d"], 1.0), ("b/c", med["b"] / med["c"], 0.05),
              ("peak RSS (a) MiB", peak, 150.0)]
    failed = False
    for name, value, target in checks:
        ok = value <= target
        failed |= not ok
        print(f"{name:<18} {value:8.3f}  target <= {target:g}  {'PASS' if ok else 'FAIL'}")
    print(f"{'e/c':<18} {med['e'] / med['c']:8.3f}  reference, no target: the Python floor under (b)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
