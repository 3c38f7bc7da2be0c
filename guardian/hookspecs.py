"""The plugin contract: what a guardian plugin can implement, and how results combine.

A plugin is a module (or object) with functions decorated by ``@hookimpl``. Built-in scorers are
plugins exactly like third-party ones (guardian/plugins.py: DEFAULT_PLUGINS). Third-party plugins
come from the ``guardian`` entry-point group and from the plugin directory
(``/etc/guardian/plugins.d/*.py``). docs/plugin_hooks.md has one section per hook; a test fails
when a hook has none.

Scores follow one convention: **higher means a better victim**. A scorer returns a number
(int or float) per candidate, or None when it has no opinion on that candidate. The policy gives
each scorer a weight; a candidate's total is the sum of weight x score over the scorers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

import pluggy

if TYPE_CHECKING:
    from guardian.candidates import Candidate
    from guardian.config import Policy
    from guardian.ranking import RankContext

PROJECT = "guardian"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Scorer:
    """Base class of a scorer. Subclass it, set ``name`` and ``kinds``, implement ``score``.

    ``kinds`` says which candidates it scores: ``process``, ``cgroup`` or both. ``prepare`` runs
    once per ranking before any ``score`` call, for work shared by all candidates. Both run
    under the policy's time budget (``[plugins] budget_ms``): a scorer that raises, returns a
    non-number or overruns is left out of that ranking and reported, and the ranking completes
    with the others.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset({"process"})
    unit: ClassVar[str] = ""  # what one point means, for explanations

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        """Optional: precompute per ranking."""

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        raise NotImplementedError


@hookspec
def guardian_scorers(policy: Policy) -> list[Scorer]:  # type: ignore[empty-body]
    """Return the scorers this plugin provides (a list, possibly empty).

    Called once when the plugin manager is built and again after each policy reload. The lists
    of all plugins are concatenated; scorer names must be unique across plugins (a duplicate is
    an error naming both plugins). Only scorers the policy names under ``[scorers]`` take part
    in a ranking, with the weight given there.
    """


@hookspec
def guardian_exclude(candidate: Candidate, context: RankContext) -> Optional[str]:
    """Return a reason (a sentence) to keep ``candidate`` out of the ranking, or None.

    Asked for every candidate that guardian's own rules (pid 1, kernel threads, zombies,
    guardian itself, oom_score_adj -1000, policy protect/ignore) let through. Every plugin is
    asked; the candidate is excluded if any returns a reason, and every reason is reported.
    A plugin can only take candidates away, never add back one guardian excluded. An exclude
    hook that raises is reported and treated as "no opinion".
    """
