"""DSSE: PAE implemented here again from the specification, independently of asl_capture.dsse."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asl_capture import dsse
from asl_capture.errors import VerificationError


def spec_pae(payload_type: bytes, payload: bytes) -> bytes:
    """DSSE v1 protocol: PAE(type, body) = "DSSEv1" + SP + LEN(type) + SP + type + SP + LEN(body) + SP + body,
    where LEN(s) is the ASCII decimal encoding of the byte length of s, with no leading zeros."""
    parts = [b"DSSEv1", str(len(payload_type)).encode("ascii"), payload_type,
             str(len(payload)).encode("ascii"), payload]
    return b" ".join(parts)


def test_spec_vector() -> None:
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert spec_pae(b"http://example.com/HelloWorld", b"hello world") == expected
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == expected


@pytest.mark.parametrize(("kind", "body"), [
    ("", b""), ("a", b" "), ("application/vnd.in-toto+json", b'{"x": 1}'), ("t\u00e9st", b"\x00\xff" * 600),
])
def test_pae_matches_the_specification(kind: str, body: bytes) -> None:
    assert dsse.pae(kind, body) == spec_pae(kind.encode("utf-8"), body)


def test_envelope_verifies_with_an_independent_check() -> None:
    key = Ed25519PrivateKey.generate()
    payload = json.dumps({"_type": "https://in-toto.io/Statement/v1"}).encode()
    envelope = dsse.sign_envelope(payload, payload_type=dsse.INTOTO_PAYLOAD_TYPE, private_key=key, keyid="k1")
    line = dsse.envelope_line(envelope)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert base64.b64decode(parsed["payload"]) == payload
    signature = base64.b64decode(parsed["signatures"][0]["sig"])
    key.public_key().verify(signature, spec_pae(parsed["payloadType"].encode(), payload))
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, spec_pae(b"application/json", payload))
    assert dsse.verify_envelope(parsed, key.public_key(), payload_type=dsse.INTOTO_PAYLOAD_TYPE) == payload


def test_tampered_envelopes_are_refused() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    envelope = dsse.sign_envelope(b"{}", payload_type=dsse.INTOTO_PAYLOAD_TYPE, private_key=key, keyid="k")
    cases: list[object] = [
        {**envelope, "payload": base64.b64encode(b"{ }").decode()},
        {**envelope, "payloadType": "application/json"},
        {**envelope, "signatures": []},
        {**envelope, "signatures": [{"sig": "!!"}]},
        {**envelope, "payload": "!!"},
        [envelope],
    ]
    for case in cases:
        with pytest.raises(VerificationError):
            dsse.verify_envelope(case, key.public_key(), payload_type=dsse.INTOTO_PAYLOAD_TYPE)
    with pytest.raises(VerificationError, match="no DSSE signature verifies"):
        dsse.verify_envelope(envelope, other.public_key(), payload_type=dsse.INTOTO_PAYLOAD_TYPE)
