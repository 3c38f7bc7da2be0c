"""The RE2 engine behind rule patterns (guardian/rules.py): one of two bindings to Google's RE2.

- ``guardian._re2``: guardian's own few lines of binding (``guardian/_re2.cc``) to the system's
  ``libre2``, built only where a package build asks for it (``GUARDIAN_RE2_BINDING=1``,
  setup.py): Debian packages the library but not its Python binding, so the Debian package
  ships this one and needs nothing from outside Debian.
- ``re2`` of ``google-re2``: the binding from the Python package index, which a pip install
  brings (pyproject.toml).

Both compile with the same options (UTF-8, no captures, rejected patterns not logged) and answer
the same: ``compile(pattern)`` gives a Regexp with ``programsize`` and ``search(data)`` /
``fullmatch(data)`` -> bool on UTF-8 bytes, or raises ``PatternSyntax`` with RE2's reason. The
packaged binding is preferred when both are there: it is what the package was built and tested
with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Optional, Protocol


class PatternSyntax(ValueError):
    """RE2 refused a pattern; ``str()`` is RE2's reason."""


class Regexp(Protocol):
    @property
    def programsize(self) -> int: ...

    def search(self, data: bytes) -> bool: ...

    def fullmatch(self, data: bytes) -> bool: ...


Compile = Callable[[str], Regexp]


def libre2() -> Optional[Compile]:
    """The packaged binding's compile, or None where it was not built. A binding that is there
    but cannot load (its libre2 gone) raises ImportError with the loader's reason: falling back
    in silence would hide a broken package."""
    try:
        # (``from guardian import _re2`` would turn a missing module into a plain ImportError)
        binding: Any = importlib.import_module("guardian._re2")
    except ModuleNotFoundError as exc:
        if exc.name != "guardian._re2":
            raise
        return None

    def compile_libre2(pattern: str) -> Regexp:
        try:
            regexp: Regexp = binding.compile(pattern)
        except UnicodeError:  # a lone surrogate: not RE2's to judge (rules.Pattern says so)
            raise
        except ValueError as exc:
            raise PatternSyntax(str(exc)) from None
        return regexp

    return compile_libre2


class _Google:
    """google-re2's compiled expression, answering bool like the packaged binding."""

    __slots__ = ("_regexp", "programsize")

    def __init__(self, regexp: Any) -> None:
        self._regexp = regexp
        self.programsize: int = regexp.programsize

    def search(self, data: bytes) -> bool:
        return self._regexp.search(data) is not None

    def fullmatch(self, data: bytes) -> bool:
        return self._regexp.fullmatch(data) is not None


def google() -> Optional[Compile]:
    """google-re2's compile with guardian's options, or None where it is not installed."""
    try:
        import re2  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "re2":
            raise
        return None
    options = re2.Options()
    options.log_errors = False  # RE2 would print each rejected pattern to stderr itself
    options.never_capture = True  # a yes/no answer: no groups to track, DFA only

    def compile_google(pattern: str) -> Regexp:
        try:
            return _Google(re2.compile(pattern, options))
        except re2.error as exc:
            reason = exc.args[0] if exc.args else ""
            if isinstance(reason, bytes):  # the binding hands RE2's message over as bytes
                reason = reason.decode("utf-8", "replace")
            raise PatternSyntax(str(reason)) from None

    return compile_google


ENGINES: dict[str, Callable[[], Optional[Compile]]] = {"libre2": libre2, "google-re2": google}


def load() -> tuple[str, Compile]:
    """The engine to use: its name and its compile. ModuleNotFoundError, as a sentence that says
    what to install, when neither binding is there."""
    for name, find in ENGINES.items():
        compile_fn = find()
        if compile_fn is not None:
            return name, compile_fn
    raise ModuleNotFoundError(
        "guardian needs the module re2 of google-re2 (linear-time matching of rule patterns), "
        "which is not installed: pip install google-re2 (on Debian: install the guardian-oom "
        "package, which brings its own binding to libre2, or pip install "
        "--break-system-packages google-re2)",
        name="re2",
    )
