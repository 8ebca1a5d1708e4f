"""The decorator of this package's value types: a frozen, slotted dataclass.

It is ``dataclasses.dataclass(frozen=True, slots=True)`` except that the ``__repr__`` is one shared
function rather than one generated per class: generating it is half of what a dataclass costs at
import (about half a millisecond each), and ``asl-capture`` imports some thirty of them before it runs
a one-line command. The shared ``__repr__`` prints what the generated one would (``Name(a=1, b='x')``,
fields declared ``repr=False`` left out); a class that defines its own keeps it.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


def _repr(self: object) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                      for f in dataclasses.fields(self) if f.repr)  # type: ignore[arg-type]
    return f"{type(self).__qualname__}({shown})"


@dataclass_transform(frozen_default=True)
def frozen(cls: type[_T]) -> type[_T]:
    """``@dataclass(frozen=True, slots=True)``, with the shared ``__repr__``."""
    own_repr = "__repr__" in cls.__dict__
    made = dataclasses.dataclass(frozen=True, slots=True, repr=False)(cls)
    if not own_repr:
        made.__repr__ = _repr  # type: ignore[method-assign]
    return made
