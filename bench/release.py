"""Issue 10: ``asl-release publish`` against ``asl-verify iso`` + one ``openssl dgst -sha256`` of the ISO.

    python bench/release.py [--iso out/X.iso] [--provenance out/provenance] [--trust BUILD_PUB] [--rounds 5]

Per round, interleaved: (a) ``asl-release publish`` of the ISO into a fresh ``dist/`` (a fresh
release key each round, made before timing); (b) ``asl-verify iso`` of the same ISO; (c) ``openssl
dgst -sha256`` of the ISO. Target: median(a) <= 1.5 x (median(b) + median(c)). Without ``--trust``
the build must be an ``--ephemeral-key`` build.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import summary

TARGET = 1.5


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, check=False)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(argv)}\n{result.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iso", type=Path, default=None)
    p.add_argument("--provenance", type=Path, default=repo / "out" / "provenance")
    p.add_argument("--trust", type=Path, action="append", default=[])
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    iso = a.iso or next(iter(sorted((repo / "out").glob("*.iso"))), None)
    if iso is None or not iso.is_file():
        sys.exit("no ISO: build one (asl-capture --ephemeral-key -- ./pipeline/build.sh) or pass --iso")
    trust = [arg for t in a.trust for arg in ("--trust", str(t))]
    with tempfile.TemporaryDirectory(prefix="asl-bench-release-") as tmp:
        work = Path(tmp)
        keys = []
        for n in range(a.rounds):
            subprocess.run([sys.executable, "-m", "asl_capture.cli.keys", "generate", f"r{n}", "--dir",
                            str(work / "keys")], check=True, capture_output=True)
            keys.append(work / "keys" / f"r{n}.key")
        verify = [sys.executable, "-m", "asl_capture.cli.verify", "iso", str(iso), "--provenance", str(a.provenance),
                  *trust]
        times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        _timed(["openssl", "dgst", "-sha256", str(iso)])  # warm the page cache
        for n in range(a.rounds):
            out = work / f"dist{n}"
            order = ["a", "b", "c"] if n % 2 == 0 else ["c", "b", "a"]
            for which in order:
                if which == "a":
                    times["a"].append(_timed([sys.executable, "-m", "asl_capture.cli.release", "publish", "--iso",
                                              str(iso), "--provenance", str(a.provenance), "--key", str(keys[n]),
                                              "--out", str(out), *trust]))
                elif which == "b":
                    times["b"].append(_timed(verify))
                else:
                    times["c"].append(_timed(["openssl", "dgst", "-sha256", str(iso)]))
            shutil.rmtree(out)
    size = iso.stat().st_size
    print(f"ISO {iso} ({size / 1e6:.1f} MB); rounds {a.rounds}")
    print(summary("(a) asl-release publish", times["a"]))
    print(summary("(b) asl-verify iso", times["b"]))
    print(summary("(c) openssl dgst -sha256 ISO", times["c"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["a"] / (med["b"] + med["c"])
    print(f"a/(b+c)              {ratio:6.3f}  target <= {TARGET}  {'PASS' if ratio <= TARGET else 'FAIL'}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
