"""``@frozen``: a frozen dataclass that costs less to define.

``@dataclass(frozen=True)`` on Python 3.11 writes six methods per class as source text and
compiles each with its own ``exec()`` (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``, ``__delattr__``): about 0.3 ms a class, and guardian defines some seventy of
them before a ``run`` can say READY=1. ``@frozen`` lets dataclasses collect the fields and compiles
nothing per class:

* ``__eq__``, ``__hash__`` and ``__repr__`` are one shared, already compiled function each, which
  reads the class's fields through an ``operator.attrgetter`` built once per class.
* ``__setattr__`` and ``__delattr__`` are one shared function each, which looks up the class's
  field names on the class.
* ``__init__`` is compiled once per *shape*: which parameters take a default factory, which fields
  are not parameters, whether ``__post_init__`` is called. Each class gets a copy of its shape's
  code object with its own parameter and field names put in (``CodeType.replace``), its defaults
  and factories beside it. The bytecode is what dataclasses would have compiled for the class,
  so an instance is made as fast; the 66 records a ``run`` defines before READY=1 come in 30 shapes.

The class it returns is a frozen dataclass (``dataclasses.fields``, ``replace``, ``asdict``,
``is_dataclass``, ``__dataclass_params__.frozen`` and ``FrozenInstanceError`` behave as for
``@dataclass(frozen=True)``), and its methods give what the generated ones give: ``==`` compares
the fields with ``compare=True`` between two objects of the same class (``NotImplemented``
otherwise), ``hash()`` is the hash of the tuple of the fields that take part in it (``hash=``,
else ``compare=``), ``repr()`` is ``QualName(a=..., b=...)`` over the fields with ``repr=True``
(``...`` on recursion), and ``__init__`` has the signature, defaults, annotations and errors of the
generated one. A method the class body defines itself is kept, as dataclasses keeps it. A class
that derives from another dataclass, or that has ``InitVar`` or keyword-only fields, is handed to
``@dataclass(frozen=True)`` whole, with only the three shared methods put in afterwards
(tests/test_frozen.py holds each behaviour to ``@dataclass(frozen=True)``).
"""

from __future__ import annotations

import builtins
import dataclasses
import reprlib
from dataclasses import MISSING, FrozenInstanceError
from operator import attrgetter
from types import CodeType, FunctionType
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


# __setattr__ and __delattr__ as dataclasses writes them for a frozen class: any name on an
# instance of the class itself, only the field names on an instance of a plain subclass (which
# may add attributes of its own).
def _setattr(self: Any, name: str, value: Any) -> None:
    owner = self.__class__.__frozen_owner__
    if self.__class__ is owner or name in owner.__frozen_names__:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    super(owner, self).__setattr__(name, value)


def _delattr(self: Any, name: str) -> None:
    owner = self.__class__.__frozen_owner__
    if self.__class__ is owner or name in owner.__frozen_names__:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
    super(owner, self).__delattr__(name)


class _Factory:
    """The default a parameter with a default factory shows (dataclasses shows ``<factory>``)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()

# How __init__ treats each field (a shape is the tuple of these, plus whether __post_init__ is
# called): a parameter; a parameter whose default is a factory; not a parameter, set from its
# factory, or not set at all (an instance then reads its default, if any, from the class).
_ARG, _ARG_OR_FACTORY, _SET_FACTORY, _UNSET = range(4)
_PARAMETERS = (_ARG, _ARG_OR_FACTORY)
_PLACEHOLDER = "\0"  # field i is named "\0i" in a shape's code: no identifier holds a NUL
_shapes: dict[tuple[tuple[int, ...], bool], CodeType] = {}


def _shape_code(kinds: tuple[int, ...], post_init: bool) -> CodeType:
    """The compiled ``__init__`` of a shape, with placeholder names: compiled once per shape.

    The body refers to ``self`` and to the parameters by position (fast locals), to the field
    names by constants, and to its helpers by globals each class provides: ``_S`` (object's
    ``__setattr__``), ``_M`` (the factory marker) and ``_F`` (the factories by field position)."""
    key = (kinds, post_init)
    code = _shapes.get(key)
    if code is None:
        params = ["self"]
        body = []
        for i, kind in enumerate(kinds):
            name, field = f"_{i}", repr(f"{_PLACEHOLDER}{i}")
            if kind in _PARAMETERS:
                params.append(name)
            if kind == _ARG:
                body.append(f"_S(self, {field}, {name})")
            elif kind == _ARG_OR_FACTORY:
                body.append(f"_S(self, {field}, _F[{i}]() if {name} is _M else {name})")
            elif kind == _SET_FACTORY:
                body.append(f"_S(self, {field}, _F[{i}]())")
        if post_init:
            body.append("self.__post_init__()")
        source = f"def __init__({', '.join(params)}):\n " + ("\n ".join(body) or "pass") + "\n"
        namespace: dict[str, Any] = {}
        exec(compile(source, "<guardian.frozen>", "exec"), namespace)
        code = _shapes[key] = namespace["__init__"].__code__
    return code


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """The class's ``__init__``: its shape's code with its names, defaults and factories put in."""
    kinds: list[int] = []
    params: list[str] = []
    defaults: list[Any] = []
    for f in fields:
        has_factory = f.default_factory is not MISSING
        if f.init:
            kinds.append(_ARG_OR_FACTORY if has_factory else _ARG)
            if has_factory or f.default is not MISSING:
                defaults.append(_FACTORY if has_factory else f.default)
            elif defaults:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            params.append(f.name)
        else:
            kinds.append(_SET_FACTORY if has_factory else _UNSET)
    code = _shape_code(tuple(kinds), hasattr(cls, "__post_init__"))
    names = {f"{_PLACEHOLDER}{i}": f.name for i, f in enumerate(fields)}
    code = code.replace(
        # dataclasses' name for the instance when a field is called "self"
        co_varnames=("__dataclass_self__" if "self" in params else "self", *params),
        co_consts=tuple(names.get(c, c) if isinstance(c, str) else c for c in code.co_consts),
    )
    if hasattr(code, "co_qualname"):  # 3.11: what a traceback prints
        code = code.replace(co_qualname=f"{cls.__qualname__}.__init__")  # type: ignore[call-arg,unused-ignore]
    scope = {
        "__builtins__": builtins,
        "__name__": cls.__module__,
        "_S": object.__setattr__,
        "_M": _FACTORY,
        "_F": tuple(f.default_factory for f in fields),
    }
    init = FunctionType(code, scope, "__init__", tuple(defaults) or None)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {**{f.name: f.type for f in fields if f.init}, "return": None}
    return init


def _plain(cls: type) -> bool:
    """Whether ``@frozen`` defines the class itself: no dataclass among its bases (dataclasses then
    checks that frozen and not frozen are not mixed), no ``InitVar`` or keyword-only field."""
    if any(dataclasses.is_dataclass(base) for base in cls.__mro__[1:]):
        return False
    own = cls.__dict__
    annotations = own.get("__annotations__")
    if annotations is None:
        annotations = getattr(cls, "__annotations__", {})
    for name, annotation in annotations.items():
        text = annotation if isinstance(annotation, str) else repr(annotation)
        if "InitVar" in text or "KW_ONLY" in text:
            return False
        value = own.get(name)
        if isinstance(value, dataclasses.Field) and getattr(value, "kw_only", None) is True:
            return False
    return True


def _define(cls: C) -> C:
    """A frozen dataclass without compiling: dataclasses collects the fields, the rest is put in."""
    own = dict(cls.__dict__)
    for name in ("__setattr__", "__delattr__"):
        if name in own:  # as dataclasses refuses it for a frozen class
            raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
    documented = bool(getattr(cls, "__doc__", None))
    if not documented:  # dataclasses would write one from a signature without the __init__
        cls.__doc__ = _PLACEHOLDER
    cls = dataclasses.dataclass(init=False, eq=False, repr=False)(cls)  # type: ignore[assignment]
    fields = dataclasses.fields(cls)
    if "__init__" not in own:
        cls.__init__ = _init(cls, fields)  # type: ignore[misc]
    cls.__setattr__ = _setattr  # type: ignore[assignment,method-assign]
    cls.__delattr__ = _delattr  # type: ignore[assignment,method-assign]
    cls.__frozen_owner__ = cls  # type: ignore[attr-defined]
    cls.__frozen_names__ = frozenset(f.name for f in fields)  # type: ignore[attr-defined]
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    params.init = params.frozen = True
    if not documented:  # written as dataclasses writes it, from the signature
        import inspect  # noqa: PLC0415 (dataclasses has imported it; a record with a docstring needs none)

        try:
            signature = str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            signature = ""
        cls.__doc__ = cls.__name__ + signature
    return cls


def _by_dataclasses(cls: C) -> C:
    return dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)  # type: ignore[return-value]


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def frozen(cls: C) -> C:
    """``@dataclass(frozen=True)``, compiling nothing per class (the module's docstring says how)."""
    own = cls.__dict__
    # what dataclasses would have done about each (dataclasses._process_class, 3.9-3.13)
    own_hash = own.get("__hash__", MISSING)
    add_hash = own_hash is MISSING or (own_hash is None and "__eq__" in own)
    add_eq = "__eq__" not in own
    add_repr = "__repr__" not in own
    # a class with a dataclass base, an InitVar or a keyword-only field: dataclasses defines it
    cls = _define(cls) if _plain(cls) else _by_dataclasses(cls)
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
