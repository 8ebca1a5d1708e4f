"""``asl-rescue``: the RESCUE mode: intake of outside files, offline store check, rescue shell.

    asl-rescue intake FILE... --domain NAME --as PRINCIPAL [--storage DIR --roots D] [--passphrase-file F] [--json]
    asl-rescue check [--storage DIR --roots D] [--json]
    asl-rescue [shell] [--no-shell]

``intake`` pins each file by its SHA-256 into the domain's store (read-only objects) and appends a
receipt per file, signed by a principal holding the ``produce`` role. ``check`` re-hashes every
stored object and verifies every domain's authority and log offline; an object whose bytes no
longer match its name (or that is not a regular file) is moved to ``<store>/quarantine/`` and
listed in ``quarantine/REPORT``. Exit 0 clean, 1 problems found, 2 usage or unreadable input.
Without a command it prints what the boot would check and opens ``/bin/sh`` (the console's
fallback when the boot cannot continue).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from asl_capture import __version__
from asl_host import actions
from asl_host.admin import _context, _passphrase
from asl_host.authority import MAX_LOG, Refused, read_bounded, verify_authority
from asl_host.cli import run
from asl_host.config import load
from asl_host.errors import HostError
from asl_host.paths import DEFAULT_CONFIG, OBJECTS_DIR, QUARANTINE_DIR

REPORT_NAME = "REPORT"


def check_objects(store: Path) -> list[str]:
    """Re-hash every object of a store; quarantine the bad ones. Returns one line per problem."""
    problems: list[str] = []
    base = store / OBJECTS_DIR / "sha256"
    if not base.is_dir():
        return problems
    for prefix in sorted(os.listdir(base)):
        sub = base / prefix
        if not sub.is_dir() or sub.is_symlink():
            problems.append(_quarantine(store, sub, f"objects/sha256/{prefix}: not a directory"))
            continue
        for name in sorted(os.listdir(sub)):
            path = sub / name
            st = os.lstat(path)
            rel = f"objects/sha256/{prefix}/{name}"
            if not stat.S_ISREG(st.st_mode):
                problems.append(_quarantine(store, path, f"{rel}: not a regular file"))
                continue
            h = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != prefix + name:
                problems.append(_quarantine(store, path, f"{rel}: content hashes to sha256:{h.hexdigest()}"))
    return problems


def _quarantine(store: Path, path: Path, why: str) -> str:
    qdir = store / QUARANTINE_DIR
    if qdir.is_symlink():
        raise HostError(f"{qdir} is a symlink; refusing to move objects through it")
    qdir.mkdir(mode=0o700, exist_ok=True)
    target = qdir / path.name
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = qdir / f"{path.name}.{n}"
    os.rename(path, target)
    line = f"{why}; moved to {QUARANTINE_DIR}/{target.name}"
    with (qdir / REPORT_NAME).open("a", encoding="utf-8") as report:
        report.write(line + "\n")
        report.flush()
        os.fsync(report.fileno())
    return line


def _cmd_check(args: argparse.Namespace) -> int:
    ctx = _context(args)
    results: list[dict[str, Any]] = []
    text: list[str] = []
    bad = False
    for d in ctx.domains:
        problems = check_objects(d.store)
        try:
            verify_authority(d.store, d.id, ctx.trust)
            authority = None
        except Refused as exc:
            authority = str(exc)
        bad = bad or bool(problems) or authority is not None
        results.append({"domain": d.name, "objects": problems, "authority": authority})
        text += [f"{d.name}: {p}" for p in problems]
        text.append(f"{d.name}: " + (f"authority: {authority}" if authority else
                                     f"authority and log verified; {len(problems)} object problem(s)"))
    print(json.dumps({"clean": not bad, "domains": results}, indent=2) if args.json else "\n".join(text))
    return 1 if bad else 0


def _cmd_intake(args: argparse.Namespace) -> int:
    ctx = _context(args, name=args.domain)
    d = ctx.domain(args.domain)
    rows = []
    passphrase = _passphrase(args)
    for file in args.files:
        data = read_bounded(file, MAX_LOG, "file to take in", follow=True)
        receipt = actions.act(d.store, d.id, ctx.trust, action="intake", principal=getattr(args, "as"), data=data,
                              name=file.name, passphrase=passphrase)
        assert receipt.subject is not None
        rows.append({"file": str(file), "digest": receipt.subject.digest.hex(), "seq": receipt.seq})
    text = [f"intake {r['file']} sha256:{r['digest']} into {d.name} (receipt {r['seq']})" for r in rows]
    print(json.dumps({"domain": d.name, "intake": rows}, indent=2) if args.json else "\n".join(text))
    return 0


def _cmd_shell(args: argparse.Namespace) -> int:
    print("asl-rescue: ASL authority host rescue mode (offline)")
    try:
        cfg = load(args.config)
        label = f"LABEL={cfg.storage_label}" if cfg.storage_device is None else cfg.storage_device
        print(f"asl-rescue: config ok; data disk {label} -> {cfg.mountpoint} "
              f"(mounted: {'yes' if os.path.ismount(cfg.mountpoint) else 'no'})")
        print("asl-rescue: 'asl-admin status' shows each domain; 'asl-rescue check' checks the stores")
    except HostError as exc:
        print(f"asl-rescue: {type(exc).__name__}: {exc}")
    if args.no_shell:
        return 0
    sys.stdout.flush()
    os.execv("/bin/sh", ["/bin/sh"])  # noqa: S606
    return 0  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asl-rescue``; exit codes as in the module docstring."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    common.add_argument("--storage", type=Path)
    common.add_argument("--roots", type=Path)
    parser = argparse.ArgumentParser(prog="asl-rescue", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", parents=[common], help="re-hash objects, verify logs, quarantine")
    check.set_defaults(fn=_cmd_check)
    intake = sub.add_parser("intake", parents=[common], help="pin outside files into a domain, with receipts")
    intake.add_argument("files", type=Path, nargs="+")
    intake.add_argument("--domain", required=True)
    intake.add_argument("--as", required=True, metavar="PRINCIPAL")
    intake.add_argument("--passphrase-file", type=Path, help="the passphrase of the principal's key, when encrypted")
    intake.set_defaults(fn=_cmd_intake)
    shell = sub.add_parser("shell", parents=[common], help="diagnostics, then /bin/sh (the default)")
    shell.add_argument("--no-shell", action="store_true")
    shell.set_defaults(fn=_cmd_shell)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["shell", *(argv if argv is not None else sys.argv[1:])])
    return run("asl-rescue", lambda: int(args.fn(args)))


if __name__ == "__main__":
    sys.exit(main())
