"""Benchmark (issue 2): ``asl-verify chain`` throughput, and ``asl-capture -- true`` start-up against in-toto-run.

Measured side by side in one run:

  (i)  records per second of ``asl-verify chain`` over a 10,000-record chain (built once through the
       library, ``asl_capture.chain.append``, with a minimal valid body whose objects are shared; the
       chain is kept in a temporary directory and reused), target >= 5,000/s;
  (ii) the wall-time ratio of ``asl-capture -- true`` (in an empty temporary directory, with a key)
       to ``in-toto-run --step-name s --signing-key KEY -- true`` (Ed25519 key), interleaved
       repetitions, medians, target <= 0.5.

Usage: ``python bench/bench_chain.py [--records N] [--reps N]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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

from asl_capture import chain
from asl_capture.format import Changes, Host, Inputs, Log, Manifest, Outputs, StepRecord
from asl_capture.keys import generate, load_signer
from asl_capture.store import ObjectStore, ProvenanceDir


def build_chain(directory: Path, records: int) -> Path:
    """A provenance directory holding a valid chain of ``records`` records; returns the public key."""
    done = directory / f"built-{records}"
    pub = directory / "keys" / "bench.pub"
    if done.exists():
        return pub
    shutil.rmtree(directory, ignore_errors=True)
    key, pub, _kid = generate("bench", directory=directory / "keys")
    signer = load_signer(key, passphrase=None)
    prov = ProvenanceDir.create(directory / "prov")
    store = ObjectStore(prov)
    manifest = store.put(Manifest(roots=(b".",), entries=()).encode())
    changes = store.put(Changes(created=(), modified=(), deleted=()).encode())
    log = store.put(b"")
    record = StepRecord(
        chain=bytes(16), seq=0, prev=None, id=bytes(16), parent=None, step="bench", argv=("true",), cwd="/",
        env={"PATH": "/usr/bin"}, started=1_700_000_000_000_000_000, finished=1_700_000_000_000_000_001, exit=0,
        status="ok", inputs=Inputs(manifest=manifest, entries=0, files=0),
        outputs=Outputs(manifest=manifest, before=manifest, changes=changes, entries=0, files=0, created=0,
                        modified=0, deleted=0),
        stdout=Log(digest=log, size=0), stderr=Log(digest=log, size=0),
        host=Host(hostname="bench", kernel="k", machine="x86_64", tool="asl-capture bench", python="3"),
    )
    print(f"building a {records}-record chain in {directory} ...", flush=True)
    def build(n: int) -> Callable[[chain.Head], StepRecord]:
        return lambda _head: dataclasses.replace(record, id=n.to_bytes(16, "big"))

    for n in range(records):
        chain.append(prov, signer, build(n), new_chain_id=lambda: os.urandom(16))
    done.touch()
    return pub


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {argv}\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--verify-reps", type=int, default=5)
    args = parser.parse_args()
    ensure_in_toto()
    compile_package()
    chain_dir = Path(tempfile.gettempdir()) / "asl-bench-chain-v3"
    pub = build_chain(chain_dir, args.records)
    verify = [shutil.which("asl-verify") or "asl-verify", "chain", str(chain_dir / "prov"), "--trust", str(pub)]
    asl = shutil.which("asl-capture") or "asl-capture"
    intoto = shutil.which("in-toto-run") or "in-toto-run"
    verify_times: list[float] = []
    asl_times: list[float] = []
    intoto_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="asl-bench-start-") as tmp:
        work = Path(tmp)
        key = make_key(work)
        prov = work / "prov"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASL_CAPTURE")}

        def one_asl() -> float:
            empty = Path(tempfile.mkdtemp(dir=work))
            try:
                return run([asl, "--provenance", str(prov), "--key", str(key), "--", "true"], cwd=empty, env=env)
            finally:
                shutil.rmtree(empty)

        def one_intoto() -> float:
            empty = Path(tempfile.mkdtemp(dir=work))
            try:
                return run([intoto, "--step-name", "s", "--signing-key", str(key), "--", "true"], cwd=empty)
            finally:
                shutil.rmtree(empty)

        one_asl(), one_intoto(), run(verify, cwd=work)  # warm-up, untimed
        for r in range(args.reps):
            pair = (one_asl, one_intoto) if r % 2 == 0 else (one_intoto, one_asl)
            for fn in pair:
                (asl_times if fn is one_asl else intoto_times).append(fn())
            if r < args.verify_reps:
                verify_times.append(run(verify, cwd=work))
    rate = args.records / statistics.median(verify_times)
    ratio = statistics.median(asl_times) / statistics.median(intoto_times)
    print(summary(f"asl-verify chain ({args.records} records) s", verify_times, width=40, digits=4))
    print(summary("asl-capture -- true s", asl_times, width=40, digits=4))
    print(summary("in-toto-run -- true s", intoto_times, width=40, digits=4))
    ok_rate, ok_ratio = rate >= 5000, ratio <= 0.5
    print(f"verify records/s  {rate:9.0f}  target >= 5000  {'PASS' if ok_rate else 'FAIL'}")
    print(f"capture/in-toto   {ratio:9.3f}  target <= 0.5   {'PASS' if ok_ratio else 'FAIL'}")
    sys.exit(0 if ok_rate and ok_ratio else 1)


if __name__ == "__main__":
    main()
