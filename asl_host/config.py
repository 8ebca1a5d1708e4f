"""The host's ``config.yaml`` (ASL/AUTH-HOST-CONFIG/1 sections, plus ``storage`` and ``network``).

Sections: ``host {name, version, mode}``, ``domains {<name>: {id, type, path, snapshot_retention,
allowed_operations, courtesy_lease}}``, ``certificates {root_offline_path, domain_authority_path,
sops_bundle_path}``, ``policy {hash_file, description}``, ``logging {path, level}``, ``store {type,
pools, enable_snapshotting, snapshot_prefix}``, ``hooks {pre_start, post_start}``, and ours:
``storage {label, device, mountpoint, options, wait_seconds}``, ``network {enabled}``.
Unknown fields are ignored with a warning (upstream's rule, :attr:`HostConfig.warnings`); a wrong
type is a one-line :class:`HostConfigError` naming the key. ``python3 -m asl_host.config --shell
[FILE]`` prints the settings and path constants the boot script needs as shell assignments.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asl_host.errors import HostConfigError, HostError
from asl_host.paths import DEFAULT_CONFIG, POLICY_HASH_NAME, ROOTS_NAME, shell_constants

MODES = ("normal", "rescue", "admission")
DOMAIN_TYPES = ("courtesy", "private", "authority")
OPERATIONS = ("read", "write", "append", "seal", "gc")
LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")


@dataclass(frozen=True)
class DomainConfig:
    """One ``domains.<name>`` entry."""

    name: str
    id: str
    type: str
    path: str
    snapshot_retention: int
    allowed_operations: tuple[str, ...]
    courtesy_lease: int | None


@dataclass(frozen=True)
class HostConfig:
    """Validated settings of ``config.yaml``."""

    hostname: str
    mode: str
    storage_label: str
    storage_device: str | None
    mountpoint: Path
    mount_options: str
    wait_seconds: int
    domains: tuple[DomainConfig, ...]
    network_enabled: bool
    log_file: Path
    log_level: str
    roots_file: Path
    policy_hash_file: Path
    store_type: str
    hooks: dict[str, str | None]
    warnings: tuple[str, ...] = field(default=())

    def store(self, domain: DomainConfig) -> Path:
        return self.mountpoint / domain.path


class _Reader:
    """Typed look-ups in one section; unknown keys become warnings."""

    def __init__(self, data: object, where: str, allowed: set[str], warnings: list[str]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise HostConfigError(f"{where}: expected a mapping")
        self.data, self.where = data, where
        for key in sorted(set(map(str, data)) - allowed):
            warnings.append(f"{where}.{key}: unknown field ignored")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(key, default)
        if value is None and default is None:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (int in kinds and bool not in kinds and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in kinds)
            raise HostConfigError(f"{self.where}.{key}: expected {names}, got {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = str(self.get(key, str, default))
        if value not in choices:
            raise HostConfigError(f"{self.where}.{key}: expected one of {', '.join(choices)}, got {value!r}")
        return value


def _plain_name(value: str, where: str) -> str:
    if "/" in value or value in ("", ".", "..") or value.startswith("."):
        raise HostConfigError(f"{where}: expected a plain directory name, got {value!r}")
    return value


def _domains(data: object, warnings: list[str]) -> tuple[DomainConfig, ...]:
    if not isinstance(data, dict) or not data:
        raise HostConfigError("domains: expected a non-empty mapping of domain names")
    out = []
    for name, entry in data.items():
        where = f"domains.{name}"
        r = _Reader(entry, where, {"id", "type", "path", "snapshot_retention", "allowed_operations",
                                   "courtesy_lease"}, warnings)
        ops = r.get("allowed_operations", list, list(OPERATIONS))
        bad = [o for o in ops if o not in OPERATIONS]
        if bad:
            raise HostConfigError(f"{where}.allowed_operations: {bad[0]!r} is not one of {', '.join(OPERATIONS)}")
        dtype = r.choice("type", DOMAIN_TYPES, "private")
        lease = r.get("courtesy_lease", int, None)
        if lease is not None and dtype != "courtesy":
            raise HostConfigError(f"{where}.courtesy_lease: only for courtesy domains")
        out.append(DomainConfig(
            name=_plain_name(str(name), where), id=str(r.get("id", str, str(name))), type=dtype,
            path=_plain_name(str(r.get("path", str, str(name))), f"{where}.path"),
            snapshot_retention=int(r.get("snapshot_retention", int, 0)), allowed_operations=tuple(ops),
            courtesy_lease=lease,
        ))
    ids = [d.id for d in out]
    if len(set(ids)) != len(ids):
        raise HostConfigError("domains: two domains share one id")
    return tuple(out)


def parse(data: object, *, base: Path) -> HostConfig:
    """Validate parsed YAML. Raises HostConfigError naming the offending key."""
    if not isinstance(data, dict):
        raise HostConfigError("top level: expected a mapping")
    warnings: list[str] = []
    top = _Reader(data, "config", {"version", "host", "domains", "certificates", "policy", "logging", "store",
                                   "hooks", "storage", "network"}, warnings)
    if top.get("version", int, 1) != 1:
        raise HostConfigError("config.version: expected 1")
    host = _Reader(data.get("host"), "host", {"name", "version", "mode"}, warnings)
    storage = _Reader(data.get("storage"), "storage", {"label", "device", "mountpoint", "options", "wait_seconds"},
                      warnings)
    certs = _Reader(data.get("certificates"), "certificates", {"root_offline_path", "domain_authority_path",
                                                               "sops_bundle_path"}, warnings)
    policy = _Reader(data.get("policy"), "policy", {"hash_file", "description"}, warnings)
    logging_ = _Reader(data.get("logging"), "logging", {"path", "level"}, warnings)
    store = _Reader(data.get("store"), "store", {"type", "pools", "enable_snapshotting", "snapshot_prefix"}, warnings)
    hooks = _Reader(data.get("hooks"), "hooks", {"pre_start", "post_start"}, warnings)
    network = _Reader(data.get("network"), "network", {"enabled"}, warnings)
    host.get("version", (str, int), "1")
    store.get("pools", list, [])
    store.get("enable_snapshotting", bool, True)
    store.get("snapshot_prefix", str, "asl")
    certs.get("domain_authority_path", str, "authority")
    certs.get("sops_bundle_path", str, None)
    policy.get("description", str, "")
    store_type = store.choice("type", ("posix", "zfs"), "posix")
    if store_type == "zfs":
        raise HostConfigError("store.type: zfs needs its pools mounted before the host starts; this image has "
                              "no ZFS (use posix)")
    mountpoint = Path(storage.get("mountpoint", str, "/var/lib/asl"))
    if not mountpoint.is_absolute():
        raise HostConfigError("storage.mountpoint: expected an absolute path")

    def _path(reader: _Reader, key: str, default: str) -> Path:
        path = Path(reader.get(key, str, default))
        return path if path.is_absolute() else base / path

    return HostConfig(
        hostname=host.get("name", str, "asl-auth-host"),
        mode=host.choice("mode", MODES, "normal"),
        storage_label=storage.get("label", str, "ASL-DATA"),
        storage_device=storage.get("device", str, None),
        mountpoint=mountpoint,
        mount_options=storage.get("options", str, "nodev,nosuid,noexec"),
        wait_seconds=storage.get("wait_seconds", int, 20),
        domains=_domains(data.get("domains"), warnings),
        network_enabled=network.get("enabled", bool, False),
        log_file=Path(logging_.get("path", str, "/var/log/asl-auth-host.log")),
        log_level=logging_.choice("level", LEVELS, "INFO"),
        roots_file=_path(certs, "root_offline_path", ROOTS_NAME),
        policy_hash_file=_path(policy, "hash_file", POLICY_HASH_NAME),
        store_type=store_type,
        hooks={k: hooks.get(k, str, None) for k in ("pre_start", "post_start")},
        warnings=tuple(warnings),
    )


def read_yaml(path: Path, error: type[HostError]) -> Any:
    """The YAML document in ``path``; ``error`` (one line naming the file) when it cannot be read or
    is not YAML."""
    import yaml  # imported here: keeps the package's import cheap

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def load(path: Path = DEFAULT_CONFIG) -> HostConfig:
    """Read and validate ``config.yaml``. Raises HostConfigError."""
    return parse(read_yaml(path, HostConfigError), base=path.parent)


def shell_lines(cfg: HostConfig, config_path: Path) -> list[str]:
    """``ASL_*`` shell assignments for ``init-asl-host.sh``: path constants, then settings."""
    values = shell_constants()
    values |= {
        "ASL_CONFIG": str(config_path),
        "ASL_HOSTNAME": cfg.hostname,
        "ASL_STORAGE_LABEL": cfg.storage_label,
        "ASL_STORAGE_DEVICE": cfg.storage_device or "",
        "ASL_MOUNTPOINT": str(cfg.mountpoint),
        "ASL_MOUNT_OPTIONS": cfg.mount_options,
        "ASL_WAIT_SECONDS": str(cfg.wait_seconds),
        "ASL_NETWORK_ENABLED": "1" if cfg.network_enabled else "0",
        "ASL_LOG_FILE": str(cfg.log_file),
        "ASL_DOMAINS": " ".join(d.path for d in cfg.domains),
    }
    return [f"{k}={shlex.quote(v)}" for k, v in values.items()]


def main(argv: list[str] | None = None) -> int:
    """``python3 -m asl_host.config --shell [FILE]``; exit 0, or 2 with a one-line error."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "--shell" or len(args) > 2:
        print("usage: python3 -m asl_host.config --shell [CONFIG]", file=sys.stderr)
        return 2
    path = Path(args[1]) if len(args) == 2 else DEFAULT_CONFIG
    try:
        cfg = load(path)
    except HostError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    for warning in cfg.warnings:
        print(f"config: warning: {warning}", file=sys.stderr)
    print("\n".join(shell_lines(cfg, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
