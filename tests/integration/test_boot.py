"""Boot the ISO under qemu TCG, BIOS and UEFI, with a separate ext4 data disk (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pipeline_fixtures import (
    OVMF_CODE,
    Build,
    boot,
    make_data_disk,
    pipeline_build,
    tools_missing,
)

__all__ = ["pipeline_build"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(tools_missing(["qemu-system-x86_64", "mkfs.ext4"])), reason="needs qemu and e2fsprogs"),
]


def _assert_booted(result_lines: str, checks: dict[str, str], boot_no: int) -> None:
    assert f"ASL-AUTH-HOST READY boot={boot_no} " in result_lines, result_lines[-3000:]
    assert checks["mount"].split() == ["/var/lib/asl", "/dev/vda", "ext4"]
    assert checks["root"] == "overlay"
    assert checks["ifaces-up"] == "lo"
    assert checks["listening"] == "0"
    assert checks["boots"] == str(boot_no)
    assert checks["stores"].split() == ["common", "personal", "pools"]


def test_bios_then_uefi_boot_persist_on_the_data_disk(pipeline_build: Build, tmp_path: Path) -> None:
    if not OVMF_CODE.is_file():
        pytest.skip("needs ovmf")
    disk = make_data_disk(tmp_path / "data.img")
    first = boot(pipeline_build.iso, disk=disk, uefi=False, workdir=tmp_path)
    _assert_booted(first.text(), first.checks(), 1)
    assert first.exit_code == 0  # the guest powered itself off
    second = boot(pipeline_build.iso, disk=disk, uefi=True, workdir=tmp_path)
    _assert_booted(second.text(), second.checks(), 2)
    print(f"\nboot to READY: BIOS {first.ready_after:.1f}s, UEFI {second.ready_after:.1f}s")


def test_missing_data_disk_is_reported_on_the_console(pipeline_build: Build, tmp_path: Path) -> None:
    result = boot(pipeline_build.iso, disk=None, uefi=False, workdir=tmp_path, timeout=180,
                  until="ASL-CHECK storage missing")
    text = result.text()
    assert "ASL-ERROR: data disk LABEL=ASL-DATA not found" in text, text[-3000:]
    assert "ASL-AUTH-HOST READY" not in text


def test_data_disk_with_another_label_is_not_mounted(pipeline_build: Build, tmp_path: Path) -> None:
    disk = make_data_disk(tmp_path / "other.img", label="NOT-ASL")
    result = boot(pipeline_build.iso, disk=disk, uefi=False, workdir=tmp_path, timeout=180,
                  until="ASL-CHECK storage missing")
    assert "ASL-ERROR: data disk LABEL=ASL-DATA not found" in result.text()
    assert "ASL-AUTH-HOST READY" not in result.text()
