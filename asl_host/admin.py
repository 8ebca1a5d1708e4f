"""``asl-admin``: small administration commands for the authority host.

``asl-admin policy-hash [--config FILE]`` prints the hash that belongs in ``policy.hash``;
``asl-admin check [--config FILE]`` validates ``config.yaml`` and ``policy.hash`` (exit 0 consistent,
1 mismatch, 2 unreadable); ``asl-admin status [--config FILE]`` shows the storage, boots and stores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from asl_host.cli import run
from asl_host.config import DOMAINS, load, pinned_policy_hash, policy_digest
from asl_host.paths import BOOTS_NAME, DEFAULT_CONFIG, DOMAIN_MARKER, STATE_DIR


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asl-admin``; exit codes as in the module docstring."""
    parser = argparse.ArgumentParser(prog="asl-admin", description="administration of the ASL authority host")
    parser.add_argument("command", choices=("policy-hash", "check", "status"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    return run("asl-admin", lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    actual = policy_digest(cfg.policy)
    if args.command == "policy-hash":
        print(actual)
        return 0
    if args.command == "check":
        pinned = pinned_policy_hash(cfg)
        if pinned != actual:
            print(f"asl-admin: policy.hash pins {pinned}, policy is {actual}", file=sys.stderr)
            return 1
        print(f"ok {actual}")
        return 0
    root = cfg.mountpoint
    print(f"storage {root} mounted={'yes' if os.path.ismount(root) else 'no'}")
    boots = root / STATE_DIR / BOOTS_NAME
    print(f"boots {boots.read_text(encoding='ascii').strip() if boots.is_file() else 0}")
    for name in DOMAINS:
        store = root / cfg.domains[name]
        print(f"store {name} {'present' if (store / DOMAIN_MARKER).is_file() else 'absent'}")
    print(f"network {'enabled' if cfg.network_enabled else 'disabled'}")
    print(f"policy {actual}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
