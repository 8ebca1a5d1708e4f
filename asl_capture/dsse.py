"""DSSE envelopes (Dead Simple Signing Envelope, v1) signed with Ed25519, in their JSON form.

The signature is over ``PAE(payloadType, payload)`` where
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` and ``LEN`` is the byte
length in ASCII decimal. The envelope is
``{"payload": b64(body), "payloadType": type, "signatures": [{"keyid": hex, "sig": b64(sig)}]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from asl_capture.errors import VerificationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of a payload and its type."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, *, payload_type: str, private_key: Ed25519PrivateKey, keyid: str) -> dict[str, Any]:
    """A DSSE envelope of ``payload`` with one Ed25519 signature."""
    signature = private_key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode("ascii")}],
    }


def envelope_line(envelope: dict[str, Any]) -> bytes:
    """One JSON Lines line (``.intoto.jsonl``) holding the envelope."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"


def verify_envelope(envelope: object, public_key: Ed25519PublicKey, *, payload_type: str) -> bytes:
    """Check a DSSE envelope has a valid signature by ``public_key``; return the payload bytes.

    Raises:
        VerificationError: malformed, another payload type, or no signature that verifies.
    """
    from cryptography.exceptions import InvalidSignature

    if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
        raise VerificationError("DSSE envelope is not an object with a signatures list")
    if envelope.get("payloadType") != payload_type:
        raise VerificationError(f"DSSE payload type {envelope.get('payloadType')!r} is not {payload_type!r}")
    try:
        payload = base64.b64decode(str(envelope.get("payload")), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("DSSE payload is not base64") from None
    message = pae(payload_type, payload)
    for entry in envelope["signatures"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            continue
        try:
            public_key.verify(base64.b64decode(entry["sig"], validate=True), message)
        except (binascii.Error, ValueError, InvalidSignature):
            continue
        return payload
    raise VerificationError("no DSSE signature verifies with the release key")
