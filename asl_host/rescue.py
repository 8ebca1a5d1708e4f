"""``asl-rescue``: print what the boot workflow would check, then open a shell for the operator.

Nothing is mounted or changed; the shell is ``/bin/sh`` (``--no-shell`` only prints).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from asl_host.config import load, pinned_policy_hash, policy_digest
from asl_host.errors import HostError
from asl_host.paths import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asl-rescue``; does not return when it starts the shell."""
    parser = argparse.ArgumentParser(prog="asl-rescue", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--no-shell", action="store_true")
    args = parser.parse_args(argv)
    print("asl-rescue: ASL authority host rescue mode (offline; nothing was mounted)")
    try:
        cfg = load(args.config)
        same = pinned_policy_hash(cfg) == policy_digest(cfg.policy)
        print(f"asl-rescue: config ok; policy.hash {'matches' if same else 'DOES NOT match'} the policy")
        label = f"LABEL={cfg.storage_label}" if cfg.storage_device is None else cfg.storage_device
        print(f"asl-rescue: data disk {label} -> {cfg.mountpoint} "
              f"(mounted: {'yes' if os.path.ismount(cfg.mountpoint) else 'no'})")
    except HostError as exc:
        print(f"asl-rescue: {type(exc).__name__}: {exc}")
    if args.no_shell:
        return 0
    sys.stdout.flush()
    os.execv("/bin/sh", ["/bin/sh"])  # noqa: S606
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
