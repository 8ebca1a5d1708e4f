"""Boot the ISO under qemu TCG, BIOS and UEFI, with a data disk prepared offline by asl-admin (slow).

Boots are few and each checks much: a good disk (BIOS, then UEFI: persistence, signing, the
environment claim, asl-rescue check), two disks whose three domains each carry a different fault
(six refusals in two boots), and a disk the host must not take.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from asl_host.claim import read_claim
from tests.hostfaults import REASONS, make_domain, tree_bytes
from tests.integration.pipeline_fixtures import (
    OVMF_CODE,
    Build,
    boot,
    extract_from_iso,
    make_data_disk,
    pipeline_build,
    tools_missing,
)

__all__ = ["pipeline_build"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(tools_missing(["qemu-system-x86_64", "mkfs.ext4", "debugfs"])),
                       reason="needs qemu and e2fsprogs"),
]
DOMAINS = ("common", "personal", "pools")


def _authority(build: Build) -> Path:
    if build.authority is None:
        pytest.skip("the reused build has no test authority beside it")
    return build.authority


def _prepare(tmp_path: Path, authority: Path, faults: Mapping[str, str | None]) -> tuple[Path, Path]:
    seed = tmp_path / "seed"
    seed.mkdir()
    for name, fault in faults.items():
        make_domain(seed, name, authority, fault, tmp_path / "work")
    return make_data_disk(tmp_path / "data.img", seed=seed), seed


def _debugfs(disk: Path, request: str, *, write: bool = False) -> str:
    argv = ["debugfs", *(["-w"] if write else []), "-R", request, str(disk)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _exits(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^ASL-CMD-EXIT (\d+)$", text, re.M)]


def _assert_ready(text: str, checks: dict[str, str], boot_no: int, states: str) -> None:
    assert f"ASL-AUTH-HOST READY boot={boot_no} domains={states}" in text, text[-3000:]
    assert checks["mount"].split() == ["/var/lib/asl", "/dev/vda", "ext4"]
    assert checks["root"] == "overlay"
    assert checks["ifaces-up"] == "lo"  # network down: config.yaml does not enable it
    assert checks["listening"] == "0"
    assert checks["boots"] == str(boot_no)
    assert checks["stores"].split() == list(DOMAINS)


def test_prepared_disk_boots_writable_signs_and_persists_bios_then_uefi(pipeline_build: Build,
                                                                        tmp_path: Path) -> None:
    if not OVMF_CODE.is_file():
        pytest.skip("needs ovmf")
    disk, _seed = _prepare(tmp_path, _authority(pipeline_build), dict.fromkeys(DOMAINS))
    writable = ",".join(f"{d}:writable" for d in DOMAINS)
    first = boot(pipeline_build.iso, disk=disk, uefi=False, workdir=tmp_path,
                 commands=["asl-admin sign /etc/os-release --domain personal --as alice"])
    text = first.text()
    _assert_ready(text, first.checks(), 1, writable)
    assert first.exit_code == 0 and _exits(text) == [0], text[-3000:]
    signed = re.search(r"^signed os-release sha256:([0-9a-f]{64}) in personal as alice \(receipt 1\)$", text, re.M)
    assert signed, text[-3000:]
    digest = signed.group(1)

    # The environment claim names the image identity of the ISO that booted (its build manifest).
    (tmp_path / "claim").write_bytes(b"")
    _debugfs(disk, f"dump /.asl-host/env-claims/1.claim {tmp_path / 'claim'}")
    claim = read_claim((tmp_path / "claim").read_bytes())
    manifest = extract_from_iso(pipeline_build.iso, "/asl/build-manifest.cbor", tmp_path / "manifest.cbor")
    identity = "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert claim.image == identity
    assert {n: s["state"] for n, s in claim.stores.items()} == dict.fromkeys(DOMAINS, "writable")
    assert "/bin/init-asl-host.sh" in claim.tools and claim.boot == 1
    if importlib.util.find_spec("asl_capture.cli.verify_iso") is not None and pipeline_build.trust is not None:
        verify = subprocess.run([sys.executable, "-m", "asl_capture.cli.verify", "iso", str(pipeline_build.iso),
                                 "--provenance", str(pipeline_build.provenance), "--trust", str(pipeline_build.trust),
                                 "--quick"], capture_output=True, text=True, check=False)
        printed = re.search(r"^image identity: (sha256:[0-9a-f]{64})$", verify.stdout, re.M)
        assert printed, verify.stdout + verify.stderr
        assert printed.group(1) == claim.image  # the running host is tied to the record asl-verify checked

    # Between the boots, the signed object is damaged on the disk image.
    obj = f"/personal/objects/sha256/{digest[:2]}/{digest[2:]}"
    (tmp_path / "bad").write_bytes(b"damaged between two boots\n")
    _debugfs(disk, f"rm {obj}", write=True)
    _debugfs(disk, f"write {tmp_path / 'bad'} {obj}", write=True)

    second = boot(pipeline_build.iso, disk=disk, uefi=True, workdir=tmp_path,
                  commands=["asl-admin snapshots personal", "asl-admin dam verify personal", "asl-rescue check"])
    text = second.text()
    _assert_ready(text, second.checks(), 2, writable)
    assert f"receipt 1 sign os-release sha256:{digest}" in text
    assert "dam personal: verified (certificate, threshold, signature, policy hash, log of 2 receipt(s))" in text
    assert f"personal: objects/sha256/{digest[:2]}/{digest[2:]}: content hashes to" in text
    assert _exits(text) == [0, 0, 1], text[-3000:]
    report = _debugfs(disk, "cat /personal/quarantine/REPORT")
    assert f"moved to quarantine/{digest[2:]}" in report
    print(f"\nboot to READY: BIOS {first.ready_after:.1f}s, UEFI {second.ready_after:.1f}s")


@pytest.mark.parametrize("faults", [
    {"common": "dam-flip", "personal": "dam-wrong-key", "pools": "cert-unpinned-root"},
    {"common": "cert-below-threshold", "personal": "policy-hash", "pools": "principal-role"},
], ids=["dam-and-unpinned-root", "threshold-policy-role"])
def test_each_faulty_domain_stays_read_only_names_why_and_is_untouched(pipeline_build: Build, tmp_path: Path,
                                                                       faults: dict[str, str]) -> None:
    disk, seed = _prepare(tmp_path, _authority(pipeline_build), faults)
    result = boot(pipeline_build.iso, disk=disk, uefi=False, workdir=tmp_path,
                  commands=["grep 'read-only' /var/log/asl-auth-host.log"])
    text = result.text()
    _assert_ready(text, result.checks(), 1, ",".join(f"{d}:read-only" for d in DOMAINS))
    for name, fault in faults.items():
        console = re.search(rf"^asl-auth-host: domain {name} \(id {name}\): read-only: (.*)$", text, re.M)
        assert console and REASONS[fault] in console.group(1), text[-3000:]
        logged = re.search(rf"WARNING domain {name} \(id {name}\): read-only: (.*)$", text, re.M)
        assert logged and logged.group(1) == console.group(1)
    dump = tmp_path / "dump"
    dump.mkdir()
    for name in faults:
        _debugfs(disk, f"rdump /{name} {dump}")
        assert tree_bytes(dump / name) == tree_bytes(seed / name), name
    shutil.rmtree(dump)


def test_a_disk_without_the_label_is_not_taken(pipeline_build: Build, tmp_path: Path) -> None:
    disk = make_data_disk(tmp_path / "other.img", label="NOT-ASL")
    result = boot(pipeline_build.iso, disk=disk, uefi=False, workdir=tmp_path, timeout=180,
                  until="ASL-CHECK storage missing")
    assert "ASL-ERROR: data disk LABEL=ASL-DATA not found" in result.text()
    assert "ASL-AUTH-HOST READY" not in result.text()
