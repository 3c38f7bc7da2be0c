"""``@frozen``: a frozen dataclass that costs less to define.

``@dataclass(frozen=True)`` on Python 3.11 writes six methods per class as source text and
compiles each with its own ``exec()`` (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``, ``__delattr__``): about 0.3 ms a class, and guardian defines some seventy of
them before a ``run`` can say READY=1. Three of the six do the same thing in every class: compare,
hash or print the fields in order. ``@frozen`` lets dataclasses write the other three and puts
one shared, already compiled function in place of each of these three, which reads the class's
fields through an ``operator.attrgetter`` built once per class.

The class it returns is a frozen dataclass (``dataclasses.fields``, ``replace``, ``asdict``,
``is_dataclass`` and ``FrozenInstanceError`` behave as for ``@dataclass(frozen=True)``), and its
three methods give what the generated ones give: ``==`` compares the fields with ``compare=True``
between two objects of the same class (``NotImplemented`` otherwise), ``hash()`` is the hash of the
tuple of the fields that take part in it (``hash=``, else ``compare=``), and ``repr()`` is
``QualName(a=..., b=...)`` over the fields with ``repr=True``, ``...`` on recursion. A method the
class body defines itself is kept, as dataclasses keeps it (tests/test_frozen.py holds each
behaviour to ``@dataclass(frozen=True)``).
"""

from __future__ import annotations

import dataclasses
import reprlib
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_kwargs: Any) -> Callable[[Any], Any]:
        return lambda decorator: decorator


C = TypeVar("C", bound=type)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of these attributes of an object, in this order (``()`` for none)."""
    if not names:
        return lambda _obj: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is self.__class__:
        compared = self.__class__.__frozen_compared__  # type: ignore[attr-defined]
        return compared(self) == compared(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__class__.__frozen_hashed__(self))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__class__.__frozen_shown__)
    return f"{self.__class__.__qualname__}({shown})"


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def frozen(cls: C) -> C:
    """``@dataclass(frozen=True)`` with shared ``__eq__``, ``__hash__`` and ``__repr__``."""
    own = cls.__dict__
    # what dataclasses would have done about each (dataclasses._process_class, 3.9-3.13)
    own_hash = own.get("__hash__", dataclasses.MISSING)
    add_hash = own_hash is dataclasses.MISSING or (own_hash is None and "__eq__" in own)
    add_eq = "__eq__" not in own
    add_repr = "__repr__" not in own
    cls = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)  # type: ignore[assignment]
    fields = dataclasses.fields(cls)
    if add_eq:
        cls.__frozen_compared__ = _getter([f.name for f in fields if f.compare])  # type: ignore[attr-defined]
        cls.__eq__ = _eq  # type: ignore[assignment,method-assign]
    if add_hash:
        hashed = [f.name for f in fields if (f.compare if f.hash is None else f.hash)]
        cls.__frozen_hashed__ = _getter(hashed)  # type: ignore[attr-defined]
        cls.__hash__ = _hash  # type: ignore[assignment,method-assign]
    if add_repr:
        cls.__frozen_shown__ = tuple(f.name for f in fields if f.repr)  # type: ignore[attr-defined]
        cls.__repr__ = _repr  # type: ignore[assignment,method-assign]
    return cls
