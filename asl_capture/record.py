"""The step record (the signed payload of each chain item), version 1.

``StepRecord`` is frozen and typed; :meth:`StepRecord.to_cbor` gives its deterministic encoding and
:meth:`StepRecord.from_cbor` is the one parse path, which checks every field's type and wraps
decoder errors. See ``docs/FORMAT.md`` for the CDDL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from asl_capture import dcbor
from asl_capture.errors import CborError

RECORD_VERSION = 1
STATUSES = ("ok", "failed", "interrupted")
_T = TypeVar("_T")
_REQUIRED = frozenset({
    "v", "chain", "seq", "prev", "id", "parent", "step", "argv", "cwd", "env", "started", "finished",
    "exit", "status", "inputs", "outputs", "stdout", "stderr", "host",
})
_OPTIONAL = frozenset({"source_date_epoch", "sources", "vcs", "error", "signals"})


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One captured step. ``body`` holds every field, exactly as signed (text keys)."""

    body: dict[str, dcbor.Value]

    # Typed accessors for the fields the tools use.
    @property
    def chain(self) -> bytes:
        return _as(bytes, self.body["chain"])

    @property
    def seq(self) -> int:
        return _as(int, self.body["seq"])

    @property
    def prev(self) -> bytes | None:
        value = self.body["prev"]
        return None if value is None else _as(bytes, value)

    @property
    def id(self) -> bytes:
        return _as(bytes, self.body["id"])

    @property
    def parent(self) -> bytes | None:
        value = self.body["parent"]
        return None if value is None else _as(bytes, value)

    @property
    def step(self) -> str:
        return _as(str, self.body["step"])

    @property
    def status(self) -> str:
        return _as(str, self.body["status"])

    @property
    def exit(self) -> int:
        return _as(int, self.body["exit"])

    @property
    def started(self) -> int:
        return _as(int, self.body["started"])

    @property
    def finished(self) -> int:
        return _as(int, self.body["finished"])

    def object_digests(self) -> list[bytes]:
        """Every object this record references (manifests, change lists, logs)."""
        found: list[bytes] = []
        for part, keys in (("inputs", ("manifest",)), ("outputs", ("manifest", "before", "changes")),
                           ("stdout", ("digest",)), ("stderr", ("digest",))):
            section = self.body.get(part)
            if isinstance(section, dict):
                for key in keys:
                    value = section.get(key)
                    if isinstance(value, bytes):
                        found.append(value)
        return found

    def to_cbor(self) -> bytes:
        """Deterministic CBOR of the record."""
        return dcbor.encode(self.body)

    @classmethod
    def from_cbor(cls, data: bytes) -> StepRecord:
        """Parse and check a record payload.

        Raises:
            CborError: not deterministic CBOR, or a field is missing, unknown or of the wrong type.
        """
        value = dcbor.decode(data)
        if not isinstance(value, dict):
            raise CborError("record payload is not a map")
        return cls.from_value(value)

    @classmethod
    def from_value(cls, body: dict[str, dcbor.Value]) -> StepRecord:
        """Check a decoded record map (see :meth:`from_cbor`)."""
        missing = _REQUIRED - body.keys()
        if missing:
            raise CborError(f"record lacks field(s) {', '.join(sorted(missing))}")
        unknown = body.keys() - _REQUIRED - _OPTIONAL
        if unknown:
            raise CborError(f"record has unknown field(s) {', '.join(sorted(unknown))}")
        if body["v"] != RECORD_VERSION or isinstance(body["v"], bool):
            raise CborError(f"record version {body['v']!r} is not {RECORD_VERSION}")
        _field(body, "chain", bytes, size=16)
        _field(body, "seq", int)
        _field(body, "prev", bytes, size=32, nullable=True)
        _field(body, "id", bytes, size=16)
        _field(body, "parent", bytes, size=16, nullable=True)
        for name in ("step", "status"):
            _field(body, name, str)
        for name in ("started", "finished", "exit"):
            _field(body, name, int)
        for name in ("argv",):
            _field(body, name, list)
        for name in ("env", "inputs", "outputs", "stdout", "stderr", "host"):
            _field(body, name, dict)
        if body["status"] not in STATUSES:
            raise CborError(f"record status {body['status']!r} is not one of {', '.join(STATUSES)}")
        if _as(int, body["seq"]) < 0:
            raise CborError("record seq is negative")
        for part in ("stdout", "stderr"):
            section = _as(dict, body[part])
            _field(section, "digest", bytes, size=32, where=part)
            _field(section, "size", int, where=part)
        inputs = _as(dict, body["inputs"])
        _field(inputs, "manifest", bytes, size=32, where="inputs")
        outputs = _as(dict, body["outputs"])
        _field(outputs, "manifest", bytes, size=32, where="outputs")
        _field(outputs, "before", bytes, size=32, where="outputs")
        _field(outputs, "changes", bytes, size=32, where="outputs")
        if not isinstance(body["cwd"], str | bytes):
            raise CborError("record field 'cwd' should be text or bytes")
        for name, kind in (("sources", list), ("source_date_epoch", int), ("error", str), ("signals", list),
                           ("vcs", dict)):
            if name in body:
                _field(body, name, kind)
        return cls(body=body)


def _as(kind: type[_T], value: dcbor.Value) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CborError(f"expected {kind.__name__}, found {type(value).__name__}")
    return value


def _field(
    body: dict[str, dcbor.Value], name: str, kind: type[Any], *, size: int | None = None,
    nullable: bool = False, where: str = "record",
) -> None:
    if name not in body:
        raise CborError(f"{where} lacks field {name!r}")
    value = body[name]
    if value is None and nullable:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CborError(f"{where} field {name!r} should be {kind.__name__}, is {type(value).__name__}")
    if size is not None and len(value) != size:
        raise CborError(f"{where} field {name!r} should be {size} bytes, is {len(value)}")
