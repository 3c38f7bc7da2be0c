"""The plugin contract: what a guardian plugin can implement, and how results combine.

A plugin is a module (or object) with functions decorated by ``@hookimpl``; it imports what it
needs from ``guardian.api`` and nothing else of guardian. Built-in scorers are plugins exactly
like third-party ones (guardian/plugins.py: DEFAULT_PLUGINS). Third-party plugins come from the
``guardian`` entry-point group and from the plugin directory (``/etc/guardian/plugins.d/*.py``).
docs/plugin_hooks.md has one section per hook; a test fails when a hook has none.

Every hook is called the same way (guardian/isolation.py): each plugin's implementation on its
own, in pluggy's order (``tryfirst``/``trylast`` honoured), in a worker thread under the policy's
budget (``[plugins] budget_ms``), anything raised (``SystemExit`` included) reported as that
plugin's ``PluginFailure``. Hook wrappers are not supported.

Scores follow one convention: **higher means a better victim**. A scorer returns a finite number
(int or float) per candidate, or None when it has no opinion on that candidate. The policy gives
each scorer a weight; a candidate's total is the sum of weight x score over the scorers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

import pluggy

if TYPE_CHECKING:
    from guardian.candidates import Candidate
    from guardian.config import Policy
    from guardian.decision import KillDecision, KillOutcome
    from guardian.ranking import RankContext

PROJECT = "guardian"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Scorer:
    """Base class of a scorer. Subclass it, set ``name`` and ``kinds``, implement ``score``.

    ``kinds`` says which candidates it scores: ``process``, ``cgroup`` or both. ``name`` and
    ``kinds`` are read once, when the scorer is offered. ``prepare`` runs once per ranking
    before any ``score`` call, for work shared by all candidates. One pass (``prepare`` and every
    ``score``) runs under the policy's time budget (``[plugins] budget_ms``): a scorer that
    raises, returns something other than a finite number or None, overruns, or whose weighted
    score makes a total overflow is left out of that ranking and reported, and the ranking
    completes with the others.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset({"process"})
    unit: ClassVar[str] = ""  # what one point means, for explanations
    # True: the scorer reads ``context.growth``, and the daemon records every cgroup's memory use
    # for it (a few microseconds per group every few seconds); False: nothing is recorded
    uses_growth: ClassVar[bool] = False

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        """Optional: precompute per ranking."""

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        raise NotImplementedError

    def explain(self, candidate: Candidate, context: RankContext) -> Optional[str]:
        """Optional: one sentence on what this candidate's score rests on (None: nothing to
        add). Asked, after the ranking, for the first candidate and its runner-up, under the
        same budget; ``rank --explain`` and the kill report print it."""
        return None


@hookspec
def guardian_scorers(policy: Policy) -> list[Scorer]:  # type: ignore[empty-body]
    """Return the scorers this plugin provides (a list, possibly empty).

    Called when a policy is loaded (at start and after each reload), under the budget. The
    lists of all plugins are concatenated; scorer names must be unique across plugins: when two
    plugins offer one name, the plugin registered first keeps it (built-ins first) and the
    other is reported. An element that is not a ``Scorer`` with a printable ``name`` and known
    ``kinds`` is reported and skipped. Only scorers the policy names under ``[scorers]`` take
    part in a ranking, with the weight given there.
    """


@hookspec
def guardian_exclude(candidate: Candidate, context: RankContext) -> Optional[str]:
    """Return a reason (a sentence) to keep ``candidate`` out of the ranking, or None.

    Asked for every candidate that guardian's own rules (pid 1, kernel threads, zombies,
    guardian itself, oom_score_adj -1000, policy protect/ignore) let through. Every plugin is
    asked, in pluggy's order; the candidate is excluded if any returns a reason, all reasons are
    reported and the first plugin to give one is named. A plugin can only take candidates
    away, never add back one guardian excluded. A reason is a non-empty ``str``; any other
    answer, a raise, or overrunning the budget (one per plugin for all of a ranking's
    candidates) is that plugin's failure: it is reported and not asked about the remaining
    candidates of that ranking, and the answers it gave before stand.
    """


@hookspec
def guardian_before_kill(decision: KillDecision) -> Optional[str]:
    """Return a reason (a sentence) to veto this kill, or None to let it go ahead.

    Asked right before guardian acts on the victim it chose (in a dry run too), on the loop,
    every plugin in pluggy's order under the budget (``[plugins] budget_ms``) each, until one
    vetoes. A veto is reported with the plugin's name and reason; guardian then acts on the
    next candidate of the same ranking, as if the vetoed one had been excluded, and asks again.
    At most ``guardian.hooks.VETO_MAX`` candidates are asked about per trigger: when all of them
    are vetoed (or a group rule's one group is), there is no kill for that trigger, reported as
    ``vetoed``, and the scope cools down as after any trigger with no kill.

    Fail open: a plugin that raises, overruns its budget or answers anything but None or a
    non-empty ``str`` is reported, and its answer does not count: the kill goes ahead. A veto
    hook that could stop kills by breaking would let the kernel's OOM killer act instead. A
    hook can only veto: it never chooses the victim, and never makes guardian kill a process
    that its own rules or the policy protect (those are never candidates).
    """


@hookspec
def guardian_after_kill(decision: KillDecision, outcome: KillOutcome) -> None:
    """Told how a kill ended (any outcome: the victim died, was still alive, vanished before a
    signal, the kill was a dry run or was abandoned). The return value is ignored.

    Called off the loop: the loop hands the kill to one worker thread and goes on; the worker
    calls every plugin in pluggy's order, each under the budget (``[plugins] budget_ms``). A
    plugin that raises or overruns is reported; one still stuck is not called again until it
    returns. When kills end faster than the worker can tell them, the excess is dropped and
    reported (``guardian.hooks.QUEUE_MAX``).
    """
