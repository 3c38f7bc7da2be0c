"""``@frozen`` against ``@dataclass(frozen=True)``: the same class body through each, and every
behaviour compared (guardian/frozen.py)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
from typing import Any, Callable, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardian.frozen import frozen

# Each shape is a function that defines the class body under the decorator it is given, so both
# classes come from one text.
Shape = Callable[[Callable[[type], type]], type]


def no_fields(deco: Callable[[type], type]) -> type:
    @deco
    class Empty:
        pass

    return Empty


def one_field(deco: Callable[[type], type]) -> type:
    @deco
    class One:
        a: Any

    return One


def many_fields(deco: Callable[[type], type]) -> type:
    @deco
    class Many:
        a: Any
        b: Any = 0
        c: Optional[Any] = None
        d: tuple = dataclasses.field(default_factory=tuple)

    return Many


def field_flags(deco: Callable[[type], type]) -> type:
    @deco
    class Flags:
        a: Any
        hidden: Any = dataclasses.field(default=0, repr=False)
        ignored: Any = dataclasses.field(default=0, compare=False)
        unhashed: Any = dataclasses.field(default=0, hash=False)
        hashed_only: Any = dataclasses.field(default=0, compare=False, hash=True)
        not_init: Any = dataclasses.field(default=7, init=False)

    return Flags


def own_methods(deco: Callable[[type], type]) -> type:
    @deco
    class Own:
        a: Any
        b: Any = 0

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Own) and self.a == other.a

        def __hash__(self) -> int:
            return 42

        def __repr__(self) -> str:
            return "own"

    return Own


def own_eq_only(deco: Callable[[type], type]) -> type:
    # an __eq__ in the body and no __hash__: Python sets __hash__ = None there, and dataclasses
    # still adds its own hash (frozen, eq)
    @deco
    class OwnEq:  # noqa: PLW1641 (the case under test)
        a: Any

        def __eq__(self, other: object) -> bool:
            return isinstance(other, OwnEq) and self.a == other.a

    return OwnEq


def inherited(deco: Callable[[type], type]) -> type:
    @deco
    class Base:
        a: Any

    @deco
    class Child(Base):
        b: Any = 1

    return Child


def post_init(deco: Callable[[type], type]) -> type:
    @deco
    class Post:
        a: Any
        twice: Any = dataclasses.field(init=False, default=None)

        def __post_init__(self) -> None:
            object.__setattr__(self, "twice", (self.a, self.a))

    return Post


SHAPES: list[Shape] = [
    no_fields,
    one_field,
    many_fields,
    field_flags,
    own_methods,
    own_eq_only,
    inherited,
    post_init,
]
VALUES = [0, 1, -1, 2**70, 1.5, float("nan"), "x", "ü", b"\xff", None, (1, 2), frozenset({3}), True]


def pair(shape: Shape) -> tuple[type, type]:
    return shape(frozen), shape(dataclasses.dataclass(frozen=True))


def construct(cls: type, values: list[Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    return cls(**dict(zip(names, values)))


def outcome(action: Callable[[], Any]) -> Any:
    try:
        return ("value", action())
    except Exception as exc:  # the same exception type is what must match
        return ("raises", type(exc))


def check_same(shape: Shape, left: list[Any], right: list[Any]) -> None:
    ours, theirs = pair(shape)
    a, b = construct(ours, left), construct(ours, right)
    x, y = construct(theirs, left), construct(theirs, right)
    assert outcome(lambda: a == b) == outcome(lambda: x == y)
    assert outcome(lambda: a != b) == outcome(lambda: x != y)
    assert outcome(lambda: a == a) == outcome(lambda: x == x)  # noqa: PLR0124 (NaN fields)
    assert outcome(lambda: hash(a)) == outcome(lambda: hash(x))
    assert repr(a) == repr(x).replace(theirs.__qualname__, ours.__qualname__)
    assert dataclasses.asdict(a) == dataclasses.asdict(x) or any(v != v for v in left)  # noqa: PLR0124 (NaN)
    assert [f.name for f in dataclasses.fields(a)] == [f.name for f in dataclasses.fields(x)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_each_shape_behaves_as_a_frozen_dataclass(shape: Shape) -> None:
    for left in VALUES:
        for right in VALUES:
            check_same(shape, [left, right, left, right], [left, right, right, left])
            check_same(shape, [left] * 4, [right] * 4)


@given(
    st.lists(st.one_of(st.integers(), st.text(), st.none(), st.booleans()), min_size=4, max_size=4), st.data()
)
def test_random_field_values(left: list[Any], data: st.DataObject) -> None:
    right = data.draw(st.permutations(left))
    for shape in SHAPES:
        check_same(shape, left, right)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_fields_cannot_be_set_or_deleted(shape: Shape) -> None:
    cls, _ = pair(shape)
    obj = construct(cls, [1, 2, 3, 4])
    for name in [f.name for f in dataclasses.fields(cls)] + ["other"]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, 5)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(obj, name)


def test_another_class_with_the_same_fields_is_not_equal() -> None:
    first, second = one_field(frozen), one_field(frozen)
    assert first(1) != second(1)
    assert first(1).__eq__(second(1)) is NotImplemented
    assert first(1).__eq__(1) is NotImplemented
    assert first(1) == first(1)
    theirs = one_field(dataclasses.dataclass(frozen=True))
    assert first(1) != theirs(1)


def test_a_subclass_compares_and_prints_its_own_fields() -> None:
    child = inherited(frozen)
    assert child(1, 2) != child(1, 3)
    assert repr(child(1, 2)) == f"{child.__qualname__}(a=1, b=2)"
    assert hash(child(1, 2)) == hash((1, 2))


def test_replace_copy_and_pickle() -> None:
    cls = many_fields(frozen)
    obj = cls(1, 2)
    assert dataclasses.replace(obj, b=3) == cls(1, 3)
    assert copy.deepcopy(obj) == obj
    assert dataclasses.is_dataclass(obj) and dataclasses.is_dataclass(cls)
    mod = sys.modules[__name__]
    mod.PickledMany = cls  # type: ignore[attr-defined]
    cls.__qualname__ = "PickledMany"
    try:
        assert pickle.loads(pickle.dumps(obj)) == obj
    finally:
        delattr(mod, "PickledMany")


def test_a_record_that_holds_itself_prints_dots() -> None:
    cls = one_field(frozen)
    box: list[Any] = []
    obj = cls(box)
    box.append(obj)
    assert repr(obj) == f"{cls.__qualname__}(a=[...])"


def test_guardians_records_are_frozen_dataclasses_with_shared_methods() -> None:
    """Every record class a plugin receives is still a frozen dataclass."""
    from guardian import records

    classes = [
        value
        for value in vars(records).values()
        if isinstance(value, type)
        and value.__module__ == records.__name__
        and dataclasses.is_dataclass(value)
    ]
    assert len(classes) >= 10
    for cls in classes:
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert cls.__eq__.__module__ == "guardian.frozen", cls
