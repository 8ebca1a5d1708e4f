"""The decorator of this package's value types: a frozen, slotted dataclass.

It behaves as ``dataclasses.dataclass(frozen=True, slots=True)`` does (the fields, defaults,
``field(...)`` options, ``dataclasses.fields``/``replace``/``asdict``, pickling, immutability),
but costs far less to define, which matters because ``asl-capture`` defines some thirty of these
classes before it runs a one-line command. Measured on a six-field class, beyond the class statement
itself: 0.07 ms, against 0.70 ms for the dataclass and 0.46 ms for this decorator's previous form
(which shared only the first three methods below); the first class of each argument-list shape also
compiles its template, 0.1-0.3 ms. ``asl-capture -- true`` became as fast as before issue 8's typed
records and signing agent (``bench/README.md``). What differs underneath:

- ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__`` are shared
  functions rather than code generated per class. They behave as the generated ones do: the repr
  ``Name(a=1, b='x')`` leaves out fields declared ``repr=False``; equality holds between instances
  of the same class whose compared fields (``compare=True``, the default) are equal, in field
  order; the hash is that of those fields (or of the fields with ``hash=True``); assigning or
  deleting an attribute raises :class:`dataclasses.FrozenInstanceError`. A class that defines one
  of the first three itself keeps its own.
- ``__init__`` is not compiled from source for each class: one template per shape of argument list
  (how many fields, which have a default factory) is compiled once and renamed for each class
  (:meth:`types.CodeType.replace`), so that its parameters are the field names, as generated ones
  are: the same keywords, defaults and ``TypeError`` messages.
- ``dataclasses`` sees a non-frozen dataclass (``__dataclass_params__.frozen`` is False): a class
  made here is meant to be subclassed only by another one made here.

``__post_init__``, ``init=False`` and keyword-only fields are not supported, and refused when the
class is defined (an ``InitVar`` is not a field: ``__init__`` does not take it).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, TypeVar, dataclass_transform

_T = TypeVar("_T")

#: Class attributes naming the fields compared by ``__eq__``, those hashed by ``__hash__``, and all.
_COMPARED = "__frozen_compared__"
_HASHED = "__frozen_hashed__"
_NAMES = "__frozen_names__"

class _Factory:
    """A parameter's default when its field has a default factory (as in dataclasses)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()
#: Compiled ``__init__`` templates by shape: per field, whether it has a default factory.
_TEMPLATES: dict[tuple[bool, ...], types.CodeType] = {}


def _repr(self: object) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                      for f in dataclasses.fields(self) if f.repr)  # type: ignore[arg-type]
    return f"{type(self).__qualname__}({shown})"


def _eq(self: object, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names: tuple[str, ...] = getattr(self, _COMPARED)
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: object) -> int:
    return hash(tuple(getattr(self, n) for n in getattr(self, _HASHED)))


def _setattr(self: object, name: str, _value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: object) -> list[object]:
    return [getattr(self, n) for n in getattr(self, _NAMES)]


def _setstate(self: object, state: list[object]) -> None:
    for name, value in zip(getattr(self, _NAMES), state, strict=True):
        object.__setattr__(self, name, value)


def _template(shape: tuple[bool, ...]) -> types.CodeType:
    """``__init__(self, _a0, _a1, ...)`` setting each field, ``_aK`` from ``_fK()`` if it has a factory."""
    code = _TEMPLATES.get(shape)
    if code is None:
        lines = [f"    _set(self, '_a{k}', _f{k}() if _a{k} is _FACTORY else _a{k})" if factory
                 else f"    _set(self, '_a{k}', _a{k})" for k, factory in enumerate(shape)]
        source = "def __init__({}):\n{}\n".format(", ".join(["self", *(f"_a{k}" for k in range(len(shape)))]),
                                                  "\n".join(lines) or "    pass")
        namespace: dict[str, Any] = {}
        exec(compile(source, "<asl_capture.frozen>", "exec"), namespace)  # noqa: S102 - our own fixed text
        code = _TEMPLATES[shape] = namespace["__init__"].__code__
    return code


def _make_init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> types.FunctionType:
    """The class's ``__init__``: the template for its shape, its placeholders renamed to the fields."""
    shape = tuple(f.default_factory is not dataclasses.MISSING for f in fields)
    template = _template(shape)
    rename = {f"_a{k}": f.name for k, f in enumerate(fields)}
    code = template.replace(
        co_varnames=tuple(rename.get(name, name) for name in template.co_varnames),
        co_consts=tuple(rename.get(c, c) if isinstance(c, str) else c for c in template.co_consts),
        co_qualname=f"{cls.__qualname__}.__init__")
    scope: dict[str, Any] = {"_set": object.__setattr__, "_FACTORY": _FACTORY}
    scope.update((f"_f{k}", f.default_factory) for k, f in enumerate(fields) if shape[k])
    defaults = tuple(_FACTORY if factory else f.default
                     for f, factory in zip(fields, shape, strict=True)
                     if factory or f.default is not dataclasses.MISSING)
    function = types.FunctionType(code, scope, "__init__", defaults or None)  # its __qualname__ is co_qualname
    function.__module__ = cls.__module__
    function.__annotations__ = {**{f.name: f.type for f in fields}, "return": None}
    return function


def _refuse_unsupported(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> None:
    if "__post_init__" in cls.__dict__:
        raise TypeError(f"@frozen class {cls.__qualname__}: __post_init__ is not supported")
    for f in fields:
        if not f.init or f.kw_only is True:
            raise TypeError(f"@frozen class {cls.__qualname__}: field {f.name!r} is init=False or keyword-only")


@dataclass_transform(frozen_default=True)
def frozen(cls: type[_T]) -> type[_T]:
    """A frozen, slotted dataclass of ``cls`` (see the module for what is shared and what is refused)."""
    own = {name for name in ("__repr__", "__eq__", "__hash__") if name in cls.__dict__}
    if cls.__dict__.get("__hash__", 0) is None and "__eq__" in cls.__dict__:
        own.discard("__hash__")  # Python's None for a class that defines __eq__: not a choice made
    made = dataclasses.dataclass(init=False, repr=False, eq=False, slots=True)(cls)
    fields = dataclasses.fields(made)  # type: ignore[arg-type]
    _refuse_unsupported(made, fields)
    setattr(made, _NAMES, tuple(f.name for f in fields))
    setattr(made, _COMPARED, tuple(f.name for f in fields if f.compare))
    setattr(made, _HASHED, tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
    shared: dict[str, Any] = {"__init__": _make_init(made, fields), "__setattr__": _setattr,
                              "__delattr__": _delattr, "__getstate__": _getstate, "__setstate__": _setstate,
                              "__repr__": _repr, "__eq__": _eq, "__hash__": _hash}
    for name, function in shared.items():
        if name not in own:
            setattr(made, name, function)
    return made
