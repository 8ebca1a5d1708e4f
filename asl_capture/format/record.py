"""The step record (the signed payload of each chain item) and its parts: docs/FORMAT.md section 5.

Every type is a frozen dataclass with ``to_value`` (the CBOR data model value, ready for
:func:`asl_capture.dcbor.encode`) and a strict ``from_value`` that checks every field against the
CDDL and raises :class:`~asl_capture.errors.FormatError` naming the offending field
(``argv[0]: expected text or bytes, found uint``). Optional fields are ``None`` when absent.
Accepted values round-trip: ``from_value(v).to_value() == v``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.errors import FormatError
from asl_capture.format import _check as c
from asl_capture.format.constants import RECORD_VERSION

STATUSES = ("ok", "failed", "interrupted")
CHAIN_ID_SIZE = 16
RUN_ID_SIZE = 16


@dataclass(frozen=True, slots=True)
class Inputs:
    """``inputs``: the tree manifest of what the step could read, with its counts."""

    manifest: bytes
    entries: int
    files: int

    def to_value(self) -> dict[str, Value]:
        return {"manifest": self.manifest, "entries": self.entries, "files": self.files}

    @classmethod
    def from_value(cls, value: Value, where: str = "inputs") -> Inputs:
        body = c.fields(value, where, ("manifest", "entries", "files"))
        return cls(manifest=c.digest(body["manifest"], c.at(where, "manifest")),
                   entries=c.uint(body["entries"], c.at(where, "entries")),
                   files=c.uint(body["files"], c.at(where, "files")))


@dataclass(frozen=True, slots=True)
class Outputs:
    """``outputs``: the output roots' manifests after and before the step, their change list, counts."""

    manifest: bytes
    before: bytes
    changes: bytes
    entries: int
    files: int
    created: int
    modified: int
    deleted: int

    _DIGESTS: ClassVar[tuple[str, ...]] = ("manifest", "before", "changes")
    _COUNTS: ClassVar[tuple[str, ...]] = ("entries", "files", "created", "modified", "deleted")

    def to_value(self) -> dict[str, Value]:
        return {name: getattr(self, name) for name in self._DIGESTS + self._COUNTS}

    @classmethod
    def from_value(cls, value: Value, where: str = "outputs") -> Outputs:
        body = c.fields(value, where, cls._DIGESTS + cls._COUNTS)
        def count(name: str) -> int:
            return c.uint(body[name], c.at(where, name))

        def digest(name: str) -> bytes:
            return c.digest(body[name], c.at(where, name))

        return cls(manifest=digest("manifest"), before=digest("before"), changes=digest("changes"),
                   entries=count("entries"), files=count("files"), created=count("created"),
                   modified=count("modified"), deleted=count("deleted"))


@dataclass(frozen=True, slots=True)
class Log:
    """``stdout`` / ``stderr``: the digest and size of the byte-exact stream, stored as an object."""

    digest: bytes
    size: int

    def to_value(self) -> dict[str, Value]:
        return {"digest": self.digest, "size": self.size}

    @classmethod
    def from_value(cls, value: Value, where: str) -> Log:
        body = c.fields(value, where, ("digest", "size"))
        return cls(digest=c.digest(body["digest"], c.at(where, "digest")),
                   size=c.uint(body["size"], c.at(where, "size")))


@dataclass(frozen=True, slots=True)
class Host:
    """``host``: where the step ran and which tool recorded it."""

    hostname: str
    kernel: str
    machine: str
    tool: str
    python: str

    _FIELDS: ClassVar[tuple[str, ...]] = ("hostname", "kernel", "machine", "tool", "python")

    def to_value(self) -> dict[str, Value]:
        return {name: getattr(self, name) for name in self._FIELDS}

    @classmethod
    def from_value(cls, value: Value, where: str = "host") -> Host:
        body = c.fields(value, where, cls._FIELDS)
        return cls(**{name: c.text(body[name], c.at(where, name)) for name in cls._FIELDS})


@dataclass(frozen=True, slots=True)
class Vcs:
    """``vcs``: the git commit and tree of the source checkout, and whether it had local changes."""

    commit: str
    tree: str
    dirty: bool

    TYPE: ClassVar[str] = "git"

    def to_value(self) -> dict[str, Value]:
        return {"type": self.TYPE, "commit": self.commit, "tree": self.tree, "dirty": self.dirty}

    @classmethod
    def from_value(cls, value: Value, where: str = "vcs") -> Vcs:
        body = c.fields(value, where, ("type", "commit", "tree", "dirty"))
        c.one_of(body["type"], c.at(where, "type"), (cls.TYPE,))
        return cls(commit=c.text(body["commit"], c.at(where, "commit")),
                   tree=c.text(body["tree"], c.at(where, "tree")),
                   dirty=c.boolean(body["dirty"], c.at(where, "dirty")))


@dataclass(frozen=True, slots=True)
class Source:
    """One thing a step took from outside the build (``sources``): its URI, SHA-256 and kind."""

    uri: str
    sha256: bytes
    kind: str
    via: str | None = None
    name: str | None = None
    version: str | None = None
    size: int | None = None

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("via", "name", "version", "size")

    def to_value(self) -> dict[str, Value]:
        out: dict[str, Value] = {"uri": self.uri, "sha256": self.sha256, "kind": self.kind}
        for name in self._OPTIONAL:
            c.put(out, name, getattr(self, name))
        return out

    @classmethod
    def from_value(cls, value: Value, where: str) -> Source:
        body = c.fields(value, where, ("uri", "sha256", "kind"), cls._OPTIONAL)
        return cls(uri=c.text(body["uri"], c.at(where, "uri")),
                   sha256=c.digest(body["sha256"], c.at(where, "sha256")),
                   kind=c.text(body["kind"], c.at(where, "kind")),
                   via=c.optional_text(body, "via", where), name=c.optional_text(body, "name", where),
                   version=c.optional_text(body, "version", where), size=c.optional_uint(body, "size", where))


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file a step stored whole as an object (``asl-capture --attach``): its path, digest and size."""

    path: str | bytes
    digest: bytes
    size: int

    def to_value(self) -> dict[str, Value]:
        return {"path": self.path, "digest": self.digest, "size": self.size}

    @classmethod
    def from_value(cls, value: Value, where: str) -> Attachment:
        body = c.fields(value, where, ("path", "digest", "size"))
        return cls(path=c.text_or_bytes(body["path"], c.at(where, "path")),
                   digest=c.digest(body["digest"], c.at(where, "digest")),
                   size=c.uint(body["size"], c.at(where, "size")))


_REQUIRED = ("v", "chain", "seq", "prev", "id", "parent", "step", "argv", "cwd", "env", "started", "finished",
             "exit", "status", "inputs", "outputs", "stdout", "stderr", "host")
_OPTIONAL = ("source_date_epoch", "sources", "vcs", "error", "signals", "ephemeral_key", "attached", "env_bytes")
#: Size of an Ed25519 public key, as ``ephemeral_key`` carries it.
PUBLIC_KEY_SIZE = 32


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One captured step, version 1. ``chain``, ``seq`` and ``prev`` place it in its chain."""

    chain: bytes
    seq: int
    prev: bytes | None
    id: bytes
    parent: bytes | None
    step: str | bytes
    argv: tuple[str | bytes, ...]
    cwd: str | bytes
    env: Mapping[str, str | bytes | None]
    started: int
    finished: int
    exit: int
    status: str
    inputs: Inputs
    outputs: Outputs
    stdout: Log
    stderr: Log
    host: Host
    source_date_epoch: int | None = None
    sources: tuple[Source, ...] | None = None
    vcs: Vcs | None = None
    error: str | bytes | None = None
    signals: tuple[int, ...] | None = None
    #: The raw public key of the in-memory key this (outermost) capture made with --ephemeral-key.
    ephemeral_key: bytes | None = None
    attached: tuple[Attachment, ...] | None = None
    #: Variables whose names are not valid UTF-8 (so cannot be keys of ``env``): (name, value or None).
    env_bytes: tuple[tuple[bytes, str | bytes | None], ...] | None = None

    REQUIRED: ClassVar[tuple[str, ...]] = _REQUIRED
    OPTIONAL: ClassVar[tuple[str, ...]] = _OPTIONAL

    def linked(self, *, chain: bytes, seq: int, prev: bytes | None) -> StepRecord:
        """This record placed in a chain: ``chain``, ``seq`` and ``prev`` replaced."""
        return dataclasses.replace(self, chain=chain, seq=seq, prev=prev)

    def object_digests(self) -> list[bytes]:
        """Every object this record references (manifests, change list, logs, attachments), in field order."""
        return [self.inputs.manifest, self.outputs.manifest, self.outputs.before, self.outputs.changes,
                self.stdout.digest, self.stderr.digest, *(a.digest for a in self.attached or ())]

    def to_value(self) -> dict[str, Value]:
        out: dict[str, Value] = {
            "v": RECORD_VERSION, "chain": self.chain, "seq": self.seq, "prev": self.prev, "id": self.id,
            "parent": self.parent, "step": self.step, "argv": list(self.argv), "cwd": self.cwd,
            "env": dict(self.env), "started": self.started, "finished": self.finished, "exit": self.exit,
            "status": self.status, "inputs": self.inputs.to_value(), "outputs": self.outputs.to_value(),
            "stdout": self.stdout.to_value(), "stderr": self.stderr.to_value(), "host": self.host.to_value(),
        }
        c.put(out, "source_date_epoch", self.source_date_epoch)
        if self.sources is not None:
            out["sources"] = [s.to_value() for s in self.sources]
        c.put(out, "vcs", None if self.vcs is None else self.vcs.to_value())
        c.put(out, "error", self.error)
        if self.signals is not None:
            out["signals"] = list(self.signals)
        c.put(out, "ephemeral_key", self.ephemeral_key)
        if self.attached is not None:
            out["attached"] = [a.to_value() for a in self.attached]
        if self.env_bytes is not None:
            out["env_bytes"] = [[name, value] for name, value in self.env_bytes]
        return out

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value` (the payload that is signed)."""
        return dcbor.encode(self.to_value())

    @classmethod
    def from_cbor(cls, data: bytes) -> StepRecord:
        """Decode and check a record payload.

        Raises:
            CborError: not deterministic CBOR.
            FormatError: a field is missing, unknown or breaks FORMAT.md section 5 (named in the message).
        """
        return cls.from_value(dcbor.decode(data))

    @classmethod
    def from_value(cls, value: Value) -> StepRecord:
        """Check a decoded record against FORMAT.md section 5, every field and every nested field.

        Raises:
            FormatError: names the first offending field.
        """
        body = c.fields(value, "", _REQUIRED, _OPTIONAL)
        c.version(body["v"], "v", RECORD_VERSION)
        env = c.mapping(body["env"], "env")
        return cls(
            chain=c.bstr(body["chain"], "chain", CHAIN_ID_SIZE),
            seq=c.uint(body["seq"], "seq"),
            prev=None if body["prev"] is None else c.digest(body["prev"], "prev"),
            id=c.bstr(body["id"], "id", RUN_ID_SIZE),
            parent=None if body["parent"] is None else c.bstr(body["parent"], "parent", RUN_ID_SIZE),
            step=c.text_or_bytes(body["step"], "step"),
            argv=tuple(c.text_or_bytes(a, c.index("argv", i)) for i, a in enumerate(c.array(body["argv"], "argv"))),
            cwd=c.text_or_bytes(body["cwd"], "cwd"),
            env={name: None if v is None else c.text_or_bytes(v, c.at("env", name)) for name, v in env.items()},
            started=c.integer(body["started"], "started"),
            finished=c.integer(body["finished"], "finished"),
            exit=c.integer(body["exit"], "exit"),
            status=c.one_of(body["status"], "status", STATUSES),
            inputs=Inputs.from_value(body["inputs"]),
            outputs=Outputs.from_value(body["outputs"]),
            stdout=Log.from_value(body["stdout"], "stdout"),
            stderr=Log.from_value(body["stderr"], "stderr"),
            host=Host.from_value(body["host"]),
            source_date_epoch=(c.integer(body["source_date_epoch"], "source_date_epoch")
                               if "source_date_epoch" in body else None),
            sources=(tuple(Source.from_value(s, c.index("sources", i))
                           for i, s in enumerate(c.array(body["sources"], "sources")))
                     if "sources" in body else None),
            vcs=Vcs.from_value(body["vcs"]) if "vcs" in body else None,
            error=c.text_or_bytes(body["error"], "error") if "error" in body else None,
            signals=(tuple(c.uint(s, c.index("signals", i)) for i, s in enumerate(c.array(body["signals"], "signals")))
                     if "signals" in body else None),
            ephemeral_key=(c.bstr(body["ephemeral_key"], "ephemeral_key", PUBLIC_KEY_SIZE)
                           if "ephemeral_key" in body else None),
            attached=(tuple(Attachment.from_value(a, c.index("attached", i))
                            for i, a in enumerate(c.array(body["attached"], "attached")))
                      if "attached" in body else None),
            env_bytes=_env_bytes(body["env_bytes"]) if "env_bytes" in body else None,
        )


def _env_bytes(value: Value) -> tuple[tuple[bytes, str | bytes | None], ...]:
    """``env_bytes``: a non-empty array of ``[name, value / null]`` whose names are not valid UTF-8."""
    items = c.array(value, "env_bytes")
    if not items:
        raise FormatError("env_bytes", "expected at least one variable (omit the field when none)")
    out: list[tuple[bytes, str | bytes | None]] = []
    for i, item in enumerate(items):
        where = c.index("env_bytes", i)
        pair = c.array(item, where)
        if len(pair) != 2:
            raise FormatError(where, f"expected [name, value], found an array of {len(pair)}")
        name = c.text_or_bytes(pair[0], c.index(where, 0))
        if not isinstance(name, bytes):
            raise FormatError(c.index(where, 0), "a name that is valid UTF-8 belongs in env")
        out.append((name, None if pair[1] is None else c.text_or_bytes(pair[1], c.index(where, 1))))
    return tuple(out)

