"""The signing agent: the outermost capture holds the key and the chain, nested captures ask it to append.

A capture that loads a private key (or makes an ephemeral one) keeps the chain for the whole build
(:class:`~asl_capture.keeper.ChainKeeper`) and serves the captures nested inside its command over a
Unix socket in a fresh directory, as ssh-agent does. The key's path and passphrase are not exported
to the command; ``ASL_CAPTURE_AGENT`` (the socket path) is. The socket is closed as soon as the
command exits, before the capture's own record is written, so nothing can be appended after the build.

A nested capture never writes the provenance directory itself (it may run as an unprivileged build
user that cannot): it asks the agent to store each object it made (a file descriptor passed with
``SCM_RIGHTS``; the agent reads and hashes it) and to append its record, which the agent links to
the head it holds in memory, signs and writes. What a client may ask for is deliberately narrow, so
that a build step talking to the agent gets nothing it could not get by running ``asl-capture``:

- the peer must run as the agent's user or as the build user the agent serves (``SO_PEERCRED``)
  and be a descendant of the agent's process (a process outside the build cannot ask, even with
  the socket path);
- ``hello``: the key id, the raw public key and the provenance directory the agent keeps;
- ``begin`` (``parent``): a fresh run id, handed out once, for a capture nested in a capture of this
  build that is still running;
- ``put`` (one descriptor of a regular file): store its bytes from its offset on; answers digest and size;
- ``append`` (``payload``: a record draft whose chain fields are ignored): the record of a begun
  capture, naming only stored objects; answers the signed chain item and its seq.

Nothing is signed on request: no checkpoint, no record at a seq the client chooses.

Framing: a 4-byte big-endian length, then a deterministic CBOR map (at most 16 MiB), one request
and one response per connection. Requests are ``{"v": 1, "op": ...}``; responses ``{"v": 1, "ok":
true, ...}`` or ``{"v": 1, "ok": false, "error": tstr}``.

The process holding the key is made non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no core dumps,
and processes of another user, or of the same non-root user, cannot ptrace it or read its
``/proc/PID/mem`` or ``environ``. That does not stop root, or anything with ``CAP_SYS_PTRACE``:
steps run as an unprivileged build user for that reason (:mod:`asl_capture.builduser`).
"""

from __future__ import annotations

import _socket
import array
import contextlib
import errno
import os
import selectors
import signal
import stat
import struct
import tempfile
import threading
import time
from pathlib import Path

from asl_capture import cose, dcbor
from asl_capture.errors import AgentError, AslError, CborError, VerificationError
from asl_capture.format import STEP_CONTENT_TYPE, StepRecord
from asl_capture.frozen import frozen
from asl_capture.keeper import ChainKeeper
from asl_capture.prctl import make_undumpable
from asl_capture.store import ObjectStore

ENV_AGENT = "ASL_CAPTURE_AGENT"
PROTOCOL_VERSION = 1
MAX_MESSAGE = 16 << 20
CLIENT_TIMEOUT = 120.0
_SERVER_TIMEOUT = 30.0
_SOCKET_NAME = "agent.sock"
_MAX_SUN_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included
#: Connections waiting to be accepted: as many as the kernel allows (net.core.somaxconn), so that a
#: parallel build's nested captures queue rather than fail.
_BACKLOG = 4096
#: A connect that finds the queue full anyway (EAGAIN) is tried again for this long.
_CONNECT_PATIENCE = 60.0
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


def _send(sock: _socket.socket, value: dict[str, dcbor.Value], fds: tuple[int, ...] = ()) -> None:
    data = dcbor.encode(value)
    framed = struct.pack(">I", len(data)) + data
    if fds:  # the descriptors travel with the first bytes
        sent = sock.sendmsg([framed], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])
        framed = framed[sent:]
    if framed:
        sock.sendall(framed)


def _receive(sock: _socket.socket, *, max_fds: int = 0) -> tuple[dict[str, dcbor.Value], list[int]]:
    """One message and the descriptors that came with it (at most ``max_fds``; more are closed)."""
    fds: list[int] = []
    if max_fds:
        header, ancillary, _flags, _addr = sock.recvmsg(4, _socket.CMSG_SPACE(max_fds * 4))
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(data[: len(data) - len(data) % 4])
                fds += received.tolist()
        if len(header) < 4:
            header += _recv_exact(sock, 4 - len(header)) if header else b""
    else:
        header = _recv_exact(sock, 4)
    try:
        if len(header) < 4:
            raise AgentError("connection closed mid-message")
        (size,) = struct.unpack(">I", header)
        if size > MAX_MESSAGE:
            raise AgentError(f"message of {size} bytes exceeds the limit of {MAX_MESSAGE}")
        try:
            value = dcbor.decode(_recv_exact(sock, size))
        except CborError as exc:
            raise AgentError(f"malformed message: {exc}") from None
        if not isinstance(value, dict) or value.get("v") != PROTOCOL_VERSION:
            raise AgentError("message is not a version-1 agent message")
    except BaseException:
        _close_all(fds)
        raise
    return value, fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --- the server -------------------------------------------------------------------------------------------


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
    except OSError:
        return None
    fields = stat_line[stat_line.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
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


@frozen
class Peer:
    """Who may talk to the agent besides its own user: the build user the steps run as, if any."""

    uid: int
    gid: int


class SigningAgent:
    """Serves the chain ``keeper`` holds to nested captures (see the module).

    Use as a context manager: the socket exists between ``__enter__`` and ``__exit__`` only.
    """

    def __init__(self, *, keeper: ChainKeeper, kid: bytes, public: bytes, build_user: Peer | None = None) -> None:
        self._keeper = keeper
        self._store = ObjectStore(keeper.prov)
        self._kid = kid
        self._public = public
        self._build_user = build_user
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

        Without a build user the directory is 0700 and the socket 0600; with one, both belong to
        the build user's group (0710 and 0660), so its processes can reach the socket and nothing else.

        Raises:
            AgentError: the directory or socket cannot be created.
        """
        make_undumpable()
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        if len(os.path.join(base, "asl-agent-XXXXXXXX", _SOCKET_NAME)) > _MAX_SUN_PATH or not os.path.isdir(base):
            base = "/tmp"  # noqa: S108 - a fresh 0700 directory below it, checked right after
        if self._build_user is not None and base != "/tmp":  # noqa: S108
            base = "/tmp"  # noqa: S108 - the build user must reach it: not below a private runtime directory
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
            if self._build_user is not None:
                os.chown(path, -1, self._build_user.gid)
                os.chmod(path, 0o660)
                os.chown(directory, -1, self._build_user.gid)
                os.chmod(directory, 0o710)  # noqa: S103 - the build user may enter, not list
            sock.listen(_BACKLOG)
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
        fds: list[int] = []
        try:
            conn.settimeout(_SERVER_TIMEOUT)
            try:
                request, fds = _receive(conn, max_fds=1)  # read first, so that a refused peer gets the reason
                self._check_peer(conn)
                reply = self._answer(request, fds)
            except AgentError as exc:
                reply = {"v": PROTOCOL_VERSION, "ok": False, "error": str(exc)}
            except OSError:
                return
            with contextlib.suppress(OSError):
                _send(conn, reply)
        finally:
            _close_all(fds)
            conn.close()

    def _check_peer(self, conn: _socket.socket) -> None:
        creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        allowed = {os.geteuid()} | ({self._build_user.uid} if self._build_user is not None else set())
        if uid not in allowed:
            raise AgentError(f"refused: peer runs as uid {uid}, not as a user of this build")
        if not _is_descendant(pid, os.getpid()):
            raise AgentError(f"refused: process {pid} is not part of the build this agent serves")

    def _answer(self, request: dict[str, dcbor.Value], fds: list[int]) -> dict[str, dcbor.Value]:
        op = request.get("op")
        if op == "hello":
            return {"v": PROTOCOL_VERSION, "ok": True, "kid": self._kid, "public": self._public,
                    "provenance": str(self._keeper.prov.root)}
        if op not in ("begin", "put", "append"):
            raise AgentError(f"unknown request {op!r}")
        if op != "put" and fds:
            raise AgentError(f"a {op} request carries no file descriptor")
        with self._lock:
            if self._closed:
                raise AgentError("refused: the capture this agent served has ended")
        try:
            if op == "begin":
                parent = request.get("parent")
                if not isinstance(parent, bytes):
                    raise AgentError("a begin request needs a byte string 'parent'")
                return {"v": PROTOCOL_VERSION, "ok": True, "id": self._keeper.begin(parent)}
            if op == "put":
                return self._put(fds)
            return self._append(request)
        except AgentError:
            raise
        except AslError as exc:
            raise AgentError(f"{type(exc).__name__}: {exc}") from None

    def _put(self, fds: list[int]) -> dict[str, dcbor.Value]:
        if len(fds) != 1:
            raise AgentError("a put request carries exactly one file descriptor")
        try:
            st = os.fstat(fds[0])
        except OSError as exc:
            raise AgentError(f"the descriptor cannot be used: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):  # a pipe or socket could block the agent forever
            raise AgentError("refused: a put request's descriptor must be a regular file")
        digest, size = self._store.put_fd(fds[0])
        return {"v": PROTOCOL_VERSION, "ok": True, "digest": digest, "size": size}

    def _append(self, request: dict[str, dcbor.Value]) -> dict[str, dcbor.Value]:
        payload = request.get("payload")
        if not isinstance(payload, bytes):
            raise AgentError("an append request needs a byte string 'payload'")
        try:
            draft = StepRecord.from_cbor(payload)
        except AslError as exc:
            raise AgentError(f"refused: not a well-formed step record: {exc}") from None
        if draft.parent is None:
            raise AgentError("refused: only records of steps nested in the build are appended (parent is null)")
        store = self._store
        record, item = self._keeper.append_nested(
            draft, present=lambda digest: os.path.isfile(store.prov.object_path(digest)))
        return {"v": PROTOCOL_VERSION, "ok": True, "seq": record.seq, "message": item.raw}


# --- the client -------------------------------------------------------------------------------------------


def _describe_failure(path: str, exc: OSError) -> str:
    """Why the agent could not be reached, by the error's real cause."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ECONNREFUSED):
        return f"signing agent {path} is gone: the enclosing capture has ended"
    if code in (errno.EACCES, errno.EPERM):
        return f"signing agent {path} may not be used by this process (permission denied)"
    if code == errno.EAGAIN:
        return f"signing agent {path} is overloaded: its connection queue stayed full for {_CONNECT_PATIENCE:.0f} s"
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return f"signing agent {path} did not answer within {CLIENT_TIMEOUT:.0f} s"
    return f"signing agent {path} is not reachable ({exc.strerror or type(exc).__name__})"


def _connect(path: str) -> _socket.socket:
    """A connected socket; a full queue (EAGAIN) is waited out, up to :data:`_CONNECT_PATIENCE`.

    Raises:
        OSError: the connection failed for another reason, or the queue stayed full.
    """
    deadline = time.monotonic() + _CONNECT_PATIENCE
    delay = 0.005
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)  # blocking: a full queue makes it wait rather than fail
        except BlockingIOError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        except BaseException:
            sock.close()
            raise
        sock.settimeout(CLIENT_TIMEOUT)
        return sock


def _call(path: str, request: dict[str, dcbor.Value], fds: tuple[int, ...] = ()) -> dict[str, dcbor.Value]:
    try:
        sock = _connect(path)
        try:
            _send(sock, {"v": PROTOCOL_VERSION, **request}, fds)
            reply, extra = _receive(sock)
            _close_all(extra)
        finally:
            sock.close()
    except OSError as exc:
        raise AgentError(_describe_failure(path, exc)) from None
    if reply.get("ok") is not True:
        error = reply.get("error")
        raise AgentError(f"signing agent: {error if isinstance(error, str) else 'request refused'}")
    return reply


@frozen
class AgentClient:
    """A nested capture's handle on the enclosing capture's agent (see the module)."""

    socket_path: str
    kid: bytes
    public: bytes
    provenance: Path

    def begin(self, parent: bytes) -> bytes:
        """A run id for a capture nested in ``parent``.

        Raises:
            AgentError: the agent is gone or refused.
        """
        run_id = _call(self.socket_path, {"op": "begin", "parent": parent}).get("id")
        if not isinstance(run_id, bytes) or len(run_id) != 16:
            raise AgentError("signing agent answered begin without a run id")
        return run_id

    def put_fd(self, fd: int) -> tuple[bytes, int]:
        """Have the agent store what the regular file ``fd`` holds from its offset on; its digest and size.

        Raises:
            AgentError: the agent is gone or refused.
        """
        reply = _call(self.socket_path, {"op": "put"}, (fd,))
        digest, size = reply.get("digest"), reply.get("size")
        if not isinstance(digest, bytes) or len(digest) != 32 or not isinstance(size, int):
            raise AgentError("signing agent answered put without a digest and size")
        return digest, size

    def append(self, draft: StepRecord) -> tuple[StepRecord, bytes]:
        """Have the agent append ``draft`` (its chain fields are set there); the record as appended
        and its signed chain item, checked: the same record, linked, signed by the agent's key.

        Raises:
            AgentError: the agent is gone, refused, or answered with something else.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        reply = _call(self.socket_path, {"op": "append", "payload": draft.to_cbor()})
        message = reply.get("message")
        try:
            if not isinstance(message, bytes):
                raise AgentError("signing agent answered without a chain item")
            parsed = cose.parse(dcbor.decode(message, tags=cose.COSE_TAGS))
            record = StepRecord.from_cbor(parsed.payload)
            if record.linked(chain=draft.chain, seq=draft.seq, prev=draft.prev) != draft \
                    or parsed.kid != self.kid or parsed.content_type != STEP_CONTENT_TYPE:
                raise AgentError("signing agent answered with another record than the one requested")
            cose.verify(parsed, Ed25519PublicKey.from_public_bytes(self.public))
        except (CborError, VerificationError) as exc:
            raise AgentError(f"signing agent answered with a bad signature: {exc}") from None
        except AslError as exc:
            if isinstance(exc, AgentError):
                raise
            raise AgentError(f"signing agent answered with a malformed record: {exc}") from None
        return record, message


def connect(path: str) -> AgentClient:
    """Reach the agent at ``path`` and learn its key and provenance directory.

    Raises:
        AgentError: the agent is not reachable or answers wrongly.
    """
    reply = _call(path, {"op": "hello"})
    kid, public, provenance = reply.get("kid"), reply.get("public"), reply.get("provenance")
    if not (isinstance(kid, bytes) and isinstance(public, bytes) and len(public) == 32
            and isinstance(provenance, str) and cose.key_id(public) == kid):
        raise AgentError(f"signing agent {path}: malformed hello reply")
    return AgentClient(socket_path=path, kid=kid, public=public, provenance=Path(provenance))
