"""The authority host's configuration (``config.yaml``) and its DAM policy hash.

The policy is the ``policy`` mapping of ``config.yaml``; ``policy.hash`` holds
``sha256:<hex>`` of its deterministic CBOR encoding (:func:`policy_digest`), so a policy edited
without updating the hash (or the other way round) is detected before the service starts.
``python3 -m asl_host.config --shell [FILE]`` prints the settings and path constants the boot script
needs as shell assignments.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asl_capture import dcbor
from asl_host.errors import HostConfigError, HostError
from asl_host.paths import DEFAULT_CONFIG, POLICY_HASH_NAME, shell_constants

DOMAINS = ("common", "personal", "pools")


@dataclass(frozen=True)
class HostConfig:
    """Validated settings of ``config.yaml``."""

    hostname: str
    storage_label: str
    storage_device: str | None
    mountpoint: Path
    mount_options: str
    wait_seconds: int
    domains: dict[str, str]
    network_enabled: bool
    log_file: Path
    policy: dict[str, dcbor.Value]
    policy_hash_file: Path


_TOP = {"version", "host", "storage", "domains", "network", "log", "policy"}


def _section(data: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise HostConfigError(f"{key}: expected a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise HostConfigError(f"{key}.{unknown[0]}: unknown key")
    return value


def _typed(section: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = section.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HostConfigError(f"{where}.{key}: expected {kind.__name__}")
    return value


def _policy_value(value: Any, where: str) -> dcbor.Value:
    if isinstance(value, dict):
        out: dict[str, dcbor.Value] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise HostConfigError(f"{where}: policy keys must be strings")
            out[k] = _policy_value(v, f"{where}.{k}")
        return out
    if isinstance(value, list):
        return [_policy_value(v, where) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    raise HostConfigError(f"{where}: policy values must be mappings, lists, strings, integers or booleans")


def parse(data: object, *, base: Path) -> HostConfig:
    """Validate parsed YAML. Raises HostConfigError naming the offending key."""
    if not isinstance(data, dict):
        raise HostConfigError("top level: expected a mapping")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise HostConfigError(f"{unknown[0]}: unknown key")
    if data.get("version") != 1:
        raise HostConfigError("version: expected 1")
    host = _section(data, "host", {"name"})
    storage = _section(data, "storage", {"label", "device", "mountpoint", "options", "wait_seconds"})
    domains = _section(data, "domains", set(DOMAINS))
    network = _section(data, "network", {"enabled"})
    log = _section(data, "log", {"file"})
    policy = data.get("policy")
    if not isinstance(policy, dict) or not policy:
        raise HostConfigError("policy: expected a non-empty mapping (the DAM policy)")
    dom = {name: str(_typed(domains, name, str, name, "domains")) for name in DOMAINS}
    for name, rel in dom.items():
        if "/" in rel or rel in ("", ".", ".."):
            raise HostConfigError(f"domains.{name}: expected a plain directory name")
    mountpoint = Path(_typed(storage, "mountpoint", str, "/var/lib/asl", "storage"))
    if not mountpoint.is_absolute():
        raise HostConfigError("storage.mountpoint: expected an absolute path")
    policy_value = _policy_value(policy, "policy")
    assert isinstance(policy_value, dict)
    return HostConfig(
        hostname=_typed(host, "name", str, "asl-auth-host", "host"),
        storage_label=_typed(storage, "label", str, "ASL-DATA", "storage"),
        storage_device=_typed(storage, "device", str, None, "storage"),
        mountpoint=mountpoint,
        mount_options=_typed(storage, "options", str, "nodev,nosuid,noexec", "storage"),
        wait_seconds=_typed(storage, "wait_seconds", int, 20, "storage"),
        domains=dom,
        network_enabled=_typed(network, "enabled", bool, False, "network"),
        log_file=Path(_typed(log, "file", str, "/var/log/asl-auth-host.log", "log")),
        policy=policy_value,
        policy_hash_file=base / POLICY_HASH_NAME,
    )


def load(path: Path = DEFAULT_CONFIG) -> HostConfig:
    """Read and validate ``config.yaml``. Raises HostConfigError."""
    import yaml  # imported here: keeps --shell start-up cheap

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HostConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise HostConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse(data, base=path.parent)


def policy_digest(policy: dict[str, dcbor.Value]) -> str:
    """``sha256:<hex>`` of the deterministic CBOR encoding of the policy mapping."""
    return "sha256:" + hashlib.sha256(dcbor.encode(policy)).hexdigest()


def pinned_policy_hash(cfg: HostConfig) -> str:
    """The content of ``policy.hash`` (first line, stripped). Raises HostConfigError."""
    try:
        text = cfg.policy_hash_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise HostConfigError(f"{cfg.policy_hash_file}: cannot read: {exc}") from None
    line = text.strip().splitlines()[0] if text.strip() else ""
    if not line.startswith("sha256:") or len(line) != 71:
        raise HostConfigError(f"{cfg.policy_hash_file}: expected one line 'sha256:<64 hex>'")
    return line


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
        "ASL_DOMAINS": " ".join(cfg.domains[d] for d in DOMAINS),
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
    print("\n".join(shell_lines(cfg, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
