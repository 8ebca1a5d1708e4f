"""The image's compatibility surface and the versioning rule (spec section 8).

"Backward-incompatible image changes MUST bump the major version." What counts as incompatible is
compared between the image being published and the latest earlier release in ``dist/``:

- a path of the spec's overlay layout (section 3) removed, renamed or changed in kind;
- a key of ``etc/asl-auth-host/config.yaml`` removed, renamed or retyped (``null`` is compatible
  with every type: it means "not set");
- the record format's major version changed.

Any of these without a major bump refuses the release, naming every change. Additions (a layout
path or a config key that was not there) need at least a minor bump.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Protocol

from asl_capture.errors import ReleaseError, UsageError
from asl_capture.format import Surface
from asl_capture.frozen import frozen

#: The spec's overlay layout (ASL/AUTH-HOST-IMAGE/1 section 3), relative to the image's root.
SPEC_LAYOUT = (
    "bin", "bin/asl-auth-host", "bin/asl-rescue", "bin/init-asl-host.sh",
    "etc", "etc/asl-auth-host", "etc/asl-auth-host/config.yaml", "etc/asl-auth-host/policy.hash",
    "var", "var/lib", "var/lib/asl", "var/lib/asl/common", "var/lib/asl/personal", "var/lib/asl/pools",
    "var/log", "var/log/asl-auth-host.log",
    "usr", "usr/local", "usr/local/bin", "usr/local/bin/asl-admin",
)
CONFIG_PATH = "etc/asl-auth-host/config.yaml"
MAX_CONFIG = 1 << 20
_SEMVER = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_KIND_NAMES = {"f": "file", "d": "directory", "l": "symlink"}


class VersionRuleError(ReleaseError):
    """The image changed in a way its version number does not allow (spec section 8)."""


class ImageTree(Protocol):
    """Read access to an image's root filesystem (a directory, or the system image inside an ISO)."""

    def kind(self, path: str) -> str | None:
        """The kind ("f", "d", "l", ...) of ``path`` (intermediate symlinks followed inside the image)."""
        ...

    def read(self, path: str, *, limit: int) -> bytes:
        """The bytes of the regular file ``path`` (at most ``limit``)."""
        ...


class DirectoryTree:
    """An image root that is a directory on this machine; symlinks resolved inside it (chroot-style)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _resolve(self, rel: str) -> Path | None:
        current = self.root
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                current = current.parent if current != self.root else current
                continue
            candidate = current / part
            if parts and candidate.is_symlink():
                hops += 1
                if hops > 40:
                    return None
                target = os.readlink(candidate)
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                current = self.root if target.startswith("/") else current
                continue
            current = candidate
        return current

    def kind(self, path: str) -> str | None:
        resolved = self._resolve(path)
        if resolved is None:
            return None
        try:
            mode = resolved.lstat().st_mode
        except OSError:
            return None
        return "f" if stat.S_ISREG(mode) else "d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else "o"

    def read(self, path: str, *, limit: int) -> bytes:
        resolved = self._resolve(path)
        if resolved is None or self.kind(path) != "f":
            raise UsageError(f"/{path}: not a regular file in the image")
        with open(resolved, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise UsageError(f"/{path}: larger than {limit} bytes")
        return data


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return {int: "int", float: "float", str: "str"}.get(type(value), type(value).__name__)


def config_schema(data: bytes) -> dict[str, str]:
    """``config.yaml``'s schema: every key path (``a.b``, list elements as ``a[]``) -> its type.

    Raises:
        UsageError: not valid YAML, or not a mapping at the top.
    """
    import yaml

    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"/{CONFIG_PATH}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"/{CONFIG_PATH}: not a mapping")
    schema: dict[str, set[str]] = {}

    def walk(value: object, path: str) -> None:
        if path:
            schema.setdefault(path, set()).add(_type_name(value))
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for child in value:
                walk(child, f"{path}[]")

    walk(doc, "")
    return {path: "|".join(sorted(types)) for path, types in sorted(schema.items())}


def image_surface(tree: ImageTree, *, record_format: int) -> Surface:
    """The compatibility surface of an image.

    Raises:
        UsageError: the image's config.yaml is missing or unreadable.
    """
    layout = {path: kind for path in SPEC_LAYOUT if (kind := tree.kind(path)) is not None}
    if layout.get(CONFIG_PATH) != "f":
        raise UsageError(f"the image has no /{CONFIG_PATH}")
    return Surface(record_format=record_format, layout=layout,
                   config=config_schema(tree.read(CONFIG_PATH, limit=MAX_CONFIG)))


@frozen
class Changes:
    """How a surface changed: incompatible changes and additions, each one human-readable line."""

    incompatible: tuple[str, ...]
    additions: tuple[str, ...]


def _compatible_types(old: str, new: str) -> bool:
    return old == new or "null" in (old, new)


def compare(old: Surface, new: Surface) -> Changes:
    """What changed from ``old`` to ``new`` (see the module docstring)."""
    incompatible: list[str] = []
    additions: list[str] = []
    if old.record_format != new.record_format:
        incompatible.append(f"record format major version changed from {old.record_format} to {new.record_format}")
    added_paths = sorted(set(new.layout) - set(old.layout))
    for path in sorted(old.layout):
        if path not in new.layout:
            hint = [p for p in added_paths if os.path.dirname(p) == os.path.dirname(path)]
            renamed = f" (renamed to /{hint[0]}?)" if hint else ""
            incompatible.append(f"overlay layout path /{path} removed or renamed{renamed}")
        elif old.layout[path] != new.layout[path]:
            incompatible.append(f"overlay layout path /{path} changed from {_KIND_NAMES.get(old.layout[path], '?')} "
                                f"to {_KIND_NAMES.get(new.layout[path], '?')}")
    additions.extend(f"overlay layout path /{path} added" for path in added_paths)
    added_keys = sorted(set(new.config) - set(old.config))
    for key in sorted(old.config):
        if key not in new.config:
            parent = key.rpartition(".")[0]
            hint = [k for k in added_keys if k.rpartition(".")[0] == parent and new.config[k] == old.config[key]]
            renamed = f" (renamed to '{hint[0]}'?)" if hint else ""
            incompatible.append(f"config.yaml key '{key}' removed or renamed{renamed}")
        elif not _compatible_types(old.config[key], new.config[key]):
            incompatible.append(f"config.yaml key '{key}' retyped from {old.config[key]} to {new.config[key]}")
    additions.extend(f"config.yaml key '{key}' added" for key in added_keys)
    return Changes(incompatible=tuple(incompatible), additions=tuple(additions))


def parse_version(text: str) -> tuple[int, int, int]:
    """``MAJOR.MINOR.PATCH``.

    Raises:
        UsageError: not of that form.
    """
    m = _SEMVER.fullmatch(text)
    if m is None:
        raise UsageError(f"version {text!r} is not MAJOR.MINOR.PATCH")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check_version(*, old_version: str, old: Surface, new_version: str, new: Surface) -> Changes:
    """Apply the versioning rule between the latest earlier release and this one; return the changes.

    Raises:
        UsageError: a version is not MAJOR.MINOR.PATCH.
        VersionRuleError: the version is not above the earlier one, an incompatible change without a
            major bump, or an addition without at least a minor bump (every change is named).
    """
    old_v, new_v = parse_version(old_version), parse_version(new_version)
    if new_v <= old_v:
        raise VersionRuleError(f"version {new_version} is not above the latest release {old_version}")
    changes = compare(old, new)
    if changes.incompatible and new_v[0] == old_v[0]:
        raise VersionRuleError(f"incompatible change(s) since {old_version} need a major version bump "
                               f"(to {old_v[0] + 1}.0.0): " + "; ".join(changes.incompatible))
    if changes.additions and new_v[:2] == old_v[:2]:
        raise VersionRuleError(f"addition(s) since {old_version} need at least a minor version bump "
                               f"(to {old_v[0]}.{old_v[1] + 1}.0): " + "; ".join(changes.additions))
    return changes
