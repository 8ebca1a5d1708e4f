"""Benchmark (issue 4): the image build under asl-capture against the same steps run bare.

Copies the working tree twice (outside the repository), then builds alternately, ``--rounds`` times
each: (bare) ``ASL_CAPTURE_BARE=1 sh pipeline/build.sh`` and (captured) the README's main job,
``asl-capture -- ./pipeline/build.sh``. Prints min/median/max, the captured/bare ratio of medians
(target <= 1.15), the ISO size, whether every build gave the same ISO digest (captured and bare
builds must: the signed records stay outside the ISO), and the boot time to READY under qemu (TCG)
in BIOS and UEFI mode. Needs root and the tools of ``pipeline/install-deps.sh``; the package cache
makes later builds download only the indexes.

Usage: ``python bench/pipeline_overhead.py [--rounds N] [--no-boot]``
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import summary

from tests.integration.pipeline_fixtures import boot, copy_tree, make_data_disk, run_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-boot", action="store_true")
    args = parser.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    digests: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="asl-bench-pipeline-") as tmp:
        work = Path(tmp)
        repos = {captured: copy_tree(work / ("captured" if captured else "bare")) for captured in (True, False)}
        iso = work / "none"
        for r in range(args.rounds):
            for captured in ((False, True) if r % 2 == 0 else (True, False)):
                build = run_build(repos[captured], captured=captured, key_dir=work / f"keys-{r}")
                times[captured].append(build.seconds)
                digests.add(hashlib.sha256(build.iso.read_bytes()).hexdigest())
                iso = build.iso
                print(f"round {r}: {'captured' if captured else 'bare    '} {build.seconds:6.1f} s", flush=True)
        print(summary("bare build s", times[False], digits=1))
        print(summary("captured build s (outer + 4 steps)", times[True], digits=1))
        ratio = statistics.median(times[True]) / statistics.median(times[False])
        print(f"captured/bare {ratio:8.3f}  target <= 1.15  {'PASS' if ratio <= 1.15 else 'FAIL'}")
        print(f"ISO size {iso.stat().st_size / 2**20:.1f} MiB; identical ISO from all {2 * args.rounds} builds: "
              f"{'yes' if len(digests) == 1 else 'NO'} ({sorted(digests)[0][:16]}...)")
        if not args.no_boot:
            for uefi in (False, True):
                disk = make_data_disk(work / f"data-{uefi}.img")
                result = boot(iso, disk=disk, uefi=uefi, workdir=work)
                ready = f"{result.ready_after:.1f} s" if result.ready_after is not None else "never"
                print(f"boot to READY ({'UEFI' if uefi else 'BIOS'}, qemu TCG): {ready}")
    sys.exit(0 if ratio <= 1.15 and len(digests) == 1 else 1)


if __name__ == "__main__":
    main()
