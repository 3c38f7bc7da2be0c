"""One way to call plugin code: each plugin alone, in pluggy's order, under a time budget.

A plugin runs as root inside the daemon, between a trigger and a kill. Whatever it does wrong -
raise (``SystemExit`` and ``KeyboardInterrupt`` included), hang, return the wrong type, return
an object whose ``__bool__`` or ``__str__`` raises - must cost that plugin its say, never the
kill. So every call into plugin code goes through ``Isolation.run``:

* the work runs in a worker thread and the caller waits at most the budget for it;
* everything the work touches of the plugin's objects (calling it, checking and converting
  what it returned) happens inside that thread, so a hang or a raise there is covered too; the
  caller only ever receives plain values that guardian built (``str``, ``float``, its own
  records);
* any ``BaseException`` raised there becomes a ``PluginFailure(plugin, hook, reason)``;
* a plugin whose earlier run is still stuck past its budget is not started again until that run
  ends: a second thread would most likely block on whatever the first one holds, and cost a
  whole budget again on every ranking.

Hooks are called the way pluggy's ``_multicall`` calls them: ``reversed(get_hookimpls())``,
which already honours ``tryfirst``/``trylast``, with each implementation's arguments picked
from the hook's by name. Unlike ``_multicall``, each implementation is called on its own, so one
plugin's failure does not take the others' answers with it.

This isolates faults, not malice: a plugin is Python code running as root in the daemon's
process and could do anything root can. What a local user must not be able to do is choose
that code; guardian/plugins.py makes sure of that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar, Union

import pluggy

from guardian.frozen import frozen
from guardian.text import shown

T = TypeVar("T")

# A reason is a line in a log and in ``guardian rank`` output: a plugin's exception message or
# exclusion reason is cut here so that a plugin cannot flood either with one answer.
REASON_MAX_CHARS = 500


@frozen
class PluginFailure:
    """A plugin's code failed in one run: raised, overran its budget, or returned something
    guardian does not accept. The plugin is left out of that run (a scorer out of that
    ranking; an exclude hook is not asked about the rest of its candidates); the others go on.

    ``plugin`` is the plugin's registered name (``kernel_badness``, ``entrypoint:NAME``,
    ``file:PATH``); ``hook`` is what was running: ``guardian_scorers``, ``guardian_exclude``,
    ``guardian_before_kill``, ``guardian_after_kill``, ``import``, or ``SCORER.prepare`` /
    ``SCORER.score`` for a scorer's pass over a ranking;
    ``reason`` is a printable sentence (``guardian.text.shown``).
    """

    plugin: str
    hook: str
    reason: str

    def describe(self) -> str:
        """One printable sentence for a log line or ``--explain``: what failed, why, and what
        that cost."""
        if self.hook == "guardian_exclude":
            cost = "not asked about the rest of this ranking's candidates"
        elif self.hook == "guardian_scorers":
            cost = "its scorers are not offered"
        elif self.hook == "import":
            cost = "not loaded"
        elif self.hook == "guardian_before_kill":
            cost = "its answer does not count: the kill goes ahead"
        elif self.hook == "guardian_after_kill":
            cost = "not told of this kill"
        else:  # SCORER.prepare / SCORER.score
            cost = f"scorer {self.hook.rsplit('.', 1)[0]} left out of this ranking"
        return f"plugin {shown(self.plugin)}, {shown(self.hook)}: {shown(self.reason)}; {shown(cost)}"


class Refusal(Exception):
    """guardian's own verdict on what a plugin returned, raised inside the worker: its message
    is the failure's reason as it stands (no "raised ..." around it)."""


@frozen
class Done(Generic[T]):
    """A run that finished within its budget, with the value its work returned."""

    value: T


def printable(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters (plus an ellipsis)."""
    text = shown(text)
    return text if len(text) <= limit else text[:limit] + "..."


def exception_text(exc: BaseException) -> str:
    """``Type: message`` of an exception a plugin raised, printable. The message is the
    plugin's ``__str__``, which may itself raise: then only the type is given."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except BaseException:  # a broken __str__ must not replace the failure being reported
        return f"{name} (its message could not be rendered)"
    return printable(f"{name}: {message}" if message else name)


def value_text(value: object) -> str:
    """``repr(value) (type)`` of something a plugin returned, printable and short; a ``repr``
    that raises gives the type alone."""
    name = type(value).__name__
    try:
        text = repr(value)
    except BaseException:  # its repr is plugin code too
        return f"a {name}"
    return f"{printable(text, 80)} ({name})"


def call_impl(impl: pluggy.HookImpl, kwargs: Mapping[str, object]) -> object:
    """Call one hook implementation as pluggy's ``_multicall`` does: positional arguments by
    name, plus the keyword arguments with defaults that the call provides."""
    args = [kwargs[name] for name in impl.argnames]
    extra = {name: kwargs[name] for name in getattr(impl, "kwargnames", ()) if name in kwargs}
    return impl.function(*args, **extra)


def call_order(hook: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    """A hook's implementations in the order pluggy calls them (``_multicall`` walks
    ``reversed(get_hookimpls())``: tryfirst ones first, then the last registered first)."""
    return list(reversed(hook.get_hookimpls()))


class Isolation:
    """Runs plugin code, one run at a time, each in a worker thread under a budget.

    Keep one per plugin set (``Plugins`` holds it): it remembers plugins whose runs are stuck.
    Runs are started from one thread only (the daemon's loop, or a command).
    """

    def __init__(self) -> None:
        self._stuck: dict[str, tuple[str, threading.Thread]] = {}  # plugin -> (hook, worker)

    def stuck(self, plugin: str) -> bool:
        """Whether an earlier run of ``plugin`` is still going past its budget."""
        entry = self._stuck.get(plugin)
        if entry is None:
            return False
        if entry[1].is_alive():
            return True
        del self._stuck[plugin]
        return False

    def run(
        self, plugin: str, hook: Union[str, Callable[[], str]], budget_s: float, work: Callable[[], T]
    ) -> Union[Done[T], PluginFailure]:
        """``work()`` in a worker thread; its value, or why there is none. ``hook`` names what
        runs; a callable is asked when a failure is recorded, for work that goes through stages
        (a scorer's ``prepare``, then its ``score`` calls)."""

        def named() -> str:
            return hook if isinstance(hook, str) else hook()

        if self.stuck(plugin):
            earlier = self._stuck[plugin][0]
            return PluginFailure(
                plugin, named(), f"not started: its earlier {earlier} is still running past its budget (hung)"
            )
        box: list[Union[Done[T], PluginFailure]] = []

        def main() -> None:
            try:
                value = work()
            except Refusal as exc:
                box.append(PluginFailure(plugin, named(), printable(str(exc))))
            except BaseException as exc:  # SystemExit, KeyboardInterrupt: the plugin's, not ours
                box.append(PluginFailure(plugin, named(), f"raised {exception_text(exc)}"))
            else:
                box.append(Done(value))

        worker = threading.Thread(target=main, name=f"guardian-plugin {plugin} {named()}", daemon=True)
        worker.start()
        worker.join(budget_s)
        if worker.is_alive():
            self._stuck[plugin] = (named(), worker)
            return PluginFailure(
                plugin, named(), f"did not finish within its budget of {budget_s * 1000:g} ms"
            )
        if not box:  # only if even recording the outcome failed (MemoryError in the worker)
            return PluginFailure(plugin, named(), "ended without a result")
        return box[0]
