#!/usr/bin/env python3
"""Load and validate ``pipeline/image.yaml`` (stdlib + PyYAML only; runs before the package is installed).

Usage::

    imageconfig.py [--config FILE] --shell       # print IMG_* shell assignments (for eval)
    imageconfig.py [--config FILE] --get KEY     # print one value (dotted key, e.g. kernel.modules)
    imageconfig.py [--config FILE] --check       # validate only

Errors are one line on stderr, ``image.yaml: <key>: <problem>``, exit status 2.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_STR = "a string"
_LIST = "a list of strings"
_INT = "an integer"
_OPT = "a string or null"
_MAP = "a mapping"

#: key -> (kind, required); nested mappings are listed as their own schemas.
SCHEMA: dict[str, tuple[str, bool]] = {
    "name": (_STR, True),
    "version": (_STR, True),
    "suite": (_STR, True),
    "variant": (_STR, True),
    "architecture": (_STR, True),
    "components": (_LIST, True),
    "suites": (_LIST, True),
    "mirror": (_OPT, False),
    "security_mirror": (_OPT, False),
    "hostname": (_STR, True),
    "packages": (_LIST, True),
    "path_exclude": (_LIST, False),
    "path_include": (_LIST, False),
    "kernel": (_MAP, True),
    "boot": (_MAP, True),
    "python_package": (_STR, True),
    "python_shared": (_STR, True),
    "trust": (_MAP, True),
    "python_dest": (_STR, True),
    "paths": (_MAP, True),
}
NESTED: dict[str, dict[str, tuple[str, bool]]] = {
    "kernel": {"modules": (_LIST, True)},
    "boot": {"serial": (_STR, True), "timeout": (_INT, True), "cmdline": (_STR, False)},
    "trust": {"roots": (_STR, True), "policy_hash": (_STR, True)},
    "paths": {
        "overlay": (_STR, True),
        "out": (_STR, True),
        "work": (_STR, True),
        "provenance": (_STR, True),
        "cache": (_OPT, False),
        "store": (_OPT, False),
    },
}
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_VARIANTS = ("minbase", "essential", "required", "important", "standard")


class ConfigError(Exception):
    """The configuration is invalid; the message is one line, ``<key>: <problem>``."""


@dataclass(frozen=True)
class ImageConfig:
    """A validated image configuration (a plain mapping; keys as in image.yaml)."""

    data: dict[str, Any]

    def get(self, dotted: str) -> Any:
        """The value at a dotted key. Raises ConfigError when it does not exist."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{dotted}: no such key")
            node = node[part]
        return node


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check(key: str, value: object, kind: str) -> None:
    ok = {
        _STR: isinstance(value, str) and value != "",
        _OPT: value is None or (isinstance(value, str) and value != ""),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _LIST: isinstance(value, list) and all(isinstance(v, str) and v for v in value),
        _MAP: isinstance(value, dict),
    }[kind]
    if not ok:
        raise ConfigError(f"{key}: expected {kind}, got {_type_name(value)}")


def _validate_map(prefix: str, data: dict[str, Any], schema: dict[str, tuple[str, bool]]) -> None:
    for key in data:
        if not isinstance(key, str) or key not in schema:
            raise ConfigError(f"{prefix}{key}: unknown key (allowed: {', '.join(sorted(schema))})")
    for key, (kind, required) in schema.items():
        if key not in data:
            if required:
                raise ConfigError(f"{prefix}{key}: missing required field")
            continue
        _check(prefix + key, data[key], kind)
        if kind == _MAP:
            _validate_map(f"{prefix}{key}.", data[key], NESTED[key])


def validate(data: object) -> ImageConfig:
    """Validate parsed YAML. Raises ConfigError naming the first offending key."""
    if not isinstance(data, dict):
        raise ConfigError(f"top level: expected {_MAP}, got {_type_name(data)}")
    _validate_map("", data, SCHEMA)
    if not _VERSION.match(data["version"]):
        raise ConfigError(f"version: expected MAJOR.MINOR.PATCH, got {data['version']!r}")
    if not _NAME.match(data["name"]):
        raise ConfigError(f"name: not a valid file-name stem: {data['name']!r}")
    if data["variant"] not in _VARIANTS:
        raise ConfigError(f"variant: expected one of {', '.join(_VARIANTS)}, got {data['variant']!r}")
    if not data["packages"]:
        raise ConfigError("packages: must not be empty")
    if not data["kernel"]["modules"]:
        raise ConfigError("kernel.modules: must not be empty")
    if data["boot"]["timeout"] < 0:
        raise ConfigError("boot.timeout: must not be negative")
    if bool(data.get("mirror")) != bool(data.get("security_mirror")) and any(
        s.endswith("-security") for s in data["suites"]
    ):
        raise ConfigError("security_mirror: set mirror and security_mirror together (or neither)")
    for key in ("suite", "hostname", "architecture"):
        if not _NAME.match(data[key]):
            raise ConfigError(f"{key}: invalid value {data[key]!r}")
    for pkg in data["packages"]:
        if not re.match(r"^[a-z0-9][a-z0-9.+-]+$", pkg):
            raise ConfigError(f"packages: invalid Debian package name {pkg!r}")
    for mod in data["kernel"]["modules"]:
        if not re.match(r"^[A-Za-z0-9_-]+$", mod):
            raise ConfigError(f"kernel.modules: invalid module name {mod!r}")
    data = dict(data)
    data["suites"] = [s.replace("{suite}", data["suite"]) for s in data["suites"]]
    return ImageConfig(data)


def load(path: Path) -> ImageConfig:
    """Read and validate a YAML file. Raises ConfigError (also for unreadable or malformed YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "parse"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    return validate(data)


def _shell_value(value: Any) -> str:
    if value is None:
        return "''"
    if isinstance(value, list):
        return shlex.quote(" ".join(value))
    return shlex.quote(str(value))


def shell_lines(cfg: ImageConfig) -> list[str]:
    """``IMG_<KEY>=<value>`` lines; lists are space-joined, nested keys joined with ``_``."""
    lines: list[str] = []
    for key, value in cfg.data.items():
        if isinstance(value, dict):
            for sub, subval in value.items():
                lines.append(f"IMG_{key.upper()}_{sub.upper()}={_shell_value(subval)}")
        else:
            lines.append(f"IMG_{key.upper()}={_shell_value(value)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit 0 valid, 2 invalid or unreadable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipeline/image.yaml")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--shell", action="store_true")
    group.add_argument("--get")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    name = Path(args.config).name
    try:
        cfg = load(Path(args.config))
        if args.shell:
            sys.stdout.write("\n".join(shell_lines(cfg)) + "\n")
        elif args.get:
            value = cfg.get(args.get)
            sys.stdout.write((" ".join(value) if isinstance(value, list) else str(value)) + "\n")
    except ConfigError as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
