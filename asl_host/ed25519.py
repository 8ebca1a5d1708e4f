"""Ed25519 signing and verification for the host, through OpenSSL's libcrypto (``ctypes``).

Why not ``cryptography`` at boot: importing its OpenSSL backend costs seconds under emulation (the
boot-time measurement is in ``docs/AUTH-HOST.md``), while the host only needs two primitives on raw
32-byte keys. ``libcrypto.so.3`` is already in the image (Python's ``hashlib`` links it) and it is
the same Ed25519 implementation ``cryptography`` calls. Where libcrypto cannot be loaded (a
workstation without OpenSSL 3), ``cryptography`` is used instead; the tests check that both agree.

Keys are raw bytes here: a 32-byte seed (private) and a 32-byte public key (RFC 8032).
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

from asl_host.errors import HostError

KEY_SIZE = 32
SIGNATURE_SIZE = 64
_NID_ED25519 = 1087  # EVP_PKEY_ED25519
_LIBCRYPTO = "libcrypto.so.3"


class CryptoError(HostError):
    """The Ed25519 implementation is unavailable or refused a key."""


class _LibCrypto:
    """The few EVP functions of libcrypto the host needs, typed for ctypes."""

    def __init__(self, lib: Any) -> None:
        c = ctypes
        self.lib = lib
        lib.EVP_PKEY_new_raw_public_key.restype = c.c_void_p
        lib.EVP_PKEY_new_raw_public_key.argtypes = [c.c_int, c.c_void_p, c.c_char_p, c.c_size_t]
        lib.EVP_PKEY_new_raw_private_key.restype = c.c_void_p
        lib.EVP_PKEY_new_raw_private_key.argtypes = [c.c_int, c.c_void_p, c.c_char_p, c.c_size_t]
        lib.EVP_PKEY_get_raw_public_key.restype = c.c_int
        lib.EVP_PKEY_get_raw_public_key.argtypes = [c.c_void_p, c.c_char_p, c.POINTER(c.c_size_t)]
        lib.EVP_PKEY_free.argtypes = [c.c_void_p]
        lib.EVP_MD_CTX_new.restype = c.c_void_p
        lib.EVP_MD_CTX_free.argtypes = [c.c_void_p]
        for name in ("EVP_DigestVerifyInit", "EVP_DigestSignInit"):
            getattr(lib, name).restype = c.c_int
            getattr(lib, name).argtypes = [c.c_void_p, c.c_void_p, c.c_void_p, c.c_void_p, c.c_void_p]
        lib.EVP_DigestVerify.restype = c.c_int
        lib.EVP_DigestVerify.argtypes = [c.c_void_p, c.c_char_p, c.c_size_t, c.c_char_p, c.c_size_t]
        lib.EVP_DigestSign.restype = c.c_int
        lib.EVP_DigestSign.argtypes = [c.c_void_p, c.c_char_p, c.POINTER(c.c_size_t), c.c_char_p, c.c_size_t]
        lib.ERR_clear_error.argtypes = []

    def _key(self, raw: bytes, *, private: bool) -> int:
        fn = self.lib.EVP_PKEY_new_raw_private_key if private else self.lib.EVP_PKEY_new_raw_public_key
        pkey = fn(_NID_ED25519, None, raw, len(raw))
        if not pkey:
            self.lib.ERR_clear_error()
            raise CryptoError("libcrypto refused the Ed25519 key")
        return int(pkey)

    def verify(self, public: bytes, signature: bytes, message: bytes) -> bool:
        pkey = self._key(public, private=False)
        ctx = self.lib.EVP_MD_CTX_new()
        try:
            if self.lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
                raise CryptoError("EVP_DigestVerifyInit failed")
            ok = bool(self.lib.EVP_DigestVerify(ctx, signature, len(signature), message, len(message)) == 1)
        finally:
            self.lib.EVP_MD_CTX_free(ctx)
            self.lib.EVP_PKEY_free(pkey)
            self.lib.ERR_clear_error()
        return ok

    def sign(self, seed: bytes, message: bytes) -> bytes:
        pkey = self._key(seed, private=True)
        ctx = self.lib.EVP_MD_CTX_new()
        try:
            if self.lib.EVP_DigestSignInit(ctx, None, None, None, pkey) != 1:
                raise CryptoError("EVP_DigestSignInit failed")
            out = ctypes.create_string_buffer(SIGNATURE_SIZE)
            size = ctypes.c_size_t(SIGNATURE_SIZE)
            if self.lib.EVP_DigestSign(ctx, out, ctypes.byref(size), message, len(message)) != 1:
                raise CryptoError("EVP_DigestSign failed")
            return out.raw[: size.value]
        finally:
            self.lib.EVP_MD_CTX_free(ctx)
            self.lib.EVP_PKEY_free(pkey)

    def public(self, seed: bytes) -> bytes:
        pkey = self._key(seed, private=True)
        try:
            out = ctypes.create_string_buffer(KEY_SIZE)
            size = ctypes.c_size_t(KEY_SIZE)
            if self.lib.EVP_PKEY_get_raw_public_key(pkey, out, ctypes.byref(size)) != 1:
                raise CryptoError("EVP_PKEY_get_raw_public_key failed")
            return out.raw[: size.value]
        finally:
            self.lib.EVP_PKEY_free(pkey)


@cache
def _libcrypto() -> _LibCrypto | None:
    try:
        return _LibCrypto(ctypes.CDLL(_LIBCRYPTO))
    except (OSError, AttributeError):
        return None


def backend() -> str:
    """``libcrypto`` or ``cryptography``: which implementation this process uses."""
    return "libcrypto" if _libcrypto() is not None else "cryptography"


def _check(raw: bytes, what: str) -> None:
    if not isinstance(raw, bytes) or len(raw) != KEY_SIZE:
        raise CryptoError(f"{what}: expected {KEY_SIZE} bytes")


def verify(public: bytes, signature: bytes, message: bytes, *, use: str | None = None) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public``.

    Raises:
        CryptoError: ``public`` is not a usable 32-byte key.
    """
    _check(public, "public key")
    if len(signature) != SIGNATURE_SIZE:
        return False
    lib = _libcrypto() if use != "cryptography" else None
    if lib is not None:
        return lib.verify(public, signature, message)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    except ValueError as exc:
        raise CryptoError(f"public key: {exc}") from None
    return True


def sign(seed: bytes, message: bytes, *, use: str | None = None) -> bytes:
    """The Ed25519 signature of ``message`` by the private key ``seed``. Raises CryptoError."""
    _check(seed, "private key")
    lib = _libcrypto() if use != "cryptography" else None
    if lib is not None:
        return lib.sign(seed, message)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def public_key(seed: bytes, *, use: str | None = None) -> bytes:
    """The raw public key of the private key ``seed``. Raises CryptoError."""
    _check(seed, "private key")
    lib = _libcrypto() if use != "cryptography" else None
    if lib is not None:
        return lib.public(seed)
    from cryptography.hazmat.primitives._serialization import Encoding, PublicFormat
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
