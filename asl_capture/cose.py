"""COSE_Sign1 (RFC 9052) with Ed25519, exactly as the record contract fixes it.

A message is ``18([protected, {}, payload, signature])`` where ``protected`` is the deterministic
encoding of ``{1: -8, 3: "application/vnd.asl.step+cbor", 4: kid}`` and the signature is Ed25519 over
``["Signature1", protected, h'', payload]``. Verification works on the received bytes, checks the
signature before the payload is decoded and never re-encodes anything.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from asl_capture import dcbor
from asl_capture.errors import CborError, VerificationError
from asl_capture.format.constants import STEP_CONTENT_TYPE
from asl_capture.frozen import frozen

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
#: The tags a chain item may carry (for :func:`dcbor.decode`).
COSE_TAGS = frozenset({COSE_SIGN1_TAG})


class MessageSigner(Protocol):
    """Anything that signs COSE_Sign1 messages with one Ed25519 key: a loaded key file, an in-memory
    ephemeral key, or the signing agent of an enclosing capture (:mod:`asl_capture.agent`)."""

    @property
    def kid(self) -> bytes:
        """The key id of the signing key."""
        ...

    def sign_message(self, payload: bytes, *, content_type: str) -> bytes:
        """The encoded, tagged COSE_Sign1 message carrying ``payload``."""
        ...


def key_id(public_raw: bytes) -> bytes:
    """The key id: SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_raw).digest()


def protected_header(kid: bytes, content_type: str = STEP_CONTENT_TYPE) -> bytes:
    """Deterministic encoding of the protected header map ``{1: -8, 3: ctype, 4: kid}``."""
    out = bytearray(b"\xa3\x01\x27\x03")  # map(3), 1: -8, 3:
    out += dcbor.encode(content_type)
    out.append(0x04)
    out += dcbor.encode(kid)
    return bytes(out)


#: The deterministic encoding of ``array(4), "Signature1"``: how every Sig_structure starts.
_SIG_STRUCTURE_START = dcbor.encode(["Signature1"])[1:]


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes that are signed: ``["Signature1", protected, h'', payload]`` in deterministic CBOR
    (written out directly: it is built once per record verified)."""
    return b"".join((b"\x84", _SIG_STRUCTURE_START, dcbor.head(2, len(protected)), protected, b"\x40",
                     dcbor.head(2, len(payload)), payload))


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte form of an Ed25519 public key."""
    try:  # the private module avoids importing the PEM/DER loaders (tens of ms at start-up)
        from cryptography.hazmat.primitives._serialization import Encoding, PublicFormat
    except ImportError:  # pragma: no cover - a cryptography release without it
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(payload: bytes, private_key: Ed25519PrivateKey, *, content_type: str = STEP_CONTENT_TYPE) -> bytes:
    """Return the encoded, tagged COSE_Sign1 message carrying ``payload``."""
    raw = raw_public_bytes(private_key.public_key())
    protected = protected_header(key_id(raw), content_type)
    signature = private_key.sign(sig_structure(protected, payload))
    return dcbor.encode(dcbor.Tag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


@frozen
class Sign1:
    """A structurally parsed, not yet verified COSE_Sign1 message."""

    protected: bytes
    kid: bytes
    content_type: str
    payload: bytes
    signature: bytes


def _parse_protected(protected: bytes) -> tuple[bytes, str]:
    """Return (kid, content type) from a protected header, strictly."""
    if not protected or protected[0] != 0xA3:
        raise VerificationError("protected header is not a map of exactly 3 entries", check="decode")
    pos = 1
    seen: dict[int, dcbor.Value] = {}
    for expected in (1, 3, 4):
        if pos >= len(protected) or protected[pos] != expected:
            raise VerificationError(
                f"protected header must hold labels 1, 3, 4 in order; label {expected} missing",
                check="decode",
            )
        try:
            seen[expected], pos = dcbor.decode_item(protected, pos + 1)
        except CborError as exc:
            raise VerificationError(f"protected header: {exc}", check="decode") from None
    if pos != len(protected):
        raise VerificationError("trailing bytes in the protected header", check="decode")
    if seen[1] != ALG_EDDSA or isinstance(seen[1], bool):
        raise VerificationError(f"algorithm {seen[1]!r} is not EdDSA (-8)", check="decode")
    ctype, kid = seen[3], seen[4]
    if not isinstance(ctype, str):
        raise VerificationError("content type is not a text string", check="decode")
    if not isinstance(kid, bytes) or len(kid) != 32:
        raise VerificationError("kid is not a 32-byte string", check="decode")
    return kid, ctype


def parse(message: dcbor.Value) -> Sign1:
    """Check the COSE_Sign1 structure of a decoded chain item (not its signature).

    Raises:
        VerificationError: wrong tag, shape, algorithm or header (check ``decode``).
    """
    if not isinstance(message, dcbor.Tag) or message.tag != COSE_SIGN1_TAG:
        raise VerificationError("item is not a tagged COSE_Sign1 (tag 18)", check="decode")
    body = message.value
    if not isinstance(body, list) or len(body) != 4:
        raise VerificationError("COSE_Sign1 is not an array of 4", check="decode")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise VerificationError("COSE_Sign1 fields have the wrong types", check="decode")
    if unprotected != {}:
        raise VerificationError("unprotected header must be empty", check="decode")
    if len(signature) != 64:
        raise VerificationError("Ed25519 signature is not 64 bytes", check="decode")
    kid, ctype = _parse_protected(protected)
    return Sign1(protected=protected, kid=kid, content_type=ctype, payload=payload, signature=signature)


def verify(msg: Sign1, public_key: Ed25519PublicKey) -> bytes:
    """Verify the signature over the received bytes and return the (still encoded) payload.

    Raises:
        VerificationError: the signature does not hold (check ``signature``).
    """
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(msg.signature, sig_structure(msg.protected, msg.payload))
    except InvalidSignature:
        raise VerificationError("Ed25519 signature does not verify", check="signature") from None
    return msg.payload
