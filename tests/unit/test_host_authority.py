"""Witness authority offline: domains made by asl-admin, each fault refused with its reason, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asl_host.actions import RootsDir, init_roots, pin_policy
from asl_host.authority import assess
from asl_host.policyfile import load_policy
from tests.hostfaults import POLICY, REASONS, admin, make_domain, tree_bytes


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("authority") / "roots"
    init_roots(directory, count=3, threshold=2, passphrase=None)
    pin_policy(RootsDir(directory), load_policy(POLICY))
    return directory


def test_a_domain_made_offline_is_writable(roots: Path, tmp_path: Path) -> None:
    store = make_domain(tmp_path / "disk", "personal", roots, None, tmp_path / "work")
    verdict = assess("personal", "personal", store, RootsDir(roots).trust())
    assert verdict.writable, verdict.reason
    assert verdict.authority is not None and [r.action for r in verdict.authority.receipts] == ["genesis"]


@pytest.mark.parametrize("fault", sorted(REASONS))
def test_each_fault_makes_the_domain_read_only_and_leaves_it_untouched(roots: Path, tmp_path: Path,
                                                                       fault: str) -> None:
    store = make_domain(tmp_path / "disk", "common", roots, fault, tmp_path / "work")
    before = tree_bytes(store)
    verdict = assess("common", "common", store, RootsDir(roots).trust())
    assert not verdict.writable
    assert verdict.reason is not None and REASONS[fault] in verdict.reason, verdict.reason
    # asl-admin reaches the same verdict, and refuses to sign into the domain
    status = admin("status", "--storage", tmp_path / "disk", "--roots", roots)
    assert status.returncode == 0 and f"common (common): read-only: {verdict.reason}" in status.stdout
    (tmp_path / "a.txt").write_text("artifact\n")
    res = admin("sign", tmp_path / "a.txt", "--domain", "common", "--as", "alice", "--storage", tmp_path / "disk",
                "--roots", roots)
    assert res.returncode == 1 and "Refused" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert tree_bytes(store) == before


def test_a_domain_without_authority_is_read_only(roots: Path, tmp_path: Path) -> None:
    (tmp_path / "disk" / "pools").mkdir(parents=True)
    verdict = assess("pools", "pools", tmp_path / "disk" / "pools", RootsDir(roots).trust())
    assert not verdict.writable and verdict.reason is not None and "not initialised" in verdict.reason


def test_a_domain_certified_for_another_id_is_read_only(roots: Path, tmp_path: Path) -> None:
    store = make_domain(tmp_path / "disk", "personal", roots, None, tmp_path / "work")
    verdict = assess("personal", "someone-else", store, RootsDir(roots).trust())
    assert not verdict.writable and verdict.reason is not None and "domain_id" in verdict.reason


def test_a_truncated_log_is_read_only(roots: Path, tmp_path: Path) -> None:
    store = make_domain(tmp_path / "disk", "personal", roots, None, tmp_path / "work")
    log = store / "log.cbor"
    log.write_bytes(log.read_bytes()[:-5])
    verdict = assess("personal", "personal", store, RootsDir(roots).trust())
    assert verdict.reason is not None and "partial receipt" in verdict.reason


def test_a_symlinked_dam_is_refused(roots: Path, tmp_path: Path) -> None:
    store = make_domain(tmp_path / "disk", "personal", roots, None, tmp_path / "work")
    dam = store / "authority" / "dam.cose"
    dam.rename(tmp_path / "elsewhere")
    dam.symlink_to(tmp_path / "elsewhere")
    verdict = assess("personal", "personal", store, RootsDir(roots).trust())
    assert verdict.reason is not None and "dam: cannot open" in verdict.reason


def test_sign_then_every_receipt_verifies_and_roles_are_enforced(roots: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    make_domain(disk, "personal", roots, None, tmp_path / "work")
    art = tmp_path / "artifact.bin"
    art.write_bytes(b"\x00\x01artifact")
    where = ("--storage", disk, "--roots", roots)
    ok = admin("sign", art, "--domain", "personal", "--as", "alice", *where)
    assert ok.returncode == 0, ok.stderr
    refused = admin("sign", art, "--domain", "personal", "--as", "bob", *where)
    assert refused.returncode == 1 and "the role 'publish' is not among its roles (audit)" in refused.stderr
    unknown = admin("sign", art, "--domain", "personal", "--as", "mallory", *where)
    assert unknown.returncode == 1 and "mallory.key" in unknown.stderr
    snaps = admin("snapshots", "personal", "--json", *where)
    assert snaps.returncode == 0 and '"name": "artifact.bin"' in snaps.stdout
    assert admin("dam", "verify", "personal", *where).returncode == 0
    rescue = admin("status", "--json", *where)
    assert '"state": "writable"' in rescue.stdout


def test_rescue_check_quarantines_a_corrupt_object(roots: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    disk = tmp_path / "disk"
    store = make_domain(disk, "personal", roots, None, tmp_path / "work")
    art = tmp_path / "in.txt"
    art.write_text("outside file\n")
    where = ["--storage", str(disk), "--roots", str(roots)]
    intake = subprocess.run([sys.executable, "-m", "asl_host.rescue", "intake", str(art), "--domain", "personal",
                             "--as", "alice", *where], capture_output=True, text=True)
    assert intake.returncode == 0, intake.stderr
    clean = subprocess.run([sys.executable, "-m", "asl_host.rescue", "check", *where], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    obj = next(p for p in (store / "objects").rglob("*") if p.is_file())
    obj.chmod(0o644)
    obj.write_text("tampered\n")
    bad = subprocess.run([sys.executable, "-m", "asl_host.rescue", "check", *where], capture_output=True, text=True)
    assert bad.returncode == 1 and "moved to quarantine/" in bad.stdout
    assert not obj.exists() and (store / "quarantine" / obj.name).read_text() == "tampered\n"
    assert "content hashes to" in (store / "quarantine" / "REPORT").read_text()


def test_with_a_passphrase_every_domain_key_is_encrypted_and_signing_needs_it(tmp_path: Path) -> None:
    """genesis --passphrase-file encrypts the domain root and principal keys (PKCS#8, 0600); sign
    and intake decrypt them with the passphrase and refuse, in one line, without it or with a wrong one."""
    import subprocess
    import sys

    passfile = tmp_path / "pass"
    passfile.write_text("correct horse battery\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("incorrect horse\n")
    roots = tmp_path / "roots"
    made = admin("roots", "init", "--dir", roots, "--passphrase-file", passfile)
    assert made.returncode == 0, made.stderr
    disk = tmp_path / "disk"
    res = admin("domain", "genesis", "personal", "--roots", roots, "--policy", POLICY, "--storage", disk,
                "--principal", "alice=produce,publish", "--passphrase-file", passfile)
    assert res.returncode == 0, res.stderr
    key_files = sorted((disk / "personal" / "keys").iterdir())
    assert [p.name for p in key_files] == ["alice.key", "root.key"]
    for path in key_files:
        text = path.read_bytes()
        assert text.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"), path
        assert b"BEGIN " + b"PRIVATE KEY" not in text
        assert path.stat().st_mode & 0o777 == 0o600
    art = tmp_path / "artifact.bin"
    art.write_bytes(b"artifact")
    where = ("--storage", disk, "--roots", roots)
    for extra in ((), ("--passphrase-file", wrong)):
        refused = admin("sign", art, "--domain", "personal", "--as", "alice", *where, *extra)
        assert refused.returncode == 1, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        assert "alice.key" in refused.stderr
        assert ("wrong passphrase" if extra else "key is encrypted; give its passphrase") in refused.stderr
    ok = admin("sign", art, "--domain", "personal", "--as", "alice", *where, "--passphrase-file", passfile)
    assert ok.returncode == 0, ok.stderr
    intake = subprocess.run([sys.executable, "-m", "asl_host.rescue", "intake", str(art), "--domain", "personal",
                             "--as", "alice", *map(str, where)], capture_output=True, text=True, check=False,
                            env={**os.environ, "ASL_KEY_PASSPHRASE": ""})
    assert intake.returncode == 1 and "key is encrypted" in intake.stderr
    intake = subprocess.run([sys.executable, "-m", "asl_host.rescue", "intake", str(art), "--domain", "personal",
                             "--as", "alice", *map(str, where), "--passphrase-file", str(passfile)],
                            capture_output=True, text=True, check=False, env={**os.environ, "ASL_KEY_PASSPHRASE": ""})
    assert intake.returncode == 0, intake.stderr
    # certify re-reads the (encrypted) domain root key with the same passphrase
    assert admin("certify", "personal", "--roots", roots, "--storage", disk).returncode == 1
    assert admin("certify", "personal", "--roots", roots, "--storage", disk,
                 "--passphrase-file", passfile).returncode == 0
    snaps = admin("snapshots", "personal", "--json", *where)
    assert snaps.returncode == 0 and snaps.stdout.count('"name": "artifact.bin"') == 2
    assert "correct horse" not in snaps.stdout


def test_without_a_passphrase_domain_keys_stay_plain_pkcs8(roots: Path, tmp_path: Path) -> None:
    store = make_domain(tmp_path / "disk", "personal", roots, None, tmp_path / "work")
    for path in (store / "keys").iterdir():
        assert path.read_bytes().startswith(b"-----BEGIN " + b"PRIVATE KEY-----\n")
        assert path.stat().st_mode & 0o777 == 0o600
