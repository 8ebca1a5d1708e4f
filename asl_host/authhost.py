"""``asl-auth-host``: the authority host service started by ``init-asl-host.sh`` (spec section 5).

On start it (1) checks that the writable storage is a mount point of its own, never the read-only
system image (spec section 6); (2) loads the trust pinned in the image (``roots.cbor``,
``policy.hash``); (3) enforces witness authority per domain (:mod:`asl_host.authority`): a domain is
writable only when its certificate, DAM, policy hash and log all hold, otherwise read-only with the
reason on the console and in the log, and nothing of it is written; (4) writes the environment claim
of this boot, signed by the host's key (:mod:`asl_host.claim`); (5) prints
``ASL-AUTH-HOST READY boot=N domains=name:state,...``. It then waits for SIGTERM/SIGINT.

Exit codes: 0 stopped cleanly (or ``--once``), 2 configuration, trust or storage unusable.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from asl_capture import __version__
from asl_host import claim
from asl_host.authority import Trust, Verdict, assess
from asl_host.config import HostConfig, load
from asl_host.errors import HostError, StorageError
from asl_host.paths import BOOTS_NAME, BUILD_MANIFEST, DEFAULT_CONFIG, READY_FILE, STATE_DIR

LOGGER = "asl-auth-host"


@dataclass(frozen=True)
class Started:
    """What :func:`start` found and did."""

    boot: int
    verdicts: tuple[Verdict, ...]
    claim_path: Path
    image: str
    check_seconds: float


def check_storage(cfg: HostConfig, *, require_mount: bool) -> Path:
    """The host's state directory on the data disk (created). Raises StorageError."""
    root = cfg.mountpoint
    if not root.is_dir():
        raise StorageError(f"{root}: storage directory missing")
    if require_mount and not os.path.ismount(root):
        raise StorageError(f"{root}: not a mount point (data disk not mounted; refusing to use the system image)")
    state = root / STATE_DIR
    try:
        state.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{state}: cannot create: {exc.strerror}") from None
    return state


def count_boot(state: Path) -> int:
    """Increment and return the boot counter kept on the data disk. Raises StorageError."""
    path = state / BOOTS_NAME
    try:
        text = path.read_text(encoding="ascii").strip() if path.exists() else "0"
        boot = (int(text) if text.isdigit() else 0) + 1
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{boot}\n", encoding="ascii")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"{path}: {exc}") from None
    return boot


def _hook(log: logging.Logger, name: str, command: str | None) -> None:
    if not command:
        return
    try:
        res = subprocess.run([command], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("hook %s (%s) failed: %s", name, command, exc)
        return
    level = logging.INFO if res.returncode == 0 else logging.WARNING
    log.log(level, "hook %s (%s) exited %d", name, command, res.returncode)


def start(cfg: HostConfig, log: logging.Logger, *, require_mount: bool, manifest: Path) -> Started:
    """Steps 2 to 4 of the module docstring. Raises StorageError or HostConfigError."""
    state = check_storage(cfg, require_mount=require_mount)
    trust = Trust.load(cfg.roots_file, cfg.policy_hash_file)
    _hook(log, "pre_start", cfg.hooks.get("pre_start"))
    t0 = time.monotonic()
    verdicts = tuple(assess(d.name, d.id, cfg.store(d), trust) for d in cfg.domains)
    seconds = time.monotonic() - t0
    boot = count_boot(state)
    made = claim.write_claim(state, boot=boot, trust=trust, verdicts=verdicts, manifest=manifest)
    return Started(boot=boot, verdicts=verdicts, claim_path=made.path, image=made.image, check_seconds=seconds)


def _logger(path: Path, level: str) -> logging.Logger:
    log = logging.getLogger(LOGGER)
    log.setLevel({"WARN": logging.WARNING}.get(level, getattr(logging, level, logging.INFO)))
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asl-auth-host``; exit 0 stopped, 2 unusable config, trust or storage."""
    parser = argparse.ArgumentParser(prog="asl-auth-host", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--ready-file", type=Path, default=READY_FILE)
    parser.add_argument("--once", action="store_true", help="exit after READY (checks, tests)")
    parser.add_argument("--no-require-mount", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, default=BUILD_MANIFEST, help=argparse.SUPPRESS)
    parser.add_argument("--log-file", type=Path, help="override config.yaml's logging.path")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        log = _logger(args.log_file or cfg.log_file, cfg.log_level)
    except (HostError, OSError) as exc:
        print(f"asl-auth-host: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    log.info("starting: config %s, storage %s, mode %s", args.config, cfg.mountpoint, cfg.mode)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    try:
        started = start(cfg, log, require_mount=not args.no_require_mount, manifest=args.manifest)
    except HostError as exc:
        log.error("refusing to start: %s: %s", type(exc).__name__, exc)
        print(f"asl-auth-host: refusing to start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    for v in started.verdicts:
        if v.writable:
            line = f"domain {v.name} (id {v.domain_id}): writable"
            log.info("%s", line)
        else:
            line = f"domain {v.name} (id {v.domain_id}): read-only: {v.reason}"
            log.warning("%s", line)
        print(f"asl-auth-host: {line}", flush=True)
    timing = f"DAM checks of {len(started.verdicts)} domain(s) took {started.check_seconds:.3f} s"
    log.info("%s", timing)
    print(f"asl-auth-host: {timing}", flush=True)
    log.info("environment claim %s (image %s)", started.claim_path, started.image)
    print(f"asl-auth-host: environment claim {started.claim_path} image={started.image}", flush=True)
    line = (f"ASL-AUTH-HOST READY boot={started.boot} "
            f"domains={','.join(f'{v.name}:{v.state}' for v in started.verdicts)}")
    log.info("%s", line)
    try:
        args.ready_file.write_text(line + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write %s: %s", args.ready_file, exc.strerror)
    print(line, flush=True)
    _hook(log, "post_start", cfg.hooks.get("post_start"))
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
