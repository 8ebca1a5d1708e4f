"""Fast checks of the pipeline's tools: image.yaml validation, apt sources, overlay refusal, the host's DAM."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_fixtures import REPO

TOOLS = REPO / "pipeline" / "tools"


def _run(tool: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOLS / tool), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "image.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _good() -> str:
    return (REPO / "pipeline" / "image.yaml").read_text(encoding="utf-8")


def test_shipped_image_yaml_is_valid() -> None:
    res = _run("imageconfig.py", "--config", str(REPO / "pipeline/image.yaml"), "--get", "version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().count(".") == 2


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t + "colour: blue\n", "colour: unknown key"),
    (lambda t: t.replace("version: 2.0.0", "version: 1"), "version: expected a string, got int"),
    (lambda t: t.replace("suite: bookworm\n", ""), "suite: missing required field"),
    (lambda t: t.replace("  timeout: 1", "  timeout: soon"), "boot.timeout: expected an integer, got str"),
    (lambda t: t.replace("  serial: ttyS0,115200", "  serial: ttyS0\n  baud: 9600"), "boot.baud: unknown key"),
    (lambda t: t.replace("  - python3-yaml\n", "  - 7\n"), "packages: expected a list of strings, got list"),
    (lambda t: t.replace("\nmirror: null", "\nmirror: http://example.invalid/debian"), "security_mirror: set"),
    (lambda t: t + ":\n  - [", "line"),
])
def test_image_yaml_errors_are_one_line_exit_2(tmp_path: Path, edit: object, message: str) -> None:
    assert callable(edit)
    res = _run("imageconfig.py", "--config", str(_config(tmp_path, edit(_good()))), "--check")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("image.yaml: ")
    assert message in res.stderr


def test_mirrors_come_from_the_machines_apt_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("# nothing\ndeb-src http://src.invalid/debian bookworm main\n")
    (apt / "sources.list.d" / "a.list").write_text("deb [arch=amd64] http://one.invalid/debian bookworm main contrib\n")
    (apt / "sources.list.d" / "b.sources").write_text(
        "Types: deb\nURIs: http://two.invalid/debian\nSuites: bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://sec.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n"
        "Enabled: yes\n\nTypes: deb\nURIs: http://off.invalid/x\nSuites: bookworm\nComponents: main\nEnabled: no\n")
    (apt / "sources.list.d" / "c.list.disabled").write_text("deb http://ignored.invalid/ bookworm main\n")
    res = _run("aptsources.py", "mirrors", "--suites", "bookworm bookworm-updates bookworm-security",
               "--components", "main", env={"ASL_APT_DIR": str(apt)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "deb http://one.invalid/debian bookworm main",
        "deb http://two.invalid/debian bookworm-updates main",
        "deb http://sec.invalid/debian-security bookworm-security main",
    ]


def test_no_source_for_the_suite_is_a_one_line_error(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    apt.mkdir()
    res = _run("aptsources.py", "mirrors", "--suites", "bookworm", "--components", "main",
               env={"ASL_APT_DIR": str(apt)})
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "no apt source for suite bookworm" in res.stderr


def _stage(overlay: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _run("overlay.py", "--rootfs", str(tmp_path / "none"), "--overlay", str(overlay),
                "--staged", str(tmp_path / "staged"), "--out", str(tmp_path / "iso"),
                "--package", str(REPO / "asl_host"), "--shared", str(REPO / "asl_capture"),
                "--package-dest", "/usr/lib/python3/dist-packages",
                "--trust-roots", str(REPO / "overlay/etc/asl-auth-host/roots.cbor"),
                "--trust-policy-hash", str(REPO / "overlay/etc/asl-auth-host/policy.hash"),
                "--modules", "ext4", "--epoch", "1735689600", "--stage-only")


def test_shipped_overlay_stages_with_normalised_modes(tmp_path: Path) -> None:
    res = _stage(REPO / "overlay", tmp_path)
    assert res.returncode == 0, res.stderr
    staged = tmp_path / "staged"
    expected = {"bin/asl-auth-host", "bin/asl-rescue", "bin/init-asl-host.sh", "etc/asl-auth-host/config.yaml",
                "etc/asl-auth-host/policy.hash", "var/lib/asl/common", "var/lib/asl/personal",
                "var/lib/asl/pools", "var/log/asl-auth-host.log", "usr/local/bin/asl-admin"}
    for rel in expected:
        assert (staged / rel).exists(), rel
    assert not list(staged.rglob(".keep"))
    assert stat.S_IMODE((staged / "bin/init-asl-host.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((staged / "etc/asl-auth-host/config.yaml").stat().st_mode) == 0o644
    assert int((staged / "bin/asl-auth-host").stat().st_mtime) == 1735689600


@pytest.mark.parametrize(("kind", "message"), [
    ("abs-link", "absolute symlink target"),
    ("escape-link", "escapes the root"),
    ("fifo", "special file refused"),
    ("device", "device node refused"),
])
def test_overlay_entries_escaping_the_root_are_refused(tmp_path: Path, kind: str, message: str) -> None:
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc" / "ok.conf").write_text("fine\n")
    bad = overlay / "etc" / "bad"
    if kind == "abs-link":
        bad.symlink_to("/etc/shadow")
    elif kind == "escape-link":
        bad.symlink_to("../../outside")
    elif kind == "fifo":
        os.mkfifo(bad)
    else:
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        os.mknod(bad, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    res = _stage(overlay, tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert "overlay/etc/bad" in res.stderr and message in res.stderr


def test_relative_symlink_inside_the_root_is_accepted(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    (overlay / "usr/local/bin").mkdir(parents=True)
    (overlay / "usr/local/bin/tool").symlink_to("../../bin/true")
    assert _stage(overlay, tmp_path).returncode == 0


def _overlay_tool() -> Any:
    spec = importlib.util.spec_from_file_location("asl_overlay_tool", TOOLS / "overlay.py")
    assert spec is not None and spec.loader is not None
    ov: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ov)
    return ov


def test_image_gets_the_host_runtime_and_only_the_shared_modules_it_imports(tmp_path: Path) -> None:
    ov = _overlay_tool()
    shared = [p.relative_to(REPO).as_posix() for p in ov.import_closure(REPO / "asl_host", REPO / "asl_capture")]
    assert "asl_capture/__init__.py" in shared and "asl_capture/dcbor.py" in shared
    assert not any(p.startswith("asl_capture/cli/") for p in shared)
    assert "asl_capture/capture.py" not in shared and "asl_capture/verify.py" not in shared
    root = tmp_path / "root"
    root.mkdir()
    dest = "/usr/lib/python3/dist-packages"
    ov.install_files(ov.package_files(REPO / "asl_host"), REPO / "asl_host", root, dest)
    ov.install_files(ov.import_closure(REPO / "asl_host", REPO / "asl_capture"), REPO / "asl_capture", root, dest)
    site = root / dest.strip("/")
    # Every module installed imports nothing the image lacks: no click, no cbor2, no build-tool module.
    for path in site.rglob("*.py"):
        imported = ov._imported(path, "click") | ov._imported(path, "cbor2")
        assert not imported, f"{path}: {imported}"
    res = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                          "import asl_host.authhost, asl_host.admin, asl_host.rescue, asl_host.config; "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'cbor2')))",
                          str(site)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_import_of_a_missing_shared_module_is_refused(tmp_path: Path) -> None:
    ov = _overlay_tool()
    pkg = tmp_path / "hostpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from asl_capture.nosuch.thing import x\n")
    with pytest.raises(ov.OverlayError, match=r"asl_capture\.nosuch\.thing: imported by the host runtime"):
        ov.import_closure(pkg, REPO / "asl_capture")


def test_chroot_style_resolution_never_leaves_the_root(tmp_path: Path) -> None:
    ov = _overlay_tool()
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc").mkdir()
    (root / "etc/evil").symlink_to("/tmp")
    assert ov.resolve_in_root(root, "bin/x") == root / "usr/bin/x"
    assert ov.resolve_in_root(root, "etc/evil/x") == root / "tmp/x"
    assert ov.resolve_in_root(root, "../../x") == root / "x"


def _host_config(tmp_path: Path, authority: Path) -> Path:
    """The shipped config.yaml with the data disk, log and pinned trust moved under ``tmp_path``."""
    etc = tmp_path / "etc"
    etc.mkdir()
    text = (REPO / "overlay/etc/asl-auth-host/config.yaml").read_text(encoding="utf-8")
    text = text.replace("/var/lib/asl", str(tmp_path / "data")).replace("/var/log/asl-auth-host.log",
                                                                       str(tmp_path / "host.log"))
    text = text.replace("/etc/asl-auth-host/", f"{etc}/")
    (etc / "config.yaml").write_text(text, encoding="utf-8")
    for name in ("roots.cbor", "policy.hash"):
        (etc / name).write_bytes((authority / name).read_bytes())
    (tmp_path / "data").mkdir()
    return etc / "config.yaml"


def _host(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asl_host.authhost", "--config", str(config), "--once",
                           "--ready-file", str(config.parent / "ready"), *extra], capture_output=True, text=True)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.integration.pipeline_fixtures import make_test_authority

    return make_test_authority(tmp_path_factory.mktemp("host") / "roots")


def test_host_checks_each_domain_counts_boots_and_writes_a_claim(tmp_path: Path, authority: Path) -> None:
    from asl_host.claim import read_claim
    from tests.hostfaults import make_domain

    config = _host_config(tmp_path, authority)
    make_domain(tmp_path / "data", "personal", authority, None, tmp_path / "work")
    make_domain(tmp_path / "data", "common", authority, "dam-flip", tmp_path / "work")
    first = _host(config, "--no-require-mount")
    assert first.returncode == 0, first.stderr
    assert "ASL-AUTH-HOST READY boot=1 domains=common:read-only,personal:writable,pools:read-only" in first.stdout
    assert "domain common (id common): read-only: dam: Ed25519 signature does not verify" in first.stdout
    assert "domain pools (id pools): read-only: not initialised" in first.stdout
    log = (tmp_path / "host.log").read_text()
    assert "WARNING domain common (id common): read-only: dam: Ed25519 signature does not verify" in log
    assert _host(config, "--no-require-mount").stdout.count("READY boot=2 ") == 1
    claim = read_claim((tmp_path / "data/.asl-host/env-claims/2.claim").read_bytes())
    assert claim.boot == 2 and claim.stores["personal"]["state"] == "writable"
    assert claim.image == "sha256:" + "0" * 64  # no boot medium here
    assert not (tmp_path / "data/pools").exists()  # a read-only domain is never created or written


def test_host_refuses_storage_that_is_not_a_mount_point(tmp_path: Path, authority: Path) -> None:
    res = _host(_host_config(tmp_path, authority))
    assert res.returncode == 2 and "not a mount point" in res.stderr


def test_host_refuses_to_start_without_usable_pinned_trust(tmp_path: Path, authority: Path) -> None:
    config = _host_config(tmp_path, authority)
    (config.parent / "policy.hash").write_text("sha256:nothex\n")
    res = _host(config, "--no-require-mount")
    assert res.returncode == 2 and "pinned trust unusable" in res.stderr and "READY" not in res.stdout


def test_config_shell_hands_the_paths_to_the_boot_script() -> None:
    res = subprocess.run([sys.executable, "-m", "asl_host.config", "--shell",
                          str(REPO / "overlay/etc/asl-auth-host/config.yaml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    from asl_host import paths

    assert f"ASL_READY_FILE={paths.READY_FILE}" in res.stdout.splitlines()
    assert "ASL_DOMAINS='common personal pools'" in res.stdout.splitlines()
    script = (REPO / "overlay/bin/init-asl-host.sh").read_text()
    for constant in (str(paths.READY_FILE), paths.STATE_DIR, paths.DOMAIN_MARKER, paths.TEST_MODE_MARKER,
                     str(paths.DEFAULT_CONFIG)):
        assert constant not in script, f"init-asl-host.sh repeats {constant}"
