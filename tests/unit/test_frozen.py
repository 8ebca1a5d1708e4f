"""@frozen (asl_capture.frozen) behaves as dataclass(frozen=True, slots=True) does, shared methods and all."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from asl_capture.frozen import frozen


@frozen
class Ours:
    a: int
    b: str = "x"
    c: list[int] | None = field(default=None, compare=False, repr=False)
    d: bytes = field(default=b"", hash=False)


@dataclass(frozen=True, slots=True)
class Theirs:
    a: int
    b: str = "x"
    c: list[int] | None = field(default=None, compare=False, repr=False)
    d: bytes = field(default=b"", hash=False)


@frozen
class Child(Ours):
    e: int = 0


@frozen
class OwnRepr:
    a: int

    def __repr__(self) -> str:
        return "mine"


VALUES = [(1, "x", None, b""), (1, "x", [1], b""), (1, "y", None, b""), (2, "x", None, b"q"), (1, "x", [2], b"q")]


@pytest.mark.parametrize("left", VALUES)
@pytest.mark.parametrize("right", VALUES)
def test_equality_and_hash_as_a_dataclass_has_them(left: tuple[int, str, list[int] | None, bytes],
                                                   right: tuple[int, str, list[int] | None, bytes]) -> None:
    assert (Ours(*left) == Ours(*right)) == (Theirs(*left) == Theirs(*right))
    assert (Ours(*left) != Ours(*right)) == (Theirs(*left) != Theirs(*right))
    assert (hash(Ours(*left)) == hash(Ours(*right))) == (hash(Theirs(*left)) == hash(Theirs(*right)))
    assert repr(Ours(*left)) == repr(Theirs(*left)).replace("Theirs", "Ours")


def test_frozen_slotted_and_the_rest() -> None:
    value = Ours(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.a = 2  # type: ignore[misc]
    assert not hasattr(value, "__dict__")
    assert dataclasses.replace(value, b="z") == Ours(1, "z")
    assert pickle.loads(pickle.dumps(value)) == value
    other: object = Theirs(1)
    assert Ours(1) != other and Ours(1) != (1, "x")  # type: ignore[comparison-overlap]
    assert Child(1, e=2) != Ours(1) and Child(1, e=2) == Child(1, e=2) != Child(1, e=3)
    assert repr(Child(1)) == "Child(a=1, b='x', d=b'', e=0)"
    assert repr(OwnRepr(1)) == "mine"
