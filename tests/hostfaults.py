"""Domains prepared offline with ``asl-admin`` (run as a real subprocess), good or with one fault each.

Each fault is what an attacker or an accident could leave on a data disk; the host must keep that
domain read-only and name the reason (:data:`REASONS`). Used by the plain tests and the qemu tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from asl_capture import dcbor, keys
from asl_host import actions, signed
from asl_host.formats import CT_DAM, CT_RECEIPT, Receipt, Subject, sha256
from asl_host.paths import AUTHORITY_DIR, DAM_NAME, KEYS_DIR, LOG_NAME, POLICY_HASH_NAME

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "docs" / "examples" / "policy.yaml"

#: fault -> what the refusal says (a substring of the reason on the console and in the log).
REASONS = {
    "dam-flip": "dam:",
    "dam-wrong-key": "which the certificate does not name",
    "cert-unpinned-root": "which is not a pinned offline root",
    "cert-below-threshold": "the threshold is 2",
    "policy-hash": "differs from the pinned policy.hash",
    "principal-role": "without the role 'publish'",
}


def admin(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run ``asl-admin`` (as ``python -m asl_host.admin``)."""
    return subprocess.run([sys.executable, "-m", "asl_host.admin", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "ASL_KEY_PASSPHRASE": ""})


def genesis(storage: Path, name: str, roots: Path, *, policy: Path = POLICY) -> Path:
    """``asl-admin domain genesis`` with principals alice (produce, publish) and bob (audit)."""
    res = admin("domain", "genesis", name, "--roots", roots, "--policy", policy, "--storage", storage,
                "--principal", "alice=produce,publish", "--principal", "bob=audit")
    assert res.returncode == 0, res.stderr
    return storage / name


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def make_domain(storage: Path, name: str, roots: Path, fault: str | None, work: Path) -> Path:
    """A domain ``name`` under ``storage`` for the pinned ``roots``, with ``fault`` (or none) applied."""
    work.mkdir(parents=True, exist_ok=True)
    if fault == "policy-hash":  # the same roots, another policy pinned beside them
        other = work / f"roots-{name}"
        shutil.copytree(roots, other)
        (other / POLICY_HASH_NAME).unlink()
        changed = work / f"policy-{name}.yaml"
        changed.write_text(POLICY.read_text().replace("min_snapshot_retention: 3", "min_snapshot_retention: 4"))
        return genesis(storage, name, other, policy=changed)
    store = genesis(storage, name, roots)
    dam = store / AUTHORITY_DIR / DAM_NAME
    if fault == "dam-flip":
        _flip(dam, len(dam.read_bytes()) // 2)
    elif fault == "dam-wrong-key":
        msg = signed.decode1(dam.read_bytes(), CT_DAM, "dam")
        dam.write_bytes(signed.sign1(msg.payload, os.urandom(32), CT_DAM))
    elif fault == "cert-unpinned-root":
        stranger = work / f"stranger-{name}"
        actions.init_roots(stranger, count=1, threshold=1, passphrase=None)
        shutil.copyfile(roots / POLICY_HASH_NAME, stranger / POLICY_HASH_NAME)
        res = admin("certify", name, "--roots", stranger, "--storage", storage)
        assert res.returncode == 0, res.stderr
    elif fault == "cert-below-threshold":
        one = work / f"one-root-{name}"
        shutil.copytree(roots, one)
        for extra in sorted(one.glob("root-*.key"))[1:]:
            extra.unlink()
        # asl-admin refuses to certify below the threshold: sign with the one key directly
        seeds = actions.RootsDir(one).private_keys(None)
        from asl_host.formats import AuthorityCertificate

        cert_path = store / AUTHORITY_DIR / "certificate.cbor"
        payload = signed.verify_many(cert_path.read_bytes(), "application/vnd.asl.authority-cert+cbor",
                                     actions.RootsDir(roots).rootset().root_keys, 2, "certificate")
        assert AuthorityCertificate is not None
        cert_path.write_bytes(signed.sign_many(payload, seeds, "application/vnd.asl.authority-cert+cbor"))
    elif fault == "principal-role":  # bob (audit) "signs" by appending a receipt directly to the log
        log = store / LOG_NAME
        items = log.read_bytes()
        seed = keys.load_seed(store / KEYS_DIR / "bob.key")
        from asl_host import ed25519

        receipt = Receipt(domain_id=name, seq=1, prev=sha256(items), action="sign",
                          principal_id=sha256(ed25519.public_key(seed)), dam=sha256(dam.read_bytes()),
                          subject=Subject(name="forged.txt", digest=sha256(b"forged"), size=6))
        log.write_bytes(items + signed.sign1(dcbor.encode(receipt.to_value()), seed, CT_RECEIPT))
    elif fault is not None:
        raise ValueError(fault)
    return store


def tree_bytes(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its bytes (files), link target or ``dir``: for byte-identity checks."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            out[rel] = (f"link:{os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir()
                        else path.read_bytes())
    return out
