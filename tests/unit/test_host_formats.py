"""The authority formats: strict parsers naming the field, canonical policy hash, both Ed25519 paths agree."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from asl_capture import dcbor
from asl_host import ed25519, signed
from asl_host.claim import read_claim
from asl_host.config import parse
from asl_host.errors import HostConfigError
from asl_host.formats import (
    CT_CLAIM,
    DAM,
    AuthorityCertificate,
    DomainPolicy,
    EnvironmentClaim,
    FormatError,
    OfflineRootSet,
    PrincipalEntry,
    Receipt,
    sha256,
)
from asl_host.policyfile import load_policy

REPO = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))


def _dam() -> DAM:
    return DAM(domain_id="personal", version=1, root_key=KEY,
               principals=(PrincipalEntry(public_key=bytes(32), roles=("publish",)),), policy_hash=sha256(b"p"))


def test_ed25519_libcrypto_and_cryptography_agree() -> None:
    seed = os.urandom(32)
    public = ed25519.public_key(seed)
    assert public == ed25519.public_key(seed, use="cryptography")
    sig = ed25519.sign(seed, b"message")
    assert sig == ed25519.sign(seed, b"message", use="cryptography")  # Ed25519 is deterministic
    for use in (None, "cryptography"):
        assert ed25519.verify(public, sig, b"message", use=use)
        assert not ed25519.verify(public, sig, b"messagE", use=use)
        assert not ed25519.verify(public, sig[:-1] + bytes([sig[-1] ^ 1]), b"message", use=use)
    assert ed25519.backend() == "libcrypto"


def test_rootset_round_trips_and_refuses_bad_shapes() -> None:
    rs = OfflineRootSet(root_keys=(bytes(32), KEY), threshold=2)
    assert OfflineRootSet.from_bytes(rs.encode()) == rs
    good = rs.to_value()
    assert isinstance(good, dict)
    cases: dict[str, dcbor.Value] = {
        "threshold: 3 is not between 1 and the 2 root key(s)": {**good, "threshold": 3},
        "root_keys: must be sorted and distinct": {**good, "root_keys": [KEY, bytes(32)]},
        "root_keys: expected 1 to 3 keys": {**good, "root_keys": []},
        "reserved0: must be 0": {**good, "reserved0": 1},
        "extra: unknown field": {**good, "extra": 1},
        "root_keys[0]: expected a 32-byte public key": {**good, "root_keys": [b"short"]},
    }
    for message, value in cases.items():
        with pytest.raises(FormatError, match=re.escape(message)):
            OfflineRootSet.from_value(value)


def test_certificate_and_dam_parsers_name_the_field() -> None:
    cert = AuthorityCertificate(subject_type="domain_root", subject_pubkey=KEY, domain_id="d", roles=(),
                                policy_hash=sha256(b"p"), issued_by=sha256(b"r"))
    value = cert.to_value()
    assert isinstance(value, dict)
    assert AuthorityCertificate.from_value(value) == cert
    with pytest.raises(FormatError, match="certificate: subject_id: is not the SHA-256 of subject_pubkey"):
        AuthorityCertificate.from_value({**value, "subject_id": sha256(b"x")})
    with pytest.raises(FormatError, match="certificate: roles: must be empty for a domain_root"):
        AuthorityCertificate.from_value({**value, "roles": ["audit"]})
    with pytest.raises(FormatError, match="certificate: subject_type: expected one of"):
        AuthorityCertificate.from_value({**value, "subject_type": "king"})
    dam = _dam().to_value()
    assert isinstance(dam, dict) and isinstance(dam["principals"], list)
    assert DAM.from_value(dam) == _dam()
    bad_role: dcbor.Value = {**dam, "principals": [{**dam["principals"][0], "roles": ["rule"]}]}  # type: ignore[dict-item]
    with pytest.raises(FormatError, match=r"dam: principals\[0\]: roles: 'rule' is not one of"):
        DAM.from_value(bad_role)
    with pytest.raises(FormatError, match="role 'publish' is outside the DAM's scope"):
        DAM.from_value({**dam, "scope": ["audit"]})
    with pytest.raises(FormatError, match="dam: version: missing"):
        DAM.from_value({k: v for k, v in dam.items() if k != "version"})


def test_receipt_needs_a_subject_exactly_for_sign_and_intake() -> None:
    r = Receipt(domain_id="d", seq=0, prev=None, action="genesis", principal_id=sha256(KEY), dam=sha256(b"d"),
                subject=None)
    value = r.to_value()
    assert isinstance(value, dict)
    assert Receipt.from_value(value) == r
    with pytest.raises(FormatError, match="subject: required for sign and intake"):
        Receipt.from_value({**value, "action": "sign"})


def test_policy_canonical_form_and_hash() -> None:
    policy = load_policy(REPO / "docs" / "examples" / "policy.yaml")
    assert DomainPolicy.from_value(dcbor.decode(policy.encode())) == policy
    shipped = (REPO / "overlay" / "etc" / "asl-auth-host" / "policy.hash").read_text().strip()
    assert shipped == "sha256:" + policy.policy_hash.hex()
    value = policy.to_value()
    assert isinstance(value, dict) and isinstance(value["execution_policy"], dict)
    execution: dcbor.Value = {**value["execution_policy"], "allowed_roles": ["produce", "execute"]}
    unsorted: dcbor.Value = {**value, "execution_policy": execution}
    with pytest.raises(FormatError, match="execution_policy: allowed_roles: must be sorted"):
        DomainPolicy.from_value(unsorted)


def test_policy_file_missing_field_is_named(tmp_path: Path) -> None:
    text = (REPO / "docs" / "examples" / "policy.yaml").read_text().replace("  deterministic_only: true\n", "")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(FormatError, match="execution_policy: deterministic_only: missing"):
        load_policy(tmp_path / "p.yaml")


def test_environment_claim_signature_is_checked() -> None:
    seed = os.urandom(32)
    claim = EnvironmentClaim(image="sha256:" + "ab" * 32, kernel="6.1", boot=1, host_key=ed25519.public_key(seed),
                             roots=sha256(b"r"), policy_hash=sha256(b"p"), tools={"/bin/x": "sha256:00"},
                             stores={"personal": {"state": "writable"}})
    data = signed.sign1(dcbor.encode(claim.to_value()), seed, CT_CLAIM)
    assert read_claim(data) == claim
    forged = signed.sign1(dcbor.encode({**claim.to_value(), "boot": 2}), os.urandom(32), CT_CLAIM)  # type: ignore[dict-item]
    with pytest.raises(signed.SignatureRefused):
        read_claim(forged)


def test_config_unknown_fields_warn_and_wrong_types_are_one_line_errors(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((REPO / "overlay" / "etc" / "asl-auth-host" / "config.yaml").read_text())
    cfg = parse({**data, "colour": "blue"}, base=tmp_path)
    assert cfg.warnings == ("config.colour: unknown field ignored",)
    assert [d.name for d in cfg.domains] == ["common", "personal", "pools"]
    assert not cfg.network_enabled
    with pytest.raises(HostConfigError, match=r"^network\.enabled: expected bool, got str$"):
        parse({**data, "network": {"enabled": "yes"}}, base=tmp_path)
    with pytest.raises(HostConfigError, match=r"^domains\.personal\.allowed_operations: 'fly' is not one of"):
        parse({**data, "domains": {"personal": {"allowed_operations": ["fly"]}}}, base=tmp_path)
    with pytest.raises(HostConfigError, match=r"^domains\.x\.path: expected a plain directory name"):
        parse({**data, "domains": {"x": {"path": "../etc"}}}, base=tmp_path)
    with pytest.raises(HostConfigError, match=r"^store\.type: zfs needs its pools mounted"):
        parse({**data, "store": {"type": "zfs"}}, base=tmp_path)
