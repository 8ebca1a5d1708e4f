"""Boot time to READY under qemu TCG, BIOS and UEFI: a baseline ISO against the DAM-enforcing ISO, interleaved.

    python bench/boot_time.py --baseline OLD.iso --iso NEW.iso --authority ROOTS_DIR [--rounds 1]

The baseline boots with an empty ext4 data disk (what it needs); the new ISO with a disk whose three
domains ``asl-admin`` prepared for ``ROOTS_DIR`` (the roots the new ISO pins), so every domain's
certificate, DAM, policy hash and log are checked. Both disks carry the self-test marker (power off
after READY). Prints each boot, the medians and the ratio new/baseline per firmware, and the DAM
check time the host itself reports. Target (issue 11): ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostfaults import make_domain
from tests.integration.pipeline_fixtures import OVMF_CODE, boot, make_data_disk

TARGET = 1.5


def _disk(work: Path, name: str, authority: Path | None) -> Path:
    seed = work / f"{name}.seed"
    seed.mkdir()
    if authority is not None:
        for domain in ("common", "personal", "pools"):
            make_domain(seed, domain, authority, None, work / "keys")
    return make_data_disk(work / f"{name}.img", seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--iso", type=Path, required=True)
    parser.add_argument("--authority", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    modes = [False, True] if OVMF_CODE.is_file() else [False]
    times: dict[tuple[str, bool], list[float]] = {}
    dam: list[str] = []
    with tempfile.TemporaryDirectory(prefix="asl-boot-bench-") as tmp:
        work = Path(tmp)
        for rnd in range(args.rounds):
            for uefi in modes:
                for label, iso, authority in (("baseline", args.baseline, None), ("dam", args.iso, args.authority)):
                    disk = _disk(work, f"{label}-{rnd}-{int(uefi)}", authority)
                    result = boot(iso, disk=disk, uefi=uefi, workdir=work)
                    if result.ready_after is None:
                        print(f"{label} {'UEFI' if uefi else 'BIOS'}: no READY\n" + result.text()[-2000:])
                        return 1
                    times.setdefault((label, uefi), []).append(result.ready_after)
                    found = re.search(r"DAM checks of \d+ domain\(s\) took [0-9.]+ s", result.text())
                    if found:
                        dam.append(found.group(0))
                    firmware = "UEFI" if uefi else "BIOS"
                    print(f"round {rnd} {firmware} {label:8s} READY after {result.ready_after:6.1f} s", flush=True)
    ok = True
    for uefi in modes:
        base = statistics.median(times[("baseline", uefi)])
        new = statistics.median(times[("dam", uefi)])
        ratio = new / base
        ok = ok and ratio <= TARGET
        print(f"{'UEFI' if uefi else 'BIOS'}: baseline {base:.1f} s, with DAM checks {new:.1f} s, "
              f"ratio {ratio:.2f} (target <= {TARGET}) {'PASS' if ratio <= TARGET else 'FAIL'}")
    for line in dam:
        print(f"in the guest: {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
