"""Strict field checks for the ``from_value`` parsers of this package.

Each function takes a decoded CBOR value and ``where``, the field's path in the document
(``argv[0]``, ``inputs.entries``), and returns the value with its Python type or raises
:class:`~asl_capture.errors.FormatError` naming that path, e.g. ``argv[0]: expected text or bytes,
found uint``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, TypeVar

from asl_capture.dcbor import Tag, Value
from asl_capture.errors import FormatError

DIGEST_SIZE = 32
_U64 = 1 << 64


def at(where: str, name: str) -> str:
    """The path of field ``name`` inside the map at ``where``."""
    return f"{where}.{name}" if where else name


def index(where: str, number: int) -> str:
    """The path of item ``number`` of the array at ``where``."""
    return f"{where}[{number}]"


def kind(value: Value) -> str:
    """The CBOR type of a decoded value, as error messages name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "uint" if value >= 0 else "negative int"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, Tag):
        return f"tag {value.tag}"
    return type(value).__name__


def _wrong(value: Value, where: str, expected: str) -> FormatError:
    return FormatError(where, f"expected {expected}, found {kind(value)}")


def fields(value: Value, where: str, required: Collection[str], optional: Collection[str] = ()) -> dict[str, Value]:
    """``value`` as a map holding every ``required`` field, and no field outside ``required | optional``."""
    body = mapping(value, where)
    for name in required:
        if name not in body:
            raise FormatError(at(where, name), "missing")
    for name in body:
        if name not in required and name not in optional:
            raise FormatError(at(where, name), "unknown field")
    return body


def mapping(value: Value, where: str) -> dict[str, Value]:
    """A map (its keys are text: the decoder admits no other)."""
    if not isinstance(value, dict):
        raise _wrong(value, where, "a map")
    return value


def version(value: Value, where: str, expected: int) -> int:
    """The ``v`` field: exactly ``expected``."""
    if not isinstance(value, int) or isinstance(value, bool) or value != expected:
        shown = value if isinstance(value, int) and not isinstance(value, bool) else kind(value)
        raise FormatError(where, f"version {shown} is not {expected}")
    return value


def integer(value: Value, where: str) -> int:
    """A CBOR integer (``int``), negative or not."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(value, where, "int")
    return value


def uint(value: Value, where: str) -> int:
    """A CBOR unsigned integer (``uint``)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
        raise _wrong(value, where, "uint")
    return value


def null(value: Value, where: str) -> None:
    """``null``."""
    if value is not None:
        raise _wrong(value, where, "null")


def boolean(value: Value, where: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise _wrong(value, where, "bool")
    return value


def text(value: Value, where: str) -> str:
    """A text string."""
    if not isinstance(value, str):
        raise _wrong(value, where, "text")
    return value


def bstr(value: Value, where: str, size: int | None = None) -> bytes:
    """A byte string, of exactly ``size`` bytes when given."""
    if not isinstance(value, bytes):
        raise _wrong(value, where, "bytes" if size is None else f"{size} bytes")
    if size is not None and len(value) != size:
        raise FormatError(where, f"expected {size} bytes, found {len(value)}")
    return value


def digest(value: Value, where: str) -> bytes:
    """A SHA-256 digest: 32 bytes."""
    return bstr(value, where, DIGEST_SIZE)


def text_or_bytes(value: Value, where: str) -> str | bytes:
    """``tstr / bstr``, where a byte string is used only for bytes that are not valid UTF-8.

    The writer records valid UTF-8 as text, so a byte string that decodes would be a second
    encoding of the same value: it is refused.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        raise _wrong(value, where, "text or bytes")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return value
    raise FormatError(where, "bytes that are valid UTF-8 must be recorded as text")


def one_of(value: Value, where: str, choices: Collection[str]) -> str:
    """A text string among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if isinstance(value, str) else kind(value)
        raise FormatError(where, f"{shown} is not one of {', '.join(choices)}")
    return value


def array(value: Value, where: str) -> list[Value]:
    """An array."""
    if not isinstance(value, list):
        raise _wrong(value, where, "an array")
    return value


def as_text_or_bytes(raw: bytes) -> str | bytes:
    """Raw bytes as recorded: text when valid UTF-8, else bytes (the inverse of the check above)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def raw_path(value: Value, where: str) -> bytes:
    """A recorded path (``tstr / bstr``) as raw bytes."""
    checked = text_or_bytes(value, where)
    return checked.encode("utf-8") if isinstance(checked, str) else checked


Check = Callable[[Value, str], Any]

#: For the checks that return their value unchanged: a Python expression that is true only for a
#: value ``{x}`` the check accepts (exact types, as the decoder produces them). :class:`Struct`
#: compiles these into its parser, so a valid document costs no call per field; any other value
#: goes to the check itself, which accepts it or raises naming the field.
_PASSES: dict[Check, str] = {
    uint: "(type({x}) is int and 0 <= {x} < 18446744073709551616)",
    integer: "type({x}) is int",
    text: "type({x}) is str",
    boolean: "type({x}) is bool",
    digest: "(type({x}) is bytes and len({x}) == 32)",
    text_or_bytes: "type({x}) is str",  # enough to pass; bytes go to the check (valid UTF-8 is refused)
}


def nullable(check: Check) -> Check:
    """``T / null``: None, or what ``check`` accepts."""
    def checked(value: Value, where: str) -> Any:
        return None if value is None else check(value, where)
    if check in _PASSES:
        _PASSES[checked] = f"({{x}} is None or {_PASSES[check]})"
    return checked


def sized(size: int) -> Check:
    """A byte string of exactly ``size`` bytes."""
    def checked(value: Value, where: str) -> bytes:
        return bstr(value, where, size)
    _PASSES[checked] = f"(type({{x}}) is bytes and len({{x}}) == {size})"
    return checked


def choice(*choices: str) -> Check:
    """A text string among ``choices``."""
    def checked(value: Value, where: str) -> str:
        return one_of(value, where, choices)
    _PASSES[checked] = f"(type({{x}}) is str and {{x}} in {choices!r})"
    return checked


def _passes(check: Check) -> Callable[[Value], bool] | None:
    """``check``'s :data:`_PASSES` expression as a predicate, if it has one."""
    test = _PASSES.get(check)
    return None if test is None else eval(f"lambda x: {test.format(x='x')}")  # noqa: S307 - our own text


def array_of(check: Check) -> Check:
    """``[* T]`` as a tuple, each item checked (and named ``where[i]``)."""
    passes = _passes(check)

    def checked(value: Value, where: str) -> tuple[Any, ...]:
        items = array(value, where)
        if passes is not None and all(map(passes, items)):
            return tuple(items)
        return tuple(check(item, index(where, i)) for i, item in enumerate(items))
    return checked


def map_of(check: Check) -> Check:
    """``{* tstr => T}`` as a dict, each value checked (and named ``where.key``)."""
    passes = _passes(check)

    def checked(value: Value, where: str) -> dict[str, Any]:
        body = mapping(value, where)
        if passes is not None and all(map(passes, body.values())):
            return dict(body)
        return {name: check(item, at(where, name)) for name, item in body.items()}
    return checked


def _plain(value: object) -> Value:
    """A field's value in the CBOR data model: nested structs as maps, tuples as arrays."""
    to_value = getattr(value, "to_value", None)  # a Struct, or an array-shaped type (a manifest entry)
    if to_value is not None:
        return to_value()  # type: ignore[no-any-return]
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value  # type: ignore[return-value]


_S = TypeVar("_S", bound="Struct")


class Struct:
    """Base of a frozen dataclass that is a CBOR map with text keys (every map of docs/FORMAT.md).

    ``FIELDS`` maps each key, in order, to the check of its value (the dataclass field of the same
    name holds the checked value); keys in ``OPTIONAL`` are absent when the field is None.
    ``VERSION``, when set, is the value of a leading ``"v"`` key. The map is closed: a key not in
    ``FIELDS`` is refused.
    """

    __slots__ = ()
    FIELDS: ClassVar[Mapping[str, Check]]
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    VERSION: ClassVar[int | None] = None

    def to_value(self) -> dict[str, Value]:
        """The value to encode (``dcbor.encode`` gives its one encoding)."""
        out: dict[str, Value] = {} if self.VERSION is None else {"v": self.VERSION}
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None or name not in self.OPTIONAL:
                out[name] = _plain(value)
        return out

    @classmethod
    def from_value(cls: type[_S], value: Value, where: str = "") -> _S:
        """Check a decoded map, every field; ``where`` is its path (names the offending field).

        Raises:
            FormatError: a field is missing, unknown or of the wrong shape.
        """
        parse = _PARSERS.get(cls)
        if parse is None:
            uses = _USES[cls] = _USES.get(cls, 0) + 1
            if uses <= INTERPRET_FIRST:
                return interpret(cls, value, where)
            parse = _PARSERS[cls] = compile_parser(cls)
        return parse(cls, value, where)  # type: ignore[no-any-return]


#: How many documents of a type are parsed by :func:`interpret` before its parser is compiled:
#: compiling costs about what parsing a dozen records does, so one-record tools (``asl-capture``
#: reads its chain's head) never pay for it and a verifier of thousands of records does once.
INTERPRET_FIRST = 12
_USES: dict[type, int] = {}
#: The compiled parser of each :class:`Struct` type, made once it is used often enough.
_PARSERS: dict[type, Callable[..., Any]] = {}


def _required(cls: type[Struct]) -> tuple[str, ...]:
    return (("v",) if cls.VERSION is not None else ()) + tuple(n for n in cls.FIELDS if n not in cls.OPTIONAL)


def interpret(cls: type[_S], value: Value, where: str) -> _S:
    """What :meth:`Struct.from_value` means, read off ``FIELDS`` directly (the compiled parser of
    :func:`compile_parser` is the same checks as straight-line code; a test holds them to the same results)."""
    body = fields(value, where, _required(cls), cls.OPTIONAL)
    p = where + "." if where else ""
    if cls.VERSION is not None and (type(body["v"]) is not int or body["v"] != cls.VERSION):
        version(body["v"], p + "v", cls.VERSION)
    return cls(**{name: check(body[name], p + name) for name, check in cls.FIELDS.items() if name in body})


def compile_parser(cls: type[Struct]) -> Callable[..., Any]:
    """The parser of ``cls``: what :meth:`Struct.from_value` means, as straight-line code (see
    :data:`_PASSES`). An absent optional field takes its dataclass field's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is not dataclasses.MISSING}
    required = _required(cls)
    env: dict[str, Any] = {"mapping": mapping, "fields": fields, "version": version, "REQUIRED": required,
                           "REQUIRED_SET": frozenset(required), "ALLOWED": frozenset(required) | cls.OPTIONAL,
                           "OPTIONAL": cls.OPTIONAL, "VERSION": cls.VERSION}
    lines = ["def parse(cls, value, where):",
             "    body = mapping(value, where)",
             "    keys = body.keys()",
             "    if not (keys >= REQUIRED_SET and keys <= ALLOWED):",
             "        fields(body, where, REQUIRED, OPTIONAL)  # raises, naming the field",
             "    p = where + '.' if where else ''"]
    if cls.VERSION is not None:
        lines.append("    if type(body['v']) is not int or body['v'] != VERSION:")
        lines.append("        version(body['v'], p + 'v', VERSION)")
    args = []
    for i, (name, check) in enumerate(cls.FIELDS.items()):
        env[f"check{i}"] = check
        x = f"v{i}"
        test = _PASSES.get(check)
        pad = "    "
        if name in cls.OPTIONAL:
            env[f"default{i}"] = defaults[name]
            lines.append(f"    {x} = default{i}")
            lines.append(f"    if {name!r} in keys:")
            pad = "        "
        lines.append(f"{pad}{x} = body[{name!r}]")
        if test is not None:
            lines.append(f"{pad}if not {test.format(x=x)}:")
            lines.append(f"{pad}    {x} = check{i}({x}, p + {name!r})")
        else:
            lines.append(f"{pad}{x} = check{i}({x}, p + {name!r})")
        args.append(f"{name}={x}")
    lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), env)  # noqa: S102 - code made here from the class's own FIELDS, no input
    return env["parse"]  # type: ignore[no-any-return]
