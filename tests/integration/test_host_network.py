"""The boot script keeps the network down unless config.yaml enables it (run in a network namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("busybox") or not shutil.which("ip"),
    reason="needs root, unshare(1), busybox and ip(8) to make a network namespace with a veth pair",
)


def _run(tmp_path: Path, enabled: bool) -> tuple[str, str]:
    text = (REPO / "overlay/etc/asl-auth-host/config.yaml").read_text(encoding="utf-8")
    text = text.replace("enabled: false", f"enabled: {'true' if enabled else 'false'}")
    text = text.replace("device: null", "device: /nonexistent-asl-disk").replace("wait_seconds: 20", "wait_seconds: 0")
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    # a fresh sysfs, so /sys/class/net lists the namespace's interfaces (what the script walks)
    state = "down" if enabled else "up"  # the opposite of what the script must leave
    script = (f"mount -t sysfs sysfs /sys && ip link add asltest0 type veth peer name asltest1 && "
              f"ip link set asltest0 {state} && "
              f"ASL_NO_PID1=1 ASL_CONFIG={config} PYTHONPATH={REPO} sh {REPO}/overlay/bin/init-asl-host.sh; "
              "echo rc=$?; ip -o link show asltest0")
    res = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script], capture_output=True, text=True,
                         timeout=120)
    return res.stdout, res.stderr


@pytest.mark.parametrize("enabled", [False, True])
def test_interfaces_follow_network_enabled(tmp_path: Path, enabled: bool) -> None:
    out, err = _run(tmp_path, enabled)
    link = out.strip().splitlines()[-1]
    flags = link.split("<", 1)[1].split(">", 1)[0].split(",")
    assert ("UP" in flags) == enabled, out + err
    assert "rc=3" in out  # then it stopped at the missing data disk, as it must
    if enabled:
        assert "network: asltest0 up (network.enabled: true)" in out
    else:
        assert "network: offline (only lo up; set network.enabled: true to change)" in out
