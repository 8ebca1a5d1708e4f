"""COSE_Sign1 (Ed25519) for the authority artifacts, on :mod:`asl_capture.cose` and :mod:`asl_host.ed25519`.

A single-signer artifact (DAM, receipt, environment claim) is one tagged COSE_Sign1 exactly as the
build records are (``{1: -8, 3: content type, 4: kid}``, ``kid`` = SHA-256 of the raw public key).
A certificate, signed by a threshold of offline roots, is a CBOR array of COSE_Sign1 messages that
all carry the same payload bytes, one per root (order does not matter).
Verification works on the received bytes and decodes a payload only after its signature holds.
"""

from __future__ import annotations

from asl_capture import cose, dcbor
from asl_capture.errors import AslError
from asl_host import ed25519
from asl_host.errors import EXIT_FAILED, HostError
from asl_host.formats import FormatError


class SignatureRefused(HostError):
    """A signature does not hold, or is by a key that is not the one required."""

    exit_code = EXIT_FAILED


def key_id(public: bytes) -> bytes:
    """The kid of a raw public key (as in the build records)."""
    return cose.key_id(public)


def sign1(payload: bytes, seed: bytes, content_type: str) -> bytes:
    """The encoded, tagged COSE_Sign1 of ``payload`` by the private key ``seed``."""
    protected = cose.protected_header(key_id(ed25519.public_key(seed)), content_type)
    signature = ed25519.sign(seed, cose.sig_structure(protected, payload))
    return dcbor.encode(dcbor.Tag(cose.COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def parse1(value: dcbor.Value, content_type: str, where: str) -> cose.Sign1:
    """The structure of one decoded COSE_Sign1 of the given content type (signature not checked).

    Raises:
        FormatError: not a COSE_Sign1 of that content type.
    """
    try:
        msg = cose.parse(value)
    except AslError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if msg.content_type != content_type:
        raise FormatError(f"{where}: content type {msg.content_type!r}, expected {content_type!r}")
    return msg


def decode1(data: bytes, content_type: str, where: str) -> cose.Sign1:
    """Decode and parse the bytes of one COSE_Sign1 artifact. Raises FormatError."""
    try:
        value = dcbor.decode(data, tags=cose.COSE_TAGS)
    except AslError as exc:
        raise FormatError(f"{where}: not a deterministic CBOR COSE_Sign1: {exc}") from None
    return parse1(value, content_type, where)


def verify1(msg: cose.Sign1, public: bytes, where: str) -> bytes:
    """The payload of ``msg`` once its signature by ``public`` holds.

    Raises:
        SignatureRefused: signed by another key (kid), or the signature does not verify.
    """
    if msg.kid != key_id(public):
        raise SignatureRefused(f"{where}: signed by key {msg.kid.hex()[:16]}, not by the expected "
                               f"key {key_id(public).hex()[:16]}")
    if not ed25519.verify(public, msg.signature, cose.sig_structure(msg.protected, msg.payload)):
        raise SignatureRefused(f"{where}: Ed25519 signature does not verify")
    return msg.payload


def sign_many(payload: bytes, seeds: list[bytes], content_type: str) -> bytes:
    """A threshold artifact: the array of COSE_Sign1 of ``payload``, one per key."""
    items = [dcbor.decode(sign1(payload, seed, content_type), tags=cose.COSE_TAGS) for seed in seeds]
    return dcbor.encode(items)


def verify_many(data: bytes, content_type: str, keys: tuple[bytes, ...], threshold: int, where: str) -> bytes:
    """The common payload of a threshold artifact signed by at least ``threshold`` distinct ``keys``.

    Every signature must be by one of ``keys`` and must verify (a signature by any other key is
    refused, not ignored).

    Raises:
        FormatError: not an array of COSE_Sign1 of the content type, or payloads differ.
        SignatureRefused: a signer that is not in ``keys``, a bad signature, too few signers.
    """
    try:
        value = dcbor.decode(data, tags=cose.COSE_TAGS)
    except AslError as exc:
        raise FormatError(f"{where}: not deterministic CBOR: {exc}") from None
    if not isinstance(value, list) or not value:
        raise FormatError(f"{where}: expected a non-empty array of COSE_Sign1 signatures")
    by_kid = {key_id(k): k for k in keys}
    signers: set[bytes] = set()
    payload: bytes | None = None
    for i, item in enumerate(value):
        msg = parse1(item, content_type, f"{where}: signature {i}")
        if payload is not None and msg.payload != payload:
            raise FormatError(f"{where}: signature {i} signs different bytes than signature 0")
        payload = msg.payload
        public = by_kid.get(msg.kid)
        if public is None:
            raise SignatureRefused(f"{where}: signature {i} is by key {msg.kid.hex()[:16]}, "
                                   f"which is not a pinned offline root")
        verify1(msg, public, f"{where}: signature {i}")
        signers.add(msg.kid)
    if len(signers) < threshold:
        raise SignatureRefused(f"{where}: signed by {len(signers)} distinct pinned root(s), "
                               f"the threshold is {threshold}")
    assert payload is not None
    return payload
