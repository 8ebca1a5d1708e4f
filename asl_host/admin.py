"""``asl-admin``: the operator's front end, in the booted image or on a workstation against a directory.

    asl-admin roots init --dir D --keys N --threshold T [--passphrase-file F]
    asl-admin domain genesis NAME --roots D --policy FILE --storage DIR [--id ID] [--principal NAME=ROLE,...]
                      [--passphrase-file F]
    asl-admin certify NAME --roots D --storage DIR [--id ID]
    asl-admin dam show|verify NAME [--storage DIR --roots D]
    asl-admin status [--storage DIR --roots D]
    asl-admin sign FILE --domain NAME --as PRINCIPAL [--storage DIR --roots D] [--passphrase-file F]
    asl-admin snapshots NAME [--storage DIR --roots D]
    asl-admin gc-check NAME [--storage DIR --roots D]
    asl-admin policy-hash FILE

Without ``--storage``/``--roots`` the host's ``config.yaml`` gives the data disk, the domains and the
pinned trust, so ``status`` reaches the verdict the boot reached. ``--json`` prints data as JSON.
Exit codes: 0 done (``dam verify``: verified), 1 refused or verification failed, 2 usage or
unreadable input. Passphrases come from ``--passphrase-file`` or ``$ASL_KEY_PASSPHRASE``: of the root
keys, and of the domain keys ``domain genesis`` encrypted with the passphrase it was given (``certify``,
``sign``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asl_capture import __version__, keys
from asl_capture.errors import KeyFileError
from asl_host import actions
from asl_host.authority import MAX_LOG, Trust, Verdict, assess, read_bounded, verify_authority
from asl_host.cli import run
from asl_host.config import load
from asl_host.errors import HostConfigError
from asl_host.formats import ROLES, hash_text
from asl_host.paths import AUTHORITY_DIR, DEFAULT_CONFIG, DOMAIN_MARKER, OBJECTS_DIR


@dataclass(frozen=True)
class Domain:
    """A domain as the command sees it: name, id, store directory."""

    name: str
    id: str
    store: Path


@dataclass(frozen=True)
class Context:
    """Where the domains are and what trust applies (from --storage/--roots, or config.yaml)."""

    domains: tuple[Domain, ...]
    trust: Trust

    def domain(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        raise HostConfigError(f"{name}: no such domain (known: {', '.join(d.name for d in self.domains) or 'none'})")


def _context(args: argparse.Namespace, *, name: str | None = None) -> Context:
    storage: Path | None = args.storage
    roots: Path | None = args.roots
    if storage is None:
        cfg = load(args.config)
        trust = actions.RootsDir(roots).trust() if roots else Trust.load(cfg.roots_file, cfg.policy_hash_file)
        return Context(tuple(Domain(d.name, d.id, cfg.store(d)) for d in cfg.domains), trust)
    if roots is None:
        cfg = load(args.config)
        trust = Trust.load(cfg.roots_file, cfg.policy_hash_file)
    else:
        trust = actions.RootsDir(roots).trust()
    names = sorted(p.name for p in storage.iterdir() if (p / AUTHORITY_DIR).is_dir() or (p / DOMAIN_MARKER).is_file()
                   ) if storage.is_dir() else []
    if name is not None and name not in names:
        names.append(name)
    domain_id = getattr(args, "id", None)
    return Context(tuple(Domain(n, domain_id if (domain_id and n == name) else n, storage / n) for n in names),
                   trust)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    try:
        return keys.read_passphrase(passphrase_file=args.passphrase_file, environ=os.environ)
    except KeyFileError as exc:
        raise HostConfigError(str(exc)) from None


def _out(args: argparse.Namespace, data: dict[str, Any], text: list[str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else "\n".join(text))


def _verdict_json(v: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name, "id": v.domain_id, "state": v.state, "reason": v.reason,
                           "path": str(v.path)}
    if v.authority is not None:
        out["receipts"] = len(v.authority.receipts)
        out["dam_version"] = v.authority.dam.version
        out["policy_hash"] = hash_text(v.authority.dam.policy_hash)
    return out


def _principals(specs: list[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs or ["operator=produce,publish"]:
        name, _, roles = spec.partition("=")
        parts = tuple(r for r in roles.split(",") if r)
        if not name or "/" in name or name.startswith(".") or name == "root" or not parts:
            raise HostConfigError(f"--principal {spec!r}: expected NAME=ROLE[,ROLE...]")
        bad = [r for r in parts if r not in ROLES]
        if bad:
            raise HostConfigError(f"--principal {spec!r}: {bad[0]!r} is not one of {', '.join(ROLES)}")
        out[name] = parts
    return out


def _cmd_roots(args: argparse.Namespace) -> int:
    rootset = actions.init_roots(args.dir, count=args.keys, threshold=args.threshold,
                                 passphrase=_passphrase(args))
    _out(args, {"dir": str(args.dir), "root_set": rootset.set_id.hex(), "keys": len(rootset.root_keys),
                "threshold": rootset.threshold},
         [f"roots: {len(rootset.root_keys)} key(s), threshold {rootset.threshold}, root set "
          f"{rootset.set_id.hex()} in {args.dir}"])
    return 0


def _cmd_genesis(args: argparse.Namespace) -> int:
    from asl_host.policyfile import load_policy

    policy = load_policy(args.policy)
    store = args.storage / args.name
    authority = actions.genesis(store, args.id or args.name, actions.RootsDir(args.roots), policy,
                                _principals(args.principal), passphrase=_passphrase(args))
    _out(args, {"domain": args.name, "id": authority.dam.domain_id, "store": str(store),
                "policy_hash": hash_text(policy.policy_hash), "principals": sorted(_principals(args.principal))},
         [f"domain {args.name}: created in {store}, policy {hash_text(policy.policy_hash)}, "
          f"principals {', '.join(sorted(_principals(args.principal)))}"])
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    store = args.storage / args.name
    cert = actions.certify(store, args.id or args.name, actions.RootsDir(args.roots), passphrase=_passphrase(args))
    _out(args, {"domain": args.name, "subject": cert.subject_id.hex()},
         [f"domain {args.name}: certificate for domain root {cert.subject_id.hex()[:16]} written"])
    return 0


def _cmd_dam(args: argparse.Namespace) -> int:
    ctx = _context(args, name=args.name)
    d = ctx.domain(args.name)
    authority = verify_authority(d.store, d.id, ctx.trust)
    dam = authority.dam
    data = {"domain_id": dam.domain_id, "version": dam.version, "root_key": dam.root_key.hex(),
            "policy_hash": hash_text(dam.policy_hash), "scope": list(dam.scope) if dam.scope else None,
            "principals": [{"principal_id": p.principal_id.hex(), "roles": list(p.roles)} for p in dam.principals],
            "verified": True}
    if args.action == "verify":
        _out(args, data, [f"dam {args.name}: verified (certificate, threshold, signature, policy hash, log of "
                          f"{len(authority.receipts)} receipt(s))"])
        return 0
    text = [f"domain_id {dam.domain_id}", f"version {dam.version}", f"root_key {dam.root_key.hex()}",
            f"policy_hash {hash_text(dam.policy_hash)}"]
    text += [f"principal {p.principal_id.hex()} roles {','.join(p.roles)}" for p in dam.principals]
    _out(args, data, text)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    ctx = _context(args)
    verdicts = [assess(d.name, d.id, d.store, ctx.trust) for d in ctx.domains]
    text = [f"{v.name} ({v.domain_id}): {v.state}" + (f": {v.reason}" if v.reason else "") for v in verdicts]
    _out(args, {"domains": [_verdict_json(v) for v in verdicts]}, text or ["no domains"])
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    ctx = _context(args, name=args.domain)
    d = ctx.domain(args.domain)
    data = read_bounded(args.file, MAX_LOG, "file to sign", follow=True)
    receipt = actions.act(d.store, d.id, ctx.trust, action="sign", principal=getattr(args, "as"), data=data,
                          name=args.file.name, passphrase=_passphrase(args))
    assert receipt.subject is not None
    _out(args, {"domain": d.name, "seq": receipt.seq, "digest": receipt.subject.digest.hex(),
                "principal": receipt.principal_id.hex()},
         [f"signed {args.file.name} sha256:{receipt.subject.digest.hex()} in {d.name} as {getattr(args, 'as')} "
          f"(receipt {receipt.seq})"])
    return 0


def _cmd_snapshots(args: argparse.Namespace) -> int:
    ctx = _context(args, name=args.name)
    d = ctx.domain(args.name)
    authority = verify_authority(d.store, d.id, ctx.trust)
    rows: list[dict[str, Any]] = [
        {"seq": r.seq, "action": r.action,
         "subject": None if r.subject is None else {"name": r.subject.name, "digest": r.subject.digest.hex(),
                                                    "size": r.subject.size}}
        for r in authority.receipts]
    sealed = [r for r in rows if r["action"] in ("genesis", "seal")]
    text = [f"snapshot at receipt {r['seq']} ({r['action']})" for r in sealed]
    text += [f"receipt {r.seq} {r.action} {r.subject.name} sha256:{r.subject.digest.hex()}"
             for r in authority.receipts if r.subject is not None]
    _out(args, {"domain": d.name, "snapshots": sealed, "receipts": rows}, text)
    return 0


def _cmd_gc_check(args: argparse.Namespace) -> int:
    ctx = _context(args, name=args.name)
    d = ctx.domain(args.name)
    authority = verify_authority(d.store, d.id, ctx.trust)
    referenced = {r.subject.digest.hex() for r in authority.receipts if r.subject is not None}
    present = set()
    base = d.store / OBJECTS_DIR / "sha256"
    if base.is_dir():
        present = {p.parent.name + p.name for p in base.glob("*/*") if p.is_file()}
    unreferenced = sorted(present - referenced)
    missing = sorted(referenced - present)
    allowed = authority.policy.retention[0]
    _out(args, {"domain": d.name, "unreferenced": unreferenced, "missing": missing, "gc_allowed": allowed},
         [f"{d.name}: {len(present)} object(s), {len(unreferenced)} unreferenced, {len(missing)} missing; "
          f"policy {'allows' if allowed else 'forbids'} collecting unpublished objects"])
    return 1 if missing else 0


def _cmd_policy_hash(args: argparse.Namespace) -> int:
    from asl_host.policyfile import load_policy

    policy = load_policy(args.file)
    _out(args, {"policy_hash": hash_text(policy.policy_hash)}, [hash_text(policy.policy_hash)])
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print data as JSON")
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    common.add_argument("--passphrase-file", type=Path)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--storage", type=Path, help="the data disk's root directory (default: config.yaml)")
    where.add_argument("--roots", type=Path, help="roots directory (default: the trust pinned in the image)")
    parser = argparse.ArgumentParser(prog="asl-admin", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    roots = sub.add_parser("roots", parents=[common]).add_subparsers(dest="sub", required=True)
    init = roots.add_parser("init", parents=[common], help="create offline root keys and the root set")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--keys", type=int, default=1)
    init.add_argument("--threshold", type=int, default=1)
    init.set_defaults(fn=_cmd_roots)
    domain = sub.add_parser("domain", parents=[common]).add_subparsers(dest="sub", required=True)
    gen = domain.add_parser("genesis", parents=[common], help="create a domain on a data disk")
    gen.add_argument("name")
    gen.add_argument("--roots", type=Path, required=True)
    gen.add_argument("--policy", type=Path, required=True)
    gen.add_argument("--storage", type=Path, required=True)
    gen.add_argument("--id")
    gen.add_argument("--principal", action="append", default=[], help="NAME=ROLE[,ROLE] (repeatable)")
    gen.set_defaults(fn=_cmd_genesis)
    cert = sub.add_parser("certify", parents=[common], help="(re)issue a domain root certificate")
    cert.add_argument("name")
    cert.add_argument("--roots", type=Path, required=True)
    cert.add_argument("--storage", type=Path, required=True)
    cert.add_argument("--id")
    cert.set_defaults(fn=_cmd_certify)
    dam = sub.add_parser("dam", parents=[common, where], help="show or verify a domain's DAM")
    dam.add_argument("action", choices=("show", "verify"))
    dam.add_argument("name")
    dam.set_defaults(fn=_cmd_dam)
    status = sub.add_parser("status", parents=[common, where], help="each domain: writable or read-only and why")
    status.set_defaults(fn=_cmd_status)
    sign = sub.add_parser("sign", parents=[common, where], help="sign a file as a principal of a domain")
    sign.add_argument("file", type=Path)
    sign.add_argument("--domain", required=True)
    sign.add_argument("--as", required=True, metavar="PRINCIPAL")
    sign.set_defaults(fn=_cmd_sign)
    snaps = sub.add_parser("snapshots", parents=[common, where], help="sealed snapshots and receipts of a domain")
    snaps.add_argument("name")
    snaps.set_defaults(fn=_cmd_snapshots)
    gc = sub.add_parser("gc-check", parents=[common, where], help="objects no receipt references")
    gc.add_argument("name")
    gc.set_defaults(fn=_cmd_gc_check)
    ph = sub.add_parser("policy-hash", parents=[common], help="the policy.hash line of a policy file")
    ph.add_argument("file", type=Path)
    ph.set_defaults(fn=_cmd_policy_hash)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asl-admin``; exit codes as in the module docstring."""
    args = _parser().parse_args(argv)
    return run("asl-admin", lambda: int(args.fn(args)))


if __name__ == "__main__":
    sys.exit(main())
