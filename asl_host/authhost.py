"""``asl-auth-host``: the authority host service started by ``init-asl-host.sh`` (spec section 5).

On start it (1) checks that the writable storage is a mount point of its own, never the read-only
system image (spec section 6); (2) initialises or opens the domain stores ``common``, ``personal``
and ``pools`` on it; (3) enforces the DAM: ``policy.hash`` must equal the hash of the ``policy`` in
``config.yaml``, and the data disk's witness record (written on its first boot) must name the same
policy; (4) counts the boot, logs to ``/var/log/asl-auth-host.log``, writes a ready file and prints
``ASL-AUTH-HOST READY ...`` on the console. It then waits for SIGTERM/SIGINT. The authority
operations themselves are out of this module's scope.

Exit codes: 0 stopped cleanly (or ``--once``), 1 the DAM refused to start, 2 configuration or
storage unusable.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from asl_host.config import DOMAINS, HostConfig, load, pinned_policy_hash, policy_digest
from asl_host.errors import HostError, PolicyError, StorageError
from asl_host.paths import BOOTS_NAME, DEFAULT_CONFIG, DOMAIN_MARKER, READY_FILE, STATE_DIR, WITNESS_NAME

LOGGER = "asl-auth-host"


@dataclass(frozen=True)
class Started:
    """What :func:`start` found and did."""

    boot: int
    policy: str
    stores: tuple[Path, ...]
    created: tuple[str, ...]


def open_stores(cfg: HostConfig, *, require_mount: bool = True) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """Create or open the domain stores under the mount point; returns (paths, names created).

    Raises:
        StorageError: the mount point is not a separate mount (when required) or not writable.
    """
    root = cfg.mountpoint
    if not root.is_dir():
        raise StorageError(f"{root}: storage directory missing")
    if require_mount and not os.path.ismount(root):
        raise StorageError(f"{root}: not a mount point (data disk not mounted; refusing to use the system image)")
    paths: list[Path] = []
    created: list[str] = []
    try:
        for name in DOMAINS:
            store = root / cfg.domains[name]
            marker = store / DOMAIN_MARKER
            if not marker.is_file():
                store.mkdir(mode=0o750, exist_ok=True)
                marker.write_text(f"domain: {name}\nformat: 1\n", encoding="utf-8")
                created.append(name)
            if not os.access(store, os.W_OK):
                raise StorageError(f"{store}: store not writable")
            paths.append(store)
        (root / STATE_DIR).mkdir(mode=0o750, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{root}: cannot initialise stores: {exc.strerror}") from None
    return tuple(paths), tuple(created)


def enforce_dam(cfg: HostConfig) -> str:
    """Check the policy against ``policy.hash`` and the data disk's witness; returns the policy hash.

    Raises:
        PolicyError: a mismatch; the service must not start.
        HostConfigError: ``policy.hash`` unreadable or malformed.
        StorageError: the witness record cannot be read or written.
    """
    actual = policy_digest(cfg.policy)
    pinned = pinned_policy_hash(cfg)
    if pinned != actual:
        raise PolicyError(f"{cfg.policy_hash_file} pins {pinned} but config.yaml's policy hashes to {actual}")
    witness = cfg.mountpoint / STATE_DIR / WITNESS_NAME
    try:
        if witness.is_file():
            seen = witness.read_text(encoding="ascii").strip()
            if seen != actual:
                raise PolicyError(f"this data disk witnessed policy {seen}, the image carries {actual}")
        else:
            witness.write_text(actual + "\n", encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"{witness}: {exc}") from None
    return actual


def count_boot(cfg: HostConfig) -> int:
    """Increment and return the boot counter kept on the data disk. Raises StorageError."""
    path = cfg.mountpoint / STATE_DIR / BOOTS_NAME
    try:
        text = path.read_text(encoding="ascii").strip() if path.exists() else "0"
        boot = (int(text) if text.isdigit() else 0) + 1
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{boot}\n", encoding="ascii")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror}") from None
    return boot


def start(cfg: HostConfig, *, require_mount: bool = True) -> Started:
    """Steps 3 to 5 of the boot workflow. Raises StorageError, PolicyError or HostConfigError."""
    stores, created = open_stores(cfg, require_mount=require_mount)
    policy = enforce_dam(cfg)
    boot = count_boot(cfg)
    return Started(boot=boot, policy=policy, stores=stores, created=created)


def _logger(path: Path) -> logging.Logger:
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.INFO)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asl-auth-host``; exit 0 stopped, 1 DAM refused, 2 unusable config/storage."""
    parser = argparse.ArgumentParser(prog="asl-auth-host", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--ready-file", type=Path, default=READY_FILE)
    parser.add_argument("--once", action="store_true", help="exit after READY (checks, tests)")
    parser.add_argument("--no-require-mount", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-file", type=Path, help="override config.yaml's log.file")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        log = _logger(args.log_file or cfg.log_file)
    except (HostError, OSError) as exc:
        print(f"asl-auth-host: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    log.info("starting: config %s, storage %s", args.config, cfg.mountpoint)
    try:
        started = start(cfg, require_mount=not args.no_require_mount)
    except HostError as exc:
        log.error("refusing to start: %s: %s", type(exc).__name__, exc)
        print(f"asl-auth-host: refusing to start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    for name in started.created:
        log.info("initialised domain store %s", name)
    log.info("DAM: policy %s matches policy.hash and the data disk's witness", started.policy)
    line = (f"ASL-AUTH-HOST READY boot={started.boot} policy={started.policy} "
            f"stores={','.join(p.name for p in started.stores)}")
    log.info("%s", line)
    try:
        args.ready_file.write_text(line + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write %s: %s", args.ready_file, exc.strerror)
    print(line, flush=True)
    if args.once:
        return 0
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            signal.pause()
    finally:
        log.info("stopping")


if __name__ == "__main__":
    sys.exit(main())
