"""COSE_Sign1 with Ed25519: RFC 8032 known answers, a pinned message, the RFC 9052 layout, negatives."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from asl_capture import cose, dcbor
from asl_capture.dcbor import Tag
from asl_capture.errors import CborError, VerificationError
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE
from asl_capture.keys import load_public, load_signer
from tests.conftest import KeyPair

# RFC 8032 section 7.1, TEST 1.
SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
EMPTY_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
    "d25bf5f0595bbe24655141438e7a100b"
)
KID = hashlib.sha256(PUBLIC).digest()
PAYLOAD = bytes.fromhex("a26176016473746570636b6174")  # {"v": 1, "step": "kat"}
# The whole tagged COSE_Sign1 of PAYLOAD under the TEST 1 key. Ed25519 is deterministic, so any change of
# the encoding (header order, content type, kid, Sig_structure) changes these bytes.
PINNED = bytes.fromhex(
    "d2845846a3012703781d6170706c69636174696f6e2f766e642e61736c2e737465702b63626f7204582021fe31dfa154a261"
    "626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9a04da26176016473746570636b617458400ac64daa92fc34c790"
    "060970925812ab729860dffb54b32036386687b2b65976ac14e46256b78cf8ded52140582e64e7d753f35f85a7879fbd424d"
    "b4f803bc03"
)
CTYPE = b"application/vnd.asl.step+cbor"
TAGS = frozenset({cose.COSE_SIGN1_TAG})


def rfc_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SECRET)


def rfc_public() -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(PUBLIC)


def parse_bytes(message: bytes) -> cose.Sign1:
    return cose.parse(dcbor.decode(message, tags=TAGS))


def test_rfc8032_test1_raw_primitive() -> None:
    key = rfc_key()
    raw_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw_public == PUBLIC
    assert key.sign(b"") == EMPTY_SIG
    rfc_public().verify(EMPTY_SIG, b"")  # raises if wrong


def test_key_id_is_sha256_of_raw_public_key() -> None:
    assert cose.key_id(PUBLIC) == KID
    assert KID.hex().startswith("21fe31df")


def test_protected_header_by_hand() -> None:
    expected = (
        b"\xa3"  # map(3)
        + b"\x01\x27"  # 1 (alg): -8 (EdDSA)
        + b"\x03\x78\x1d" + CTYPE  # 3 (content type): text(29)
        + b"\x04\x58\x20" + KID  # 4 (kid): bytes(32)
    )
    assert len(CTYPE) == 29
    assert cose.protected_header(KID) == expected
    assert cbor2.dumps({1: -8, 3: CTYPE.decode(), 4: KID}, canonical=True) == expected
    checkpoint = cose.protected_header(KID, CHECKPOINT_CONTENT_TYPE)
    assert cbor2.loads(checkpoint) == {1: -8, 3: "application/vnd.asl.checkpoint+cbor", 4: KID}


def test_sig_structure_by_hand() -> None:
    protected = cose.protected_header(KID)
    expected = (
        b"\x84"  # array(4)
        + b"\x6aSignature1"  # context, text(10)
        + b"\x58\x46" + protected  # body_protected, bytes(70)
        + b"\x40"  # external_aad, empty bytes
        + bytes([0x40 + len(PAYLOAD)]) + PAYLOAD  # payload, bytes(13)
    )
    assert len(protected) == 70
    assert cose.sig_structure(protected, PAYLOAD) == expected
    assert cbor2.dumps(["Signature1", protected, b"", PAYLOAD]) == expected


def test_pinned_cose_sign1_message() -> None:
    message = cose.sign(PAYLOAD, rfc_key())
    assert message.hex() == PINNED.hex()


def test_pinned_message_layout_and_signature_by_hand() -> None:
    protected = cose.protected_header(KID)
    to_sign = cbor2.dumps(["Signature1", protected, b"", PAYLOAD])
    signature = rfc_key().sign(to_sign)
    expected = (
        b"\xd2"  # tag 18 (COSE_Sign1)
        + b"\x84"  # array(4)
        + b"\x58\x46" + protected
        + b"\xa0"  # unprotected: empty map
        + bytes([0x40 + len(PAYLOAD)]) + PAYLOAD
        + b"\x58\x40" + signature
    )
    assert expected == PINNED
    decoded = cbor2.loads(PINNED)
    assert decoded.tag == 18
    assert list(decoded.value) == [protected, {}, PAYLOAD, signature]


def test_parse_and_verify_pinned_message() -> None:
    msg = parse_bytes(PINNED)
    assert msg.kid == KID
    assert msg.content_type == STEP_CONTENT_TYPE
    assert msg.payload == PAYLOAD
    assert msg.protected == PINNED[4:74]
    assert len(msg.signature) == 64
    assert cose.verify(msg, rfc_public()) == PAYLOAD


def test_sign_and_verify_with_fixture_keys(keypair: KeyPair, other_keypair: KeyPair) -> None:
    signer = load_signer(keypair.key)
    payload = dcbor.encode({"any": [1, 2, b"x"]})
    message = cose.sign(payload, signer.private_key)
    msg = parse_bytes(message)
    assert msg.kid == keypair.kid == signer.kid
    assert cose.verify(msg, load_public(keypair.pub)) == payload
    with pytest.raises(VerificationError) as info:
        cose.verify(msg, load_public(other_keypair.pub))
    assert info.value.check == "signature"


# ----------------------------------------------------------------------------------------------------
# Negative cases


def pinned_parts() -> list[dcbor.Value]:
    value = dcbor.decode(PINNED, tags=TAGS)
    assert isinstance(value, Tag) and isinstance(value.value, list)
    return list(value.value)


def expect(message: dcbor.Value, check: str, match: str) -> None:
    with pytest.raises(VerificationError, match=match) as info:
        cose.verify(cose.parse(message), rfc_public())
    assert info.value.check == check
    assert f"[{check}]" in str(info.value)


def header(*, alg: bytes = b"\x27", kid: bytes = KID, ctype: bytes = CTYPE) -> bytes:
    return b"\xa3\x01" + alg + b"\x03" + dcbor.encode(ctype.decode()) + b"\x04" + dcbor.encode(kid)


def test_wrong_tag() -> None:
    expect(Tag(98, pinned_parts()), "decode", "tag 18")
    expect(pinned_parts(), "decode", "tag 18")  # untagged
    expect(Tag(18, Tag(18, pinned_parts())), "decode", "array of 4")


@pytest.mark.parametrize("length", [0, 3, 5])
def test_wrong_array_length(length: int) -> None:
    parts = pinned_parts()
    parts = parts[:length] if length <= 4 else [*parts, b""]
    expect(Tag(18, parts), "decode", "array of 4")


def test_non_empty_unprotected_header() -> None:
    parts = pinned_parts()
    parts[1] = {"x": 1}
    expect(Tag(18, parts), "decode", "unprotected")
    parts[1] = []
    expect(Tag(18, parts), "decode", "unprotected")


def test_field_types() -> None:
    bads: list[tuple[int, dcbor.Value]] = [(0, "text"), (2, None), (3, [b""])]
    for index, bad in bads:
        parts = pinned_parts()
        parts[index] = bad
        expect(Tag(18, parts), "decode", "wrong types")


@pytest.mark.parametrize("size", [0, 63, 65])
def test_signature_length(size: int) -> None:
    parts = pinned_parts()
    parts[3] = b"\x00" * size
    expect(Tag(18, parts), "decode", "64 bytes")


@pytest.mark.parametrize("alg", [b"\x26", b"\x01", b"\x38\x22", b"\xf5", b"\x27\x00"])
def test_wrong_algorithm(alg: bytes) -> None:
    """-7 (ES256), 1, -35, true; and -8 followed by junk."""
    parts = pinned_parts()
    parts[0] = header(alg=alg)
    expect(Tag(18, parts), "decode", "EdDSA|labels 1, 3, 4")


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_wrong_kid_length(size: int) -> None:
    parts = pinned_parts()
    parts[0] = header(kid=b"\x01" * size)
    expect(Tag(18, parts), "decode", "kid is not a 32-byte string")


@pytest.mark.parametrize(("protected", "match"), [
    (b"", "exactly 3"),
    (b"\xa2\x01\x27\x04\x58\x20" + KID, "exactly 3"),
    (b"\xa3\x03\x78\x1d" + CTYPE + b"\x01\x27\x04\x58\x20" + KID, "label 1"),  # labels out of order
    (b"\xa3\x01\x27\x03\x78\x1d" + CTYPE + b"\x05\x58\x20" + KID, "label 4"),
    (header() + b"\x00", "trailing"),
    (b"\xa3\x01\x27\x03\x58\x1d" + CTYPE + b"\x04\x58\x20" + KID, "content type"),  # ctype as bytes
    (b"\xa3\x01\x27\x03\x78\x1d" + CTYPE + b"\x04\x78\x20" + b"a" * 32, "kid"),  # kid as text
    (b"\xa3\x01\x27\x03\x78\x1d" + CTYPE + b"\x04\x58\x20" + KID[:10], "protected header"),  # truncated
    (b"\xa3\x01\x39\x00\x07\x03", "protected header"),  # non-minimal -8
])
def test_malformed_protected_header(protected: bytes, match: str) -> None:
    parts = pinned_parts()
    parts[0] = protected
    expect(Tag(18, parts), "decode", match)


def test_tampered_payload() -> None:
    parts = pinned_parts()
    payload = parts[2]
    assert isinstance(payload, bytes)
    parts[2] = payload[:-1] + bytes([payload[-1] ^ 1])
    expect(Tag(18, parts), "signature", "does not verify")


def test_tampered_protected_header_still_well_formed() -> None:
    for protected in (header(ctype=b"application/vnd.asl.release+cbor"), header(kid=bytes(32))):
        parts = pinned_parts()
        parts[0] = protected
        assert cose.parse(Tag(18, parts)).protected == protected  # parses, so only the signature can catch it
        expect(Tag(18, parts), "signature", "does not verify")


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_tampered_signature(index: int) -> None:
    parts = pinned_parts()
    signature = bytearray(parts[3])  # type: ignore[arg-type]
    signature[index] ^= 0x80
    parts[3] = bytes(signature)
    expect(Tag(18, parts), "signature", "does not verify")


def test_every_single_bit_flip_of_the_pinned_message_fails() -> None:
    """A flip anywhere either breaks the structure (decode) or the signature: nothing verifies."""
    for index in range(len(PINNED)):
        for bit in (0x01, 0x80):
            mutated = bytearray(PINNED)
            mutated[index] ^= bit
            with pytest.raises((VerificationError, CborError)):
                cose.verify(parse_bytes(bytes(mutated)), rfc_public())


def test_verification_uses_received_bytes_not_a_re_encoding() -> None:
    """The signed protected bytes are kept opaque: the parsed message carries them verbatim."""
    msg = parse_bytes(PINNED)
    assert cose.sig_structure(msg.protected, msg.payload) == cbor2.dumps(["Signature1", PINNED[4:74], b"", PAYLOAD])
