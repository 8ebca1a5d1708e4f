"""The step record (the signed payload of each chain item) and its parts: docs/FORMAT.md section 5.

Every type is a frozen dataclass on :class:`~asl_capture.format._check.Struct`: its ``FIELDS``
table is the CDDL, field by field; ``to_value`` gives the CBOR data model value and the strict
``from_value`` raises :class:`~asl_capture.errors.FormatError` naming the offending field
(``argv[0]: expected text or bytes, found uint``). Optional fields are ``None`` when absent.
Accepted values round-trip: ``from_value(v).to_value() == v``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.errors import FormatError
from asl_capture.format import _check as c
from asl_capture.format.constants import RECORD_VERSION
from asl_capture.frozen import frozen

STATUSES = ("ok", "failed", "interrupted")
CHAIN_ID_SIZE = 16
RUN_ID_SIZE = 16
#: Size of an Ed25519 public key, as ``ephemeral_key`` carries it.
PUBLIC_KEY_SIZE = 32


@frozen
class Inputs(c.Struct):
    """``inputs``: the tree manifest of what the step could read, with its counts."""

    manifest: bytes
    entries: int
    files: int

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"manifest": c.digest, "entries": c.uint, "files": c.uint}


@frozen
class Outputs(c.Struct):
    """``outputs``: the output roots' manifests after and before the step, their change list, counts."""

    manifest: bytes
    before: bytes
    changes: bytes
    entries: int
    files: int
    created: int
    modified: int
    deleted: int

    FIELDS: ClassVar[Mapping[str, c.Check]] = {
        "manifest": c.digest, "before": c.digest, "changes": c.digest, "entries": c.uint, "files": c.uint,
        "created": c.uint, "modified": c.uint, "deleted": c.uint,
    }


@frozen
class Log(c.Struct):
    """``stdout`` / ``stderr``: the digest and size of the byte-exact stream, stored as an object."""

    digest: bytes
    size: int

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"digest": c.digest, "size": c.uint}


@frozen
class Host(c.Struct):
    """``host``: where the step ran and which tool recorded it."""

    hostname: str
    kernel: str
    machine: str
    tool: str
    python: str

    FIELDS: ClassVar[Mapping[str, c.Check]] = dict.fromkeys(("hostname", "kernel", "machine", "tool", "python"),
                                                            c.text)


@frozen
class RunAs(c.Struct):
    """``user``: who the step's command ran as. A root capture runs it as an unprivileged build user
    unless told ``--as-root``; ``uid`` 0 here states that the step ran as root."""

    uid: int
    gid: int
    name: str

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"uid": c.uint, "gid": c.uint, "name": c.text}


@frozen
class Vcs(c.Struct):
    """``vcs``: the git commit and tree of the source checkout, and whether it had local changes."""

    commit: str
    tree: str
    dirty: bool
    type: str = "git"

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"type": c.choice("git"), "commit": c.text, "tree": c.text,
                                               "dirty": c.boolean}


@frozen
class Source(c.Struct):
    """One thing a step took from outside the build (``sources``): its URI, SHA-256 and kind."""

    uri: str
    sha256: bytes
    kind: str
    via: str | None = None
    name: str | None = None
    version: str | None = None
    size: int | None = None

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"uri": c.text, "sha256": c.digest, "kind": c.text, "via": c.text,
                                               "name": c.text, "version": c.text, "size": c.uint}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"via", "name", "version", "size"})


@frozen
class Attachment(c.Struct):
    """One file a step stored whole as an object (``asl-capture --attach``): its path, digest and size."""

    path: str | bytes
    digest: bytes
    size: int

    FIELDS: ClassVar[Mapping[str, c.Check]] = {"path": c.text_or_bytes, "digest": c.digest, "size": c.uint}


def _env_bytes(value: Value, where: str) -> tuple[tuple[bytes, str | bytes | None], ...]:
    """``env_bytes``: a non-empty array of ``[name, value / null]`` whose names are not valid UTF-8."""
    items = c.array(value, where)
    if not items:
        raise FormatError(where, "expected at least one variable (omit the field when none)")
    out: list[tuple[bytes, str | bytes | None]] = []
    for i, item in enumerate(items):
        at = c.index(where, i)
        pair = c.array(item, at)
        if len(pair) != 2:
            raise FormatError(at, f"expected [name, value], found an array of {len(pair)}")
        name = c.text_or_bytes(pair[0], c.index(at, 0))
        if not isinstance(name, bytes):
            raise FormatError(c.index(at, 0), "a name that is valid UTF-8 belongs in env")
        out.append((name, None if pair[1] is None else c.text_or_bytes(pair[1], c.index(at, 1))))
    return tuple(out)


@frozen
class StepRecord(c.Struct):
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
    #: Who the command ran as (records written since issue 23 carry it).
    user: RunAs | None = None

    VERSION: ClassVar[int | None] = RECORD_VERSION
    FIELDS: ClassVar[Mapping[str, c.Check]] = {
        "chain": c.sized(CHAIN_ID_SIZE), "seq": c.uint, "prev": c.nullable(c.digest), "id": c.sized(RUN_ID_SIZE),
        "parent": c.nullable(c.sized(RUN_ID_SIZE)), "step": c.text_or_bytes, "argv": c.array_of(c.text_or_bytes),
        "cwd": c.text_or_bytes, "env": c.map_of(c.nullable(c.text_or_bytes)), "started": c.integer,
        "finished": c.integer,
        "exit": c.integer, "status": c.choice(*STATUSES), "inputs": Inputs.from_value,
        "outputs": Outputs.from_value, "stdout": Log.from_value, "stderr": Log.from_value,
        "host": Host.from_value, "source_date_epoch": c.integer, "sources": c.array_of(Source.from_value),
        "vcs": Vcs.from_value, "error": c.text_or_bytes, "signals": c.array_of(c.uint),
        "ephemeral_key": c.sized(PUBLIC_KEY_SIZE), "attached": c.array_of(Attachment.from_value),
        "env_bytes": _env_bytes, "user": RunAs.from_value,
    }
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"source_date_epoch", "sources", "vcs", "error", "signals",
                                                    "ephemeral_key", "attached", "env_bytes", "user"})

    def linked(self, *, chain: bytes, seq: int, prev: bytes | None) -> StepRecord:
        """This record placed in a chain: ``chain``, ``seq`` and ``prev`` replaced."""
        return dataclasses.replace(self, chain=chain, seq=seq, prev=prev)

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value` (the payload that is signed)."""
        return dcbor.encode(self.to_value())

    @classmethod
    def from_cbor(cls, data: bytes) -> StepRecord:
        """Decode and check a record payload against FORMAT.md section 5, every field and every nested one.

        Raises:
            CborError: not deterministic CBOR.
            FormatError: a field is missing, unknown or of the wrong shape (named in the message).
        """
        return cls.from_value(dcbor.decode(data))
