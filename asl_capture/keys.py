"""Ed25519 key files: generation, loading with permission checks, key ids, trust roots.

Private keys are PKCS#8 PEM (encrypted when a passphrase is given), created mode 0600 and refused
when group or others have any permission on them. Public keys are SubjectPublicKeyInfo PEM. Keys
made by ``openssl genpkey -algorithm ed25519`` load too. Passphrases come from a file or the
``ASL_KEY_PASSPHRASE`` environment variable, never from the command line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture import safeio
from asl_capture.cose import key_id, raw_public_bytes, sign
from asl_capture.errors import KeyFileError
from asl_capture.frozen import frozen

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PASSPHRASE_ENV = "ASL_KEY_PASSPHRASE"
#: Bytes read from a passphrase file at most (its first line is the passphrase).
PASSPHRASE_LIMIT = 64 * 1024
#: The signing key's path, when ``--key`` is not given.
ENV_KEY = "ASL_CAPTURE_KEY"
#: The passphrase file's path, when ``--passphrase-file`` is not given.
ENV_PASSPHRASE_FILE = "ASL_CAPTURE_PASSPHRASE_FILE"


@frozen
class Signer:
    """A private key held in this process and its key id. Its ``repr`` never shows key material.

    ``path`` is the key file it was loaded from, or None for an ephemeral key that only ever lived
    in memory.
    """

    private_key: Ed25519PrivateKey
    kid: bytes
    path: Path | None

    def __repr__(self) -> str:
        where = "ephemeral" if self.path is None else repr(str(self.path))
        return f"Signer(kid={self.kid.hex()}, path={where})"

    def sign_message(self, payload: bytes, *, content_type: str) -> bytes:
        """The encoded, tagged COSE_Sign1 message carrying ``payload``, signed with this key."""
        return sign(payload, self.private_key, content_type=content_type)

    def public_raw(self) -> bytes:
        """The raw 32-byte public key."""
        return raw_public_bytes(self.private_key.public_key())


def ephemeral_signer() -> Signer:
    """A fresh Ed25519 key held only in this process's memory (never written anywhere)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return Signer(private_key=key, kid=public_key_id(key.public_key()), path=None)


def public_key_id(public_key: Ed25519PublicKey) -> bytes:
    """Key id of a public key: SHA-256 of its raw 32 bytes."""
    return key_id(raw_public_bytes(public_key))


def read_passphrase(*, passphrase_file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The passphrase from ``passphrase_file`` (first line) or ``$ASL_KEY_PASSPHRASE``, or None.

    Raises:
        KeyFileError: the passphrase file cannot be read or is empty.
    """
    if passphrase_file is not None:
        try:  # a pipe is fine (--passphrase-file <(...)); only so much is read, whatever it is
            with open(passphrase_file, "rb") as handle:
                data = handle.read(PASSPHRASE_LIMIT)
        except OSError as exc:
            raise KeyFileError(f"{passphrase_file}: cannot read passphrase file: {exc.strerror}") from None
        line = data.split(b"\n", 1)[0].rstrip(b"\r")
        if not line:
            raise KeyFileError(f"{passphrase_file}: passphrase file is empty")
        return line
    value = environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we promise
            safeio.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)  # never leave a partial key that blocks the next attempt
        raise KeyFileError(f"{path}: cannot write: {exc.strerror}") from None


def generate(name: str, *, directory: Path, passphrase: bytes | None = None) -> tuple[Path, Path, bytes]:
    """Create ``NAME.key`` (0600) and ``NAME.pub`` in ``directory``; return both paths and the key id.

    Raises:
        KeyFileError: a bad name, an existing file, or the directory cannot be written.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"invalid key name {name!r}: a plain file name is required")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyFileError(f"{directory}: cannot create key directory: {exc.strerror}") from None
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    if pub_path.exists():
        raise KeyFileError(f"{pub_path}: already exists; refusing to overwrite a key")
    _write_new(key_path, private_pem, 0o600)
    try:
        _write_new(pub_path, public_pem, 0o644)
    except KeyFileError:
        key_path.unlink(missing_ok=True)  # a key without its public half is useless: roll back
        raise
    return key_path, pub_path, public_key_id(key.public_key())


def _read_key_file(path: Path, *, private: bool) -> bytes:
    try:
        # O_NONBLOCK: a FIFO at the key path must not hang the open (regular files ignore the flag).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # checked before fdopen, which raises IsADirectoryError
        os.close(fd)
        raise KeyFileError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if st.st_size > 64 * 1024:
            raise KeyFileError(f"{path}: too large to be a key file")
        data = handle.read()
    if private:
        # what the file is first: a public key or a non-key needs other advice than chmod
        if _pem_label(data) == b"PUBLIC KEY":
            raise KeyFileError(f"{path}: is a public key; signing needs the private key (NAME.key, not NAME.pub)")
        if not _may_be_private(data):
            raise KeyFileError(f"{path}: not a private key file (expected PKCS#8 PEM, as 'asl-keys generate' writes)")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: private key is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {path}'"
            )
    return data


def _pem_label(data: bytes) -> bytes | None:
    """The label of a PEM file (``PUBLIC KEY``, ``PRIVATE KEY``, ...), or None when it is not PEM."""
    text = data.lstrip()
    begin = b"-----BEGIN "
    end = text.find(b"-----", len(begin))
    return text[len(begin):end] if text.startswith(begin) and end > 0 else None


def _may_be_private(data: bytes) -> bool:
    """PEM labelled as a private key, or DER (a SEQUENCE) that the loader must judge."""
    label = _pem_label(data)
    return label.endswith(b"PRIVATE KEY") if label is not None else data.startswith(b"\x30")


def load_signer(path: Path, *, passphrase: bytes | None = None) -> Signer:
    """Load an Ed25519 private key (PKCS#8 PEM, or DER) for signing.

    Raises:
        KeyFileError: missing, too permissive, not Ed25519, encrypted without a passphrase, or a wrong
            passphrase.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, private=True)
    seed = _plain_ed25519_seed(data) if passphrase is None else None
    if seed is not None:  # fast path: no need to import the (slow to import) general PEM/DER loaders
        plain = Ed25519PrivateKey.from_private_bytes(seed)
        return Signer(private_key=plain, kid=public_key_id(plain.public_key()), path=path)
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    loader = serialization.load_pem_private_key if data.lstrip().startswith(b"-----") else (
        serialization.load_der_private_key
    )
    try:
        key = loader(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyFileError(
                f"{path}: key is encrypted; give its passphrase with --passphrase-file or ${PASSPHRASE_ENV}"
            ) from None
        raise KeyFileError(f"{path}: key is not encrypted but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = "wrong passphrase or " if passphrase is not None else ""
        raise KeyFileError(f"{path}: cannot load private key ({hint}not a PKCS#8 Ed25519 key)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return Signer(private_key=key, kid=public_key_id(key.public_key()), path=path)


#: DER of an unencrypted PKCS#8 Ed25519 private key, up to its 32-byte seed (RFC 8410 section 7).
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")


# Built from parts so that no line of this file looks like a committed private key to a scanner.
_PEM_LABEL = b"PRIVATE" + b" KEY-----"
_PEM_BEGIN = b"-----BEGIN " + _PEM_LABEL
_PEM_END = b"-----END " + _PEM_LABEL


def _plain_ed25519_seed(data: bytes) -> bytes | None:
    """The seed of an unencrypted PKCS#8 Ed25519 key in PEM or DER, or None for anything else."""
    import binascii

    text = data.strip()
    if text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END):
        try:
            der = binascii.a2b_base64(b"".join(text.splitlines()[1:-1]), strict_mode=True)
        except (binascii.Error, ValueError):
            return None
    else:
        der = data
    if len(der) == 48 and der.startswith(_PKCS8_ED25519):
        return der[16:]
    return None


def load_public(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key (SubjectPublicKeyInfo PEM or DER).

    Raises:
        KeyFileError: missing, unreadable, or not an Ed25519 public key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, private=False)
    try:
        if data.lstrip().startswith(b"-----"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not a SubjectPublicKeyInfo public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def file_public_key(path: Path, *, passphrase: Callable[[], bytes | None]) -> bytes:
    """The raw 32-byte public key of a public or private key file; ``passphrase()`` is asked only
    for a private key.

    Raises:
        KeyFileError: missing, unreadable, not a key file, or a private key that cannot be loaded.
    """
    data = _read_key_file(path, private=False)
    label = _pem_label(data)
    if label == b"PUBLIC KEY":
        return raw_public_bytes(load_public(path))
    if not _may_be_private(data):
        raise KeyFileError(f"{path}: not a key file (neither an Ed25519 public key nor a private key)")
    if label is None:  # DER: public or private
        try:
            return raw_public_bytes(load_public(path))
        except KeyFileError:
            pass
    return load_signer(path, passphrase=passphrase()).public_raw()


def load_trust(paths: Sequence[Path]) -> dict[bytes, Ed25519PublicKey]:
    """Trusted keys by key id, from ``*.pub`` files and directories holding them.

    Raises:
        KeyFileError: no path given, a directory with no ``*.pub``, or an unloadable key.
    """
    trusted: dict[bytes, Ed25519PublicKey] = {}
    if not paths:
        raise KeyFileError("no trusted key given (--trust PUB_OR_DIR)")
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".pub" and p.is_file())
            if not files:
                raise KeyFileError(f"{path}: no *.pub trusted keys in this directory")
        else:
            files = [path]
        for file in files:
            key = load_public(file)
            trusted[public_key_id(key)] = key
    return trusted


def dev_key_path(environ: Mapping[str, str]) -> Path:
    """Where the per-user development key lives: ``$XDG_CONFIG_HOME/asl-capture/dev.key``."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "asl-capture" / "dev.key"


def _is_empty_leftover(path: Path) -> bool:
    """An empty regular file with no ``.pub`` beside it: what an interrupted key creation left."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and not path.with_suffix(".pub").exists()


def ensure_dev_key(environ: Mapping[str, str]) -> tuple[Path, bytes | None]:
    """Return the development key path, creating it (0600) on first use.

    The second element is the new key's id when it was just created, else None.

    Raises:
        KeyFileError: the key cannot be created.
    """
    path = dev_key_path(environ)
    if path.exists():
        if not _is_empty_leftover(path):
            return path, None
        path.unlink(missing_ok=True)  # an empty key without its .pub: a first use that ran out of space
    try:
        _, _, kid = generate("dev", directory=path.parent)
    except KeyFileError:
        if path.exists():  # a concurrent first use created it
            return path, None
        raise
    return path, kid


def load_seed(path: Path, *, passphrase: bytes | None = None) -> bytes:
    """The raw 32-byte Ed25519 private key (seed) of a key file, with the checks of :func:`load_signer`.

    An unencrypted PKCS#8 key is read without importing ``cryptography`` (slow to import on small
    or emulated machines: the authority host signs at boot).

    Raises:
        KeyFileError: as :func:`load_signer`.
    """
    data = _read_key_file(path, private=True)
    seed = _plain_ed25519_seed(data) if passphrase is None else None
    if seed is not None:
        return seed
    from cryptography.hazmat.primitives import serialization

    signer = load_signer(path, passphrase=passphrase)
    return signer.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def save_seed(path: Path, seed: bytes, *, passphrase: bytes | None = None) -> None:
    """Write an Ed25519 private key as PKCS#8 PEM (mode 0600, never over an existing file): encrypted
    (``ENCRYPTED PRIVATE KEY``, as :func:`generate` writes) when ``passphrase`` is given, else
    unencrypted and without importing ``cryptography``.

    Raises:
        KeyFileError: ``seed`` is not 32 bytes, the file exists or cannot be written.
    """
    import base64

    if len(seed) != 32:
        raise KeyFileError(f"{path}: an Ed25519 private key is 32 bytes")
    if passphrase:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase))
        _write_new(path, pem, 0o600)
        return
    body = base64.encodebytes(_PKCS8_ED25519 + seed).replace(b"\n", b"")
    _write_new(path, _PEM_BEGIN + b"\n" + body + b"\n" + _PEM_END + b"\n", 0o600)


@frozen
class KeySource:
    """Which signing key to use, with its passphrase file; ``created`` is the key id of a development
    key made just now (else None)."""

    path: Path
    passphrase_file: Path | None
    created: bytes | None = None

    def load(self, environ: Mapping[str, str]) -> Signer:
        """Read the passphrase (file, else ``$ASL_KEY_PASSPHRASE``) and load the key.

        Raises:
            KeyFileError: the passphrase or the key cannot be read, or the key is unusable.
        """
        return load_signer(self.path, passphrase=read_passphrase(passphrase_file=self.passphrase_file, environ=environ))


def signing_key(*, key: Path | None, passphrase_file: Path | None, environ: Mapping[str, str],
                cwd: Path) -> KeySource:
    """The signing key: ``key`` (``--key``), else ``$ASL_CAPTURE_KEY``, else the per-user development
    key (created when missing). The passphrase file is ``passphrase_file``, else
    ``$ASL_CAPTURE_PASSPHRASE_FILE``. Relative paths are taken from ``cwd``.

    Raises:
        KeyFileError: the development key cannot be created.
    """
    if passphrase_file is None and environ.get(ENV_PASSPHRASE_FILE):
        passphrase_file = Path(environ[ENV_PASSPHRASE_FILE])
    if key is None and environ.get(ENV_KEY):
        key = Path(environ[ENV_KEY])
    created = None
    if key is None:
        key, created = ensure_dev_key(environ)
    if passphrase_file is not None and not passphrase_file.is_absolute():
        passphrase_file = cwd / passphrase_file
    return KeySource(path=key if key.is_absolute() else cwd / key, passphrase_file=passphrase_file, created=created)
