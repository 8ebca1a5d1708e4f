"""The versioning rule (spec section 8): a passing and a refusing case for each kind of change.

Surfaces are taken from real trees: a copy of this repository's overlay/ (the spec's layout and
config.yaml), changed the way a release could change it.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from asl_capture.errors import UsageError
from asl_capture.format import Surface
from asl_capture.release.surface import (
    SPEC_LAYOUT,
    DirectoryTree,
    VersionRuleError,
    check_version,
    config_schema,
    image_surface,
)

OVERLAY = Path(__file__).resolve().parents[2] / "overlay"
CONFIG = "etc/asl-auth-host/config.yaml"


def surface_of(root: Path, record_format: int = 1) -> Surface:
    return image_surface(DirectoryTree(root), record_format=record_format)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(OVERLAY, root, symlinks=True)
    return root


def edit_config(root: Path, old: str, new: str) -> None:
    path = root / CONFIG
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_overlay_surface_is_the_spec_layout(image: Path) -> None:
    surface = surface_of(image)
    assert set(surface.layout) == set(SPEC_LAYOUT)
    assert surface.layout["bin/asl-auth-host"] == "f" and surface.layout["var/lib/asl/pools"] == "d"
    assert surface.config["storage.wait_seconds"] == "int" and surface.config["storage.device"] == "null"
    assert surface.config["domains.personal.snapshot_retention"] == "int"


def test_symlinked_directories_resolve_inside_the_image(tmp_path: Path, image: Path) -> None:
    """Debian's merged /usr: bin -> usr/bin; the layout path is found through it, inside the image."""
    (image / "usr" / "bin").mkdir()
    for name in ("asl-auth-host", "asl-rescue", "init-asl-host.sh"):
        shutil.move(image / "bin" / name, image / "usr" / "bin" / name)
    (image / "bin").rmdir()
    (image / "bin").symlink_to("usr/bin")
    surface = surface_of(image)
    assert surface.layout["bin"] == "l" and surface.layout["bin/asl-rescue"] == "f"
    (image / "usr" / "bin").rename(image / "usr" / "elsewhere")
    (tmp_path / "usr" / "bin").mkdir(parents=True)  # outside the image: never looked at
    (tmp_path / "usr" / "bin" / "asl-rescue").write_text("x")
    assert "bin/asl-rescue" not in surface_of(image).layout


Change = Callable[[Path], None]


def remove_layout_path(root: Path) -> None:
    (root / "bin" / "asl-rescue").unlink()


def rename_layout_path(root: Path) -> None:
    (root / "usr/local/bin/asl-admin").rename(root / "usr/local/bin/asl-administrator")


def retype_layout_path(root: Path) -> None:
    (root / "var/log/asl-auth-host.log").unlink()
    (root / "var/log/asl-auth-host.log").mkdir()


def remove_config_key(root: Path) -> None:
    edit_config(root, "  level: INFO\n", "")


def rename_config_key(root: Path) -> None:
    edit_config(root, "  label: ASL-DATA", "  fs_label: ASL-DATA")


def retype_config_key(root: Path) -> None:
    edit_config(root, "wait_seconds: 20", 'wait_seconds: "20"')


INCOMPATIBLE: list[tuple[str, Change, str]] = [
    ("layout path removed", remove_layout_path, "overlay layout path /bin/asl-rescue removed or renamed"),
    ("layout path renamed", rename_layout_path, "overlay layout path /usr/local/bin/asl-admin removed or renamed"),
    ("layout path changed kind", retype_layout_path,
     "overlay layout path /var/log/asl-auth-host.log changed from file to directory"),
    ("config key removed", remove_config_key, "config.yaml key 'logging.level' removed or renamed"),
    ("config key renamed", rename_config_key,
     "config.yaml key 'storage.label' removed or renamed (renamed to 'storage.fs_label'?)"),
    ("config key retyped", retype_config_key, "config.yaml key 'storage.wait_seconds' retyped from int to str"),
]


@pytest.mark.parametrize(("kind", "change", "named"), INCOMPATIBLE, ids=[k for k, _, _ in INCOMPATIBLE])
def test_incompatible_change_refused_without_a_major_bump(image: Path, kind: str, change: Change, named: str) -> None:
    old = surface_of(image)
    change(image)
    new = surface_of(image)
    for version in ("1.0.1", "1.1.0", "1.9.0"):
        with pytest.raises(VersionRuleError) as info:
            check_version(old_version="1.0.0", old=old, new_version=version, new=new)
        assert named in str(info.value), kind
        assert "major version bump (to 2.0.0)" in str(info.value)


@pytest.mark.parametrize(("kind", "change", "named"), INCOMPATIBLE, ids=[k for k, _, _ in INCOMPATIBLE])
def test_incompatible_change_allowed_with_a_major_bump(image: Path, kind: str, change: Change, named: str) -> None:
    old = surface_of(image)
    change(image)
    changes = check_version(old_version="1.4.2", old=old, new_version="2.0.0", new=surface_of(image))
    assert any(named in line for line in changes.incompatible), kind


def test_record_format_major_change_needs_a_major_bump(image: Path) -> None:
    old, new = surface_of(image, 1), surface_of(image, 2)
    with pytest.raises(VersionRuleError, match="record format major version changed from 1 to 2"):
        check_version(old_version="1.0.0", old=old, new_version="1.1.0", new=new)
    assert check_version(old_version="1.0.0", old=old, new_version="2.0.0", new=new).incompatible == (
        "record format major version changed from 1 to 2",)


def test_additions_need_a_minor_bump(image: Path) -> None:
    old = surface_of(image)
    edit_config(image, "network:\n", "network:\n  interface: eth0\n")
    new = surface_of(image)
    with pytest.raises(VersionRuleError, match=r"addition\(s\) since 1.0.0 need at least a minor version bump "
                                               r"\(to 1.1.0\): config.yaml key 'network.interface' added"):
        check_version(old_version="1.0.0", old=old, new_version="1.0.1", new=new)
    changes = check_version(old_version="1.0.0", old=old, new_version="1.1.0", new=new)
    assert changes == dataclasses.replace(changes, incompatible=(),
                                          additions=("config.yaml key 'network.interface' added",))


def test_layout_addition_needs_a_minor_bump(image: Path) -> None:
    old = dataclasses.replace(surface_of(image), layout={k: v for k, v in surface_of(image).layout.items()
                                                         if k != "var/lib/asl/pools"})
    new = surface_of(image)
    with pytest.raises(VersionRuleError, match="overlay layout path /var/lib/asl/pools added"):
        check_version(old_version="1.0.0", old=old, new_version="1.0.1", new=new)
    assert check_version(old_version="1.0.0", old=old, new_version="1.1.0", new=new).additions


def test_unchanged_surface_and_set_null_value_need_only_a_patch_bump(image: Path) -> None:
    old = surface_of(image)
    edit_config(image, "device: null", "device: /dev/vdb")  # null means "not set": compatible with any type
    changes = check_version(old_version="1.0.0", old=old, new_version="1.0.1", new=surface_of(image))
    assert changes.incompatible == () and changes.additions == ()


def test_version_must_go_up(image: Path) -> None:
    surface = surface_of(image)
    for version in ("1.0.0", "0.9.9"):
        with pytest.raises(VersionRuleError, match=r"is not above the latest release 1\.0\.0"):
            check_version(old_version="1.0.0", old=surface, new_version=version, new=surface)
    with pytest.raises(UsageError, match=r"is not MAJOR\.MINOR\.PATCH"):
        check_version(old_version="1.0.0", old=surface, new_version="1.1", new=surface)


def test_every_change_is_named_at_once(image: Path) -> None:
    old = surface_of(image)
    remove_layout_path(image)
    retype_config_key(image)
    with pytest.raises(VersionRuleError) as info:
        check_version(old_version="1.0.0", old=old, new_version="1.1.0", new=surface_of(image))
    assert "/bin/asl-rescue" in str(info.value) and "storage.wait_seconds" in str(info.value)


def test_config_schema_lists_and_bad_yaml() -> None:
    assert config_schema(b"a: [1, x]\nb: {c: [{d: true}]}\n") == {
        "a": "list", "a[]": "int|str", "b": "map", "b.c": "list", "b.c[]": "map", "b.c[].d": "bool"}
    for bad in (b"- 1\n", b"a: [\n", b"\xff: 1\n"):
        with pytest.raises(UsageError):
            config_schema(bad)


def test_image_without_config_is_refused(image: Path) -> None:
    (image / CONFIG).unlink()
    with pytest.raises(UsageError, match=r"has no /etc/asl-auth-host/config\.yaml"):
        surface_of(image)
