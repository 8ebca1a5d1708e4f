"""The signing agent: the outermost capture holds the key, nested captures ask it for signatures.

A capture that loads a private key (or makes an ephemeral one) serves signatures to the captures
nested inside its command over a Unix socket in a fresh mode-0700 directory, as ssh-agent does.
The key's path and passphrase are not exported to the command; ``ASL_CAPTURE_AGENT`` (the socket
path) is. The socket is closed as soon as the command exits, before the capture's own record is
written, so nothing can be signed after the build.

What a client may ask for is deliberately narrow, so that a build step that talks to the agent
cannot get anything signed that it could not also get by running ``asl-capture`` itself:

- the peer must run as the agent's user (``SO_PEERCRED``) and be a descendant of the agent's
  process (a process outside the build cannot sign, even with the socket path);
- ``hello``: the key id, the raw public key and the provenance directory the agent signs for;
- ``sign`` a *nested* step record (``parent`` set) that is the next record of the agent's own
  chain (chain id, ``seq`` and ``prev`` equal the chain's current head), or a checkpoint that
  vouches for exactly the chain's current last record. Nothing else is signed.

Framing: a 4-byte big-endian length, then a deterministic CBOR map (at most 16 MiB), one request
and one response per connection. Requests: ``{"v": 1, "op": "hello"}`` and ``{"v": 1, "op":
"sign", "type": CONTENT_TYPE, "payload": bstr}``; responses ``{"v": 1, "ok": true, ...}`` or
``{"v": 1, "ok": false, "error": tstr}``.

The process holding the key is made non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no core dumps,
and processes of the same (non-root) user cannot ptrace it or read its ``/proc/PID/mem`` or
``environ``. That does not stop root, or anything with ``CAP_SYS_PTRACE``.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import selectors
import signal
import struct
import tempfile
import threading
from pathlib import Path

from asl_capture import chain, cose, dcbor
from asl_capture.errors import AgentError, AslError, CborError, VerificationError
from asl_capture.format import CHECKPOINT_CONTENT_TYPE, STEP_CONTENT_TYPE, Checkpoint, StepRecord
from asl_capture.frozen import frozen
from asl_capture.keys import Signer
from asl_capture.prctl import make_undumpable
from asl_capture.store import ProvenanceDir

ENV_AGENT = "ASL_CAPTURE_AGENT"
PROTOCOL_VERSION = 1
MAX_MESSAGE = 16 << 20
CLIENT_TIMEOUT = 120.0
_SERVER_TIMEOUT = 30.0
_SOCKET_NAME = "agent.sock"
_MAX_SUN_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included
_HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                           signal.SIGUSR2, signal.SIGALRM})


# --- framing -------------------------------------------------------------------------------------------


def _recv_exact(sock: _socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise AgentError("connection closed mid-message")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _send(sock: _socket.socket, value: dict[str, dcbor.Value]) -> None:
    data = dcbor.encode(value)
    sock.sendall(struct.pack(">I", len(data)) + data)


def _receive(sock: _socket.socket) -> dict[str, dcbor.Value]:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_MESSAGE:
        raise AgentError(f"message of {size} bytes exceeds the limit of {MAX_MESSAGE}")
    try:
        value = dcbor.decode(_recv_exact(sock, size))
    except CborError as exc:
        raise AgentError(f"malformed message: {exc}") from None
    if not isinstance(value, dict) or value.get("v") != PROTOCOL_VERSION:
        raise AgentError("message is not a version-1 agent message")
    return value


# --- the server -------------------------------------------------------------------------------------------


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def _is_descendant(pid: int, ancestor: int) -> bool:
    for _ in range(4096):
        if pid == ancestor:
            return True
        parent = _parent_pid(pid)
        if parent is None or parent <= 0 or parent == pid:
            return False
        pid = parent
    return False


class SigningAgent:
    """Serves signatures by ``signer`` for the chain in ``prov`` to nested captures (see the module).

    Use as a context manager: the socket exists between ``__enter__`` and ``__exit__`` only.
    """

    def __init__(self, *, signer: Signer, prov: ProvenanceDir) -> None:
        self._signer = signer
        self._prov = prov
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._sock: _socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._closed = False
        self.socket_path: str = ""

    def __enter__(self) -> SigningAgent:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> str:
        """Create the private directory and socket and start serving; return the socket path.

        Raises:
            AgentError: the directory or socket cannot be created.
        """
        make_undumpable()
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        if len(os.path.join(base, "asl-agent-XXXXXXXX", _SOCKET_NAME)) > _MAX_SUN_PATH or not os.path.isdir(base):
            base = "/tmp"  # noqa: S108 - a fresh 0700 directory below it, checked right after
        try:
            directory = Path(tempfile.mkdtemp(prefix="asl-agent-", dir=base))
        except OSError as exc:
            raise AgentError(f"{base}: cannot create the signing agent's directory: {exc.strerror}") from None
        self._dir = directory
        try:
            st = os.lstat(directory)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise AgentError(f"{directory}: agent directory is not private (mode {st.st_mode & 0o777:o})")
            path = str(directory / _SOCKET_NAME)
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            self._sock = sock
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(16)
        except OSError as exc:
            self.close()
            raise AgentError(f"{directory}: cannot create the signing agent's socket: {exc.strerror}") from None
        except AgentError:
            self.close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self.socket_path = path
        self._thread = threading.Thread(target=self._serve, name="asl-signing-agent", daemon=True)
        # The agent's threads (and the handler threads they start, which inherit the mask) never take
        # the signals the capture forwards or holds pending while it writes its record: delivered to
        # them, SIGTERM's default action would end the process before the record is written.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return path

    def close(self) -> None:
        """Stop serving, close the socket and remove its directory (idempotent).

        A connection accepted earlier and still open is refused from now on.
        """
        with self._lock:
            self._closed = True
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._dir / _SOCKET_NAME)
            with contextlib.suppress(OSError):
                os.rmdir(self._dir)
            self._dir = None

    def _serve(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                try:  # socket.socket.accept, without importing the socket module (~2.5 ms)
                    fd, _ = self._sock._accept()  # type: ignore[attr-defined]
                except OSError:
                    continue
                conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: _socket.socket) -> None:
        try:
            conn.settimeout(_SERVER_TIMEOUT)
            try:
                request = _receive(conn)  # read first, so that a refused peer gets the reason
                self._check_peer(conn)
                reply = self._answer(request)
            except AgentError as exc:
                reply = {"v": PROTOCOL_VERSION, "ok": False, "error": str(exc)}
            except OSError:
                return
            with contextlib.suppress(OSError):
                _send(conn, reply)
        finally:
            conn.close()

    def _check_peer(self, conn: _socket.socket) -> None:
        creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.geteuid():
            raise AgentError(f"refused: peer runs as uid {uid}, the agent as uid {os.geteuid()}")
        if not _is_descendant(pid, os.getpid()):
            raise AgentError(f"refused: process {pid} is not part of the build this agent serves")

    def _answer(self, request: dict[str, dcbor.Value]) -> dict[str, dcbor.Value]:
        op = request.get("op")
        if op == "hello":
            return {"v": PROTOCOL_VERSION, "ok": True, "kid": self._signer.kid,
                    "public": self._signer.public_raw(), "provenance": str(self._prov.root)}
        if op != "sign":
            raise AgentError(f"unknown request {op!r}")
        content_type, payload = request.get("type"), request.get("payload")
        if not isinstance(content_type, str) or not isinstance(payload, bytes):
            raise AgentError("a sign request needs a text 'type' and a byte string 'payload'")
        with self._lock:
            if self._closed:
                raise AgentError("refused: the capture this agent served has ended")
            if content_type == STEP_CONTENT_TYPE:
                self._check_step(payload)
            elif content_type == CHECKPOINT_CONTENT_TYPE:
                self._check_checkpoint(payload)
            else:
                raise AgentError(f"refused: content type {content_type!r} is not signed by this agent")
            message = self._signer.sign_message(payload, content_type=content_type)
        return {"v": PROTOCOL_VERSION, "ok": True, "message": message}

    def _head(self) -> chain.Head:
        try:
            return chain.current_head(self._prov)
        except AslError as exc:
            raise AgentError(f"refused: the chain's head cannot be read: {exc}") from None

    def _check_step(self, payload: bytes) -> None:
        try:
            record = StepRecord.from_cbor(payload)
        except AslError as exc:
            raise AgentError(f"refused: not a well-formed step record: {exc}") from None
        if record.parent is None:
            raise AgentError("refused: only records of steps nested in the build are signed (parent is null)")
        if record.ephemeral_key is not None:
            raise AgentError("refused: a nested record cannot name a build key")
        head = self._head()
        if head.chain is not None and record.chain != head.chain:
            raise AgentError("refused: the record belongs to another chain")
        if record.seq != head.next_seq or record.prev != head.prev:
            raise AgentError(f"refused: the record (seq {record.seq}) is not the next record of the chain "
                             f"(next seq {head.next_seq})")

    def _check_checkpoint(self, payload: bytes) -> None:
        try:
            checkpoint = Checkpoint.from_cbor(payload)
        except AslError as exc:
            raise AgentError(f"refused: not a version-1 checkpoint: {exc}") from None
        head = self._head()
        if head.chain is None or checkpoint.chain != head.chain or checkpoint.seq != head.next_seq - 1 \
                or checkpoint.digest != head.prev:
            raise AgentError("refused: the checkpoint does not vouch for the chain's current last record")


# --- the client -------------------------------------------------------------------------------------------


def _call(path: str, request: dict[str, dcbor.Value]) -> dict[str, dcbor.Value]:
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(path)
            _send(sock, {"v": PROTOCOL_VERSION, **request})
            reply = _receive(sock)
        finally:
            sock.close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AgentError(f"signing agent {path} is not reachable ({reason}): the enclosing capture has "
                         f"ended, or this process is not part of its build") from None
    if reply.get("ok") is not True:
        error = reply.get("error")
        raise AgentError(f"signing agent: {error if isinstance(error, str) else 'request refused'}")
    return reply


@frozen
class AgentSigner:
    """Signs through the agent of an enclosing capture (a :class:`~asl_capture.cose.MessageSigner`)."""

    socket_path: str
    kid: bytes
    public: bytes
    provenance: Path

    def sign_message(self, payload: bytes, *, content_type: str) -> bytes:
        """Ask the agent to sign; check that what comes back is that payload, signed by its key.

        Raises:
            AgentError: the agent is gone, refused, or answered with something else.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        reply = _call(self.socket_path, {"op": "sign", "type": content_type, "payload": payload})
        message = reply.get("message")
        try:
            if not isinstance(message, bytes):
                raise AgentError("signing agent answered without a message")
            parsed = cose.parse(dcbor.decode(message, tags=cose.COSE_TAGS))
            if parsed.payload != payload or parsed.kid != self.kid or parsed.content_type != content_type:
                raise AgentError("signing agent answered with another message than the one requested")
            cose.verify(parsed, Ed25519PublicKey.from_public_bytes(self.public))
        except (CborError, VerificationError) as exc:
            raise AgentError(f"signing agent answered with a bad signature: {exc}") from None
        return message


def connect(path: str) -> AgentSigner:
    """Reach the agent at ``path`` and learn its key and provenance directory.

    Raises:
        AgentError: the agent is not reachable or answers wrongly.
    """
    reply = _call(path, {"op": "hello"})
    kid, public, provenance = reply.get("kid"), reply.get("public"), reply.get("provenance")
    if not (isinstance(kid, bytes) and isinstance(public, bytes) and len(public) == 32
            and isinstance(provenance, str) and cose.key_id(public) == kid):
        raise AgentError(f"signing agent {path}: malformed hello reply")
    return AgentSigner(socket_path=path, kid=kid, public=public, provenance=Path(provenance))
