"""@frozen (asl_capture.frozen) behaves as dataclass(frozen=True, slots=True) does, shared methods and all."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

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


@frozen
class WithFactory:
    a: int
    b: list[int] = field(default_factory=list)
    c: str = "c"
    d: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class TheirFactory:
    a: int
    b: list[int] = field(default_factory=list)
    c: str = "c"
    d: dict[str, int] = field(default_factory=dict, compare=False)


CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    ((1,), {}), ((1, [2]), {}), ((1,), {"c": "z"}), ((), {"a": 1, "d": {"x": 1}}), ((1, [2], "q", {}), {}),
    ((), {}), ((1, 2, 3, 4, 5), {}), ((1,), {"a": 2}), ((1,), {"e": 0}), ((), {"b": []}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_init_takes_and_refuses_what_a_dataclass_init_does(args: tuple[object, ...],
                                                           kwargs: dict[str, object]) -> None:
    def outcome(cls: type) -> tuple[str, object]:
        try:
            value = cls(*args, **kwargs)
        except TypeError as exc:
            return "TypeError", str(exc).replace(cls.__qualname__, "CLS")
        return "value", dataclasses.astuple(value)

    assert outcome(WithFactory) == outcome(TheirFactory)


def test_each_default_factory_is_called_per_instance_and_only_when_needed() -> None:
    first, second = WithFactory(1), WithFactory(1)
    assert first.b == [] and first.b is not second.b and first.d is not second.d
    given = [7]
    assert WithFactory(1, given).b is given


def test_the_init_signature_is_the_dataclass_one_and_pickling_keeps_every_field() -> None:
    import inspect

    assert str(inspect.signature(WithFactory)) == str(inspect.signature(TheirFactory))
    assert str(inspect.signature(WithFactory.__init__)) == str(inspect.signature(TheirFactory.__init__))
    assert WithFactory.__init__.__qualname__ == "WithFactory.__init__"
    value = WithFactory(3, [1], "x", {"k": 2})
    copy = pickle.loads(pickle.dumps(value))
    assert (copy.a, copy.b, copy.c, copy.d) == (3, [1], "x", {"k": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        del copy.a


def test_a_wide_class_and_an_empty_one() -> None:
    names = [f"f{k}" for k in range(40)]
    wide: type[Any] = frozen(type("Wide", (), {"__annotations__": dict.fromkeys(names, "int")}))
    value = wide(*range(40))
    assert [getattr(value, n) for n in names] == list(range(40))
    assert wide(**{n: 1 for n in names}) == wide(*[1] * 40)
    empty: type[Any] = frozen(type("Empty", (), {}))
    assert empty() == empty() and repr(empty()) == "Empty()"
    with pytest.raises(TypeError):
        empty(1)


def test_what_it_does_not_support_is_refused_when_the_class_is_defined() -> None:
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    class NoInit:
        a: int = field(default=0, init=False)

    class KeywordOnly:
        a: int = field(default=0, kw_only=True)

    for cls in (PostInit, NoInit, KeywordOnly):
        with pytest.raises(TypeError, match="@frozen class"):
            frozen(cls)
