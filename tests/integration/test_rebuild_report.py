"""The rebuild report reads the two ISOs itself: owners in the squashfs, the build manifests (fast, small images)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from asl_capture import dcbor
from asl_capture.rebuildreport import manifest_diff, owner_diff, read_member

pytestmark = [
    pytest.mark.skipif(shutil.which("mksquashfs") is None or shutil.which("xorriso") is None,
                       reason="needs mksquashfs and xorriso"),
    pytest.mark.skipif(os.geteuid() != 0, reason="sets a directory's owner (root only)"),
]


def _iso(tmp: Path, name: str, *, partial_owner: int, policy: bytes) -> Path:
    root = tmp / f"{name}-root"
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/policy").write_bytes(policy)
    isofs = tmp / f"{name}-isofs"
    (isofs / "live").mkdir(parents=True)
    (isofs / "asl").mkdir()
    squash = isofs / "live/system.squashfs"
    os.chmod(root / "var/lib/apt/lists/partial", 0o700)
    os.chown(root / "var/lib/apt/lists/partial", partial_owner, 0)
    subprocess.run(["mksquashfs", str(root), str(squash), "-noappend", "-no-progress", "-quiet"],
                   check=True, capture_output=True)
    (isofs / "asl/build-manifest.cbor").write_bytes(dcbor.encode({"v": 1, "policy": policy}))
    iso = tmp / f"{name}.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-o", str(iso), str(isofs)], check=True, capture_output=True)
    return iso


def test_owner_and_size_differences_in_the_squashfs_are_named(tmp_path: Path) -> None:
    a = _iso(tmp_path, "a", partial_owner=100, policy=b"same\n")
    b = _iso(tmp_path, "b", partial_owner=0, policy=b"same, longer\n")
    lines = owner_diff(a, b)
    assert "/var/lib/apt/lists/partial: d 0700 100/0 0 -> d 0700 0/0 0" in lines
    assert "/etc/policy: f 0644 0/0 5 -> f 0644 0/0 13" in lines
    assert len(lines) == 2
    assert owner_diff(a, a) == []


def test_build_manifests_are_read_from_the_isos(tmp_path: Path) -> None:
    a = _iso(tmp_path, "a", partial_owner=100, policy=b"one\n")
    b = _iso(tmp_path, "b", partial_owner=100, policy=b"two\n")
    ma, mb = read_member(a, b"asl/build-manifest.cbor"), read_member(b, b"asl/build-manifest.cbor")
    assert ma is not None and mb is not None
    assert manifest_diff(ma, mb) == ["policy: 6f6e650a... -> 74776f0a..."]
    assert read_member(a, b"asl/missing") is None
    not_iso = tmp_path / "x.iso"
    not_iso.write_bytes(os.urandom(4096))
    assert owner_diff(not_iso, b) == ["(live/system.squashfs cannot be read from both ISOs: owners not compared)"]
