"""minisign public keys and prehashed (``ED``) signatures, as the stock ``minisign`` tool reads them.

Public key file (two lines)::

    untrusted comment: minisign public key <KEYID>
    base64("Ed" || key_id[8] || ed25519_public_key[32])

Signature file (four lines)::

    untrusted comment: <text>
    base64("ED" || key_id[8] || ed25519_sign(BLAKE2b-512(file))[64])
    trusted comment: <text>
    base64(ed25519_sign(signature[64] || trusted_comment)[64])

``key_id`` is 8 bytes; minisign prints it as the little-endian 64-bit integer in upper-case hex.
Ours is the first 8 bytes of the project's key id (SHA-256 of the raw public key), so one Ed25519
key has the same identity in both formats.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from asl_capture.cose import key_id
from asl_capture.errors import VerificationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PUBLIC_ALG = b"Ed"
PREHASHED_ALG = b"ED"
_CHUNK = 1 << 20


def minisign_key_id(public_raw: bytes) -> bytes:
    """The 8-byte minisign key id of a raw Ed25519 public key."""
    return key_id(public_raw)[:8]


def key_id_text(mkid: bytes) -> str:
    """A minisign key id as minisign prints it (little-endian, upper-case hex)."""
    return mkid[::-1].hex().upper()


def public_key_file(public_raw: bytes) -> str:
    """The text of a minisign public key file (``minisign -p FILE``)."""
    mkid = minisign_key_id(public_raw)
    blob = base64.b64encode(PUBLIC_ALG + mkid + public_raw).decode("ascii")
    return f"untrusted comment: minisign public key {key_id_text(mkid)}\n{blob}\n"


def parse_public_key_file(text: str) -> tuple[bytes, bytes]:
    """The key id and raw Ed25519 public key of a minisign public key file.

    Raises:
        VerificationError: not a minisign Ed25519 public key.
    """
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].startswith("untrusted comment:"):
        raise VerificationError("not a minisign public key file")
    try:
        blob = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("minisign public key is not base64") from None
    if len(blob) != 42 or blob[:2] != PUBLIC_ALG:
        raise VerificationError("not a minisign Ed25519 public key")
    return blob[2:10], blob[10:]


def blake2b_file(chunks: Iterable[bytes]) -> bytes:
    """BLAKE2b-512 of the concatenated chunks (minisign's prehash)."""
    h = hashlib.blake2b(digest_size=64)
    for chunk in chunks:
        h.update(chunk)
    return h.digest()


def sign(data: bytes, private_key: Ed25519PrivateKey, *, trusted_comment: str,
         untrusted_comment: str = "signature from asl-release") -> str:
    """The text of a prehashed minisign signature of ``data``.

    Raises:
        ValueError: a comment holds a line break.
    """
    from asl_capture.cose import raw_public_bytes

    for comment in (trusted_comment, untrusted_comment):
        if "\n" in comment or "\r" in comment:
            raise ValueError("a minisign comment must be one line")
    mkid = minisign_key_id(raw_public_bytes(private_key.public_key()))
    signature = private_key.sign(blake2b_file([data]))
    global_signature = private_key.sign(signature + trusted_comment.encode("utf-8"))
    return (f"untrusted comment: {untrusted_comment}\n"
            f"{base64.b64encode(PREHASHED_ALG + mkid + signature).decode('ascii')}\n"
            f"trusted comment: {trusted_comment}\n"
            f"{base64.b64encode(global_signature).decode('ascii')}\n")


def verify(data: bytes, signature_text: str, public_raw: bytes, *, mkid: bytes | None = None) -> str:
    """Check a minisign signature of ``data`` (prehashed ``ED`` only); return its trusted comment.

    ``mkid`` is the key's minisign key id (default: ours, derived from the public key).

    Raises:
        VerificationError: malformed, another key, or a signature that does not hold.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    lines = signature_text.split("\n")
    if len(lines) < 4 or not lines[0].startswith("untrusted comment:") \
            or not lines[2].startswith("trusted comment: "):
        raise VerificationError("minisign signature is not four lines of the expected form")
    try:
        blob = base64.b64decode(lines[1], validate=True)
        global_signature = base64.b64decode(lines[3], validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("minisign signature is not base64") from None
    if len(blob) != 74 or blob[:2] != PREHASHED_ALG or len(global_signature) != 64:
        raise VerificationError("not a prehashed (ED) minisign signature")
    expected = minisign_key_id(public_raw) if mkid is None else mkid
    if blob[2:10] != expected:
        raise VerificationError(f"minisign signature is by key {key_id_text(blob[2:10])}, not "
                                f"{key_id_text(expected)}")
    key = Ed25519PublicKey.from_public_bytes(public_raw)
    trusted = lines[2][len("trusted comment: "):]
    try:
        key.verify(blob[10:], blake2b_file([data]))
    except InvalidSignature:
        raise VerificationError("minisign signature does not verify") from None
    try:
        key.verify(global_signature, blob[10:] + trusted.encode("utf-8"))
    except InvalidSignature:
        raise VerificationError("minisign trusted comment signature does not verify") from None
    return trusted
