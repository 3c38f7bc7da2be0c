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


def not_in_init(deco: Callable[[type], type]) -> type:
    @deco
    class NotInInit:
        a: Any
        made: list = dataclasses.field(init=False, default_factory=list)
        b: Any = 5

    return NotInInit


def named_self(deco: Callable[[type], type]) -> type:
    @deco
    class NamedSelf:
        self: Any
        other: Any = 1

    return NamedSelf


def init_var(deco: Callable[[type], type]) -> type:
    @deco
    class WithInitVar:
        a: Any
        scale: dataclasses.InitVar[int] = 2
        scaled: Any = dataclasses.field(init=False, default=None)

        def __post_init__(self, scale: int) -> None:
            object.__setattr__(self, "scaled", (self.a, scale))

    return WithInitVar


def keyword_only(deco: Callable[[type], type]) -> type:
    @deco
    class KeywordOnly:
        a: Any
        b: Any = dataclasses.field(default=0, kw_only=True)
        c: Any = 1

    return KeywordOnly


def undocumented(deco: Callable[[type], type]) -> type:
    @deco
    class Undocumented:
        a: Any
        b: tuple = dataclasses.field(default_factory=tuple)
        c: Optional[int] = None

    return Undocumented


SHAPES: list[Shape] = [
    no_fields,
    one_field,
    many_fields,
    field_flags,
    own_methods,
    own_eq_only,
    inherited,
    post_init,
    not_in_init,
    named_self,
    init_var,
    undocumented,
]
if sys.version_info >= (3, 10):
    SHAPES.append(keyword_only)
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


def equal(x: Any, y: Any) -> bool:
    """``x == y`` for two records of a frozen dataclass, as Python 3.9-3.12 compare them."""
    own_eq = x.__class__.__eq__.__code__.co_filename == __file__  # the class body's, not generated
    if sys.version_info < (3, 13) or x.__class__ is not y.__class__ or own_eq:
        return bool(x == y)
    # 3.13 compares field by field, where a NaN field (never equal to itself) makes a record
    # unequal to itself; @frozen keeps the tuple comparison of 3.9-3.12 (identity first)
    compared = [f.name for f in dataclasses.fields(x) if f.compare]
    return [getattr(x, name) for name in compared] == [getattr(y, name) for name in compared]


def check_same(shape: Shape, left: list[Any], right: list[Any]) -> None:
    ours, theirs = pair(shape)
    a, b = construct(ours, left), construct(ours, right)
    x, y = construct(theirs, left), construct(theirs, right)
    assert outcome(lambda: a == b) == outcome(lambda: equal(x, y))
    assert outcome(lambda: a != b) == outcome(lambda: not equal(x, y))
    assert outcome(lambda: a == a) == outcome(lambda: equal(x, x))  # noqa: PLR0124 (NaN fields)
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


def record_classes() -> list[type]:
    """The record classes of guardian.records, which plugins receive."""
    from guardian import records

    return [
        value
        for value in vars(records).values()
        if isinstance(value, type)
        and value.__module__ == records.__name__
        and dataclasses.is_dataclass(value)
    ]


def test_guardians_records_are_frozen_dataclasses_with_shared_methods() -> None:
    """Every record class a plugin receives is still a frozen dataclass."""
    classes = record_classes()
    assert len(classes) >= 10
    for cls in classes:
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert cls.__eq__.__module__ == "guardian.frozen", cls


def test_each_shape_has_the_generated_init() -> None:
    """Signature, defaults, annotations, class doc, __match_args__ and names of ``__init__``."""
    import inspect

    for shape in SHAPES:
        ours, theirs = pair(shape)
        assert str(inspect.signature(ours.__init__)) == str(inspect.signature(theirs.__init__)), shape
        assert ours.__init__.__annotations__ == theirs.__init__.__annotations__, shape
        assert ours.__doc__ == theirs.__doc__, shape
        assert getattr(ours, "__match_args__", None) == getattr(theirs, "__match_args__", None), shape
        # (3.9's dataclasses leave their generated function's own name on it)
        assert ours.__init__.__qualname__ in (f"{ours.__qualname__}.__init__", theirs.__init__.__qualname__)
        assert ours.__init__.__module__ == theirs.__init__.__module__ == __name__
        assert ours.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert ours.__dataclass_params__.init  # type: ignore[attr-defined]


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1,), {}),
    ((1, 2), {}),
    ((1, 2, 3, 4, 5, 6, 7, 8), {}),
    ((), {"a": 1}),
    ((1,), {"a": 1}),
    ((), {"a": 1, "b": 2, "c": 3}),
    ((), {"a": 1, "nope": 2}),
    ((), {"self": 1}),
    ((1,), {"scale": 3}),
    ((), {"a": 1, "made": []}),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_each_call_builds_or_fails_as_the_generated_init(shape: Shape) -> None:
    ours, theirs = pair(shape)
    for args, kwargs in CALLS:
        mine = outcome(lambda: ours(*args, **kwargs))  # noqa: B023 (called at once)
        reference = outcome(lambda: theirs(*args, **kwargs))  # noqa: B023 (called at once)
        assert mine[0] == reference[0], (shape, args, kwargs)
        if mine[0] == "raises":
            assert mine[1] is reference[1], (shape, args, kwargs)
        else:
            assert vars(mine[1]) == vars(reference[1]), (shape, args, kwargs)


def test_a_factory_makes_a_new_value_for_each_instance() -> None:
    many, not_init = many_fields(frozen), not_in_init(frozen)
    assert many(1).d == () and many(1, d=(1,)).d == (1,)
    first, second = not_init(1), not_init(1)
    assert first.made == [] and first.made is not second.made
    assert first.b == 5


def test_a_field_without_a_default_after_one_with_is_refused_at_definition() -> None:
    for deco in (frozen, dataclasses.dataclass(frozen=True)):
        with pytest.raises(TypeError, match="non-default argument 'b'"):

            @deco
            class Wrong:
                a: Any = 1
                b: Any


def test_an_own_init_is_kept_and_an_own_setattr_is_refused() -> None:
    @frozen
    class OwnInit:
        a: Any

        def __init__(self, value: Any) -> None:
            object.__setattr__(self, "a", value * 2)

    assert OwnInit(2).a == 4
    for deco in (frozen, dataclasses.dataclass(frozen=True)):
        with pytest.raises(TypeError, match="Cannot overwrite attribute __setattr__"):

            @deco
            class OwnSetattr:
                a: Any

                def __setattr__(self, name: str, value: Any) -> None:
                    pass


def test_subclasses_follow_dataclasses_rules() -> None:
    """A plain subclass may add attributes but not set fields; a frozen dataclass may derive from
    a @frozen class and a @frozen class from a frozen dataclass; a non-frozen one may not."""
    for deco in (frozen, dataclasses.dataclass(frozen=True)):
        base = one_field(deco)

        class Plain(base):  # type: ignore[valid-type,misc]
            pass

        obj = Plain(1)
        obj.extra = 2
        del obj.extra
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.a = 3
        with pytest.raises(dataclasses.FrozenInstanceError):
            del obj.a
        for child_deco in (frozen, dataclasses.dataclass(frozen=True)):
            child = child_deco(type("Child", (base,), {"__annotations__": {"b": "Any"}, "b": 0}))
            assert child(1, 2).b == 2 and child(1) != child(1, 2)
        with pytest.raises(TypeError, match="non-frozen"):
            dataclasses.dataclass(type("Thawed", (base,), {"__annotations__": {"b": "Any"}}))


def test_records_of_one_shape_share_one_compiled_init() -> None:
    """guardian's records compile an __init__ per shape, not per class."""
    from guardian import frozen as module

    classes = record_classes()
    shapes = len(module._shapes)
    first, second = one_field(frozen), one_field(frozen)
    assert len(module._shapes) <= shapes + 1
    assert first.__init__.__code__.co_code == second.__init__.__code__.co_code
    assert first.__init__.__code__ is not second.__init__.__code__  # each with its own names
    assert len({cls.__init__.__code__.co_code for cls in classes}) < len(classes)


def test_a_field_outside_init_without_default_is_not_set() -> None:
    for deco in (frozen, dataclasses.dataclass(frozen=True)):

        @deco
        class Unset:
            a: Any
            later: Any = dataclasses.field(init=False)

        obj = Unset(1)
        assert not hasattr(obj, "later") and obj.a == 1
