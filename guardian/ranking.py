"""Ranking: candidates + scorers -> an ordered list with each scorer's contribution kept.

Pure except for one thing: each scorer's pass over the candidates (``prepare``, then ``score``
for each candidate of its kinds) runs through ``Isolation`` (guardian/isolation.py), in a worker
thread under the time budget, so that a scorer that hangs cannot stop a kill. A scorer that
raises, returns something other than a finite number or None, or overruns is left out of that
ranking and reported as a ``PluginFailure`` (``Ranking.failures``); the others still decide.
A plugin whose earlier run is still stuck is not started again until that run ends.

Totals are always finite: scores are finite floats, and the scorer whose weighted scores would
make some candidate's total overflow (weight 1000 x a score of 1e306) is left out of that
ranking as a failure, rather than clamped, so that no order rests on a number that lost its
meaning. Scorers are added in the policy's ``[scorers]`` order, so that is the one blamed.

Order: total descending; equal totals go to the larger oom_badness() in pages (the kernel's own
resolution: two processes a few hundred KiB apart share an oom_score point, never a page
count), then to the newest process, as in the kernel's select_bad_process() (an equal score
replaces the current choice, and tasks are visited in creation order), then to the higher pid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import field, replace
from typing import Callable, Optional, get_args

from guardian.badness import badness_points, eligible, process_oom_score
from guardian.candidates import Candidate, Exclusion
from guardian.config import Policy
from guardian.frozen import frozen
from guardian.history import Growth
from guardian.hookspecs import Scorer
from guardian.isolation import Done, Isolation, PluginFailure, Refusal, value_text
from guardian.kinds import Mode
from guardian.records import Process
from guardian.rules import Facts
from guardian.sample import Sample
from guardian.text import shown


@frozen
class RankContext:
    """Everything a scorer may consult. ``totalpages`` is the kernel's scale for this scope:
    RAM + swap for the machine, the cgroup's limit for a memcg scope (kernel.md 1.2)."""

    sample: Sample
    policy: Policy
    mode: str  # "process" or "cgroup"
    scope: Optional[str]
    page_size: int
    totalpages: int
    totalpages_source: str  # "global" or "memcg <path>"
    capacity_bytes: int  # the node's memory (MemTotal): the kubelet's memoryCapacity
    self_pid: int
    facts_of: Callable[[Process, Optional[str]], Facts] = field(repr=False, compare=False)
    # a cgroup's growth up to its memory use now, from the usage history (history.py); None
    # where there is no earlier reading (a one-shot ranking without --interval)
    growth: Callable[[str, int], Optional[Growth]] = field(
        default=lambda _path, _current: None, repr=False, compare=False
    )
    # a process's growth in what only it holds (history.process_usage), where guardian has read
    # it before (an earlier ranking, a cgroup rule's scope past half its limit, rank --interval)
    process_growth: Callable[[Process], Optional[Growth]] = field(
        default=lambda _process: None, repr=False, compare=False
    )


@frozen
class Ranked:
    """One candidate's place in a ranking: each scorer's score and the weighted total."""

    candidate: Candidate
    scores: Mapping[str, float]  # raw score by scorer name (only scorers with an opinion)
    total: float  # sum of weight x score
    notes: Mapping[str, str] = field(default_factory=dict)  # scorer name -> its explain() sentence


KINDS: frozenset[str] = frozenset(get_args(Mode))


@frozen
class Offered:
    """A scorer a plugin offers, with its name and kinds read once, when it was offered: the
    ranking never asks the plugin's object for them again."""

    scorer: Scorer
    name: str
    kinds: frozenset[str]
    plugin: str  # the plugin that offered it (its registered name)
    uses_growth: bool = False  # the daemon keeps a usage history for it

    @classmethod
    def of(cls, scorer: object, plugin: Optional[str] = None) -> Offered:
        """Check ``scorer`` and read its name and kinds; ``Refusal`` says what is wrong.
        ``plugin`` defaults to the scorer's name. This reads the plugin's object (``name`` may
        be a property that raises or hangs): call it inside an ``Isolation`` run."""
        if not isinstance(scorer, Scorer):
            raise Refusal(f"returned {value_text(scorer)}, not a Scorer")
        name: object = scorer.name
        if not isinstance(name, str) or not name or shown(name) != name:
            raise Refusal(f"returned a scorer named {value_text(name)}: a name is a non-empty printable str")
        name = str.__str__(name)  # a plain str, whatever subclass the plugin used
        kinds: object = scorer.kinds
        if isinstance(kinds, str) or not isinstance(kinds, (set, frozenset, list, tuple)):
            raise Refusal(f"scorer {name}: kinds is {value_text(kinds)}, not a set of {sorted(KINDS)}")
        chosen = set()
        for kind in list(kinds):
            if not isinstance(kind, str) or str.__str__(kind) not in KINDS:
                raise Refusal(f"scorer {name}: kind {value_text(kind)} is not one of {sorted(KINDS)}")
            chosen.add(str.__str__(kind))
        if not chosen:
            raise Refusal(f"scorer {name}: kinds is empty, so it would score nothing")
        uses_growth = scorer.uses_growth
        if not isinstance(uses_growth, bool):
            raise Refusal(f"scorer {name}: uses_growth is {value_text(uses_growth)}, not a bool")
        return cls(scorer, name, frozenset(chosen), plugin if plugin is not None else name, bool(uses_growth))


@frozen
class Ranking:
    """Candidates in order, best victim first, with what was excluded and which plugins failed."""

    context: RankContext
    ranked: tuple[Ranked, ...]  # best victim first
    excluded: tuple[Exclusion, ...]
    failures: tuple[PluginFailure, ...]
    weights: Mapping[str, float]
    elapsed_us: int = 0
    fallback: str = ""  # why the order is the kernel's own, when no scorer gave one
    exclude_hooks: tuple[str, ...] = ()  # the plugins whose guardian_exclude was asked

    @property
    def top(self) -> Optional[Ranked]:
        return self.ranked[0] if self.ranked else None


def as_score(value: object, candidate: Candidate) -> float:
    """A scorer's answer as a finite float; ``Refusal`` when it is not a number or not finite.
    Runs inside the worker: ``float()`` of a number subclass calls the plugin's ``__float__``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refusal(f"returned {value_text(value)} for {candidate.key}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise Refusal(f"returned an int too large for a float for {candidate.key}") from None
    if not math.isfinite(number):
        raise Refusal(f"returned {number!r} for {candidate.key}, not a finite number")
    return number


def _scorer_pass(
    offered: Offered, context: RankContext, candidates: Sequence[Candidate], stage: list[str]
) -> dict[int, float]:
    """One scorer over a ranking: the score of each candidate of its kinds, by index."""
    mine = [i for i, c in enumerate(candidates) if c.kind in offered.kinds]
    offered.scorer.prepare(context, [candidates[i] for i in mine])
    stage[0] = "score"
    scores: dict[int, float] = {}
    for i in mine:
        value = offered.scorer.score(candidates[i], context)
        if value is not None:
            scores[i] = as_score(value, candidates[i])
    return scores


class Ranker:
    """Runs the policy's scorers with their weights. Keep one per daemon: its ``Isolation``
    remembers plugins whose runs are stuck (pass the plugin set's, so that exclude hooks and
    scorers of one plugin share that memory)."""

    def __init__(
        self,
        scorers: Sequence[tuple[Offered, float]],
        budget_ms: float,
        isolation: Optional[Isolation] = None,
    ) -> None:
        self.scorers = list(scorers)
        self.budget_s = budget_ms / 1000.0
        self.isolation = isolation if isolation is not None else Isolation()

    def rank(
        self,
        context: RankContext,
        candidates: Sequence[Candidate],
        excluded: Sequence[Exclusion] = (),
        explained: int = 0,
    ) -> Ranking:
        """The candidates in order, the first ``max(explained, EXPLAINED)`` with each scorer's
        note on them."""
        start = time.monotonic()
        failures: list[PluginFailure] = []
        totals = [0.0] * len(candidates)
        per_candidate: list[dict[str, float]] = [{} for _ in candidates]
        weights = {offered.name: weight for offered, weight in self.scorers}
        for offered, weight in self.scorers:
            # one at a time, each with its own budget: under the GIL, scorers side by side
            # would share one clock and a slow-but-honest scorer could starve the next
            stage = ["prepare"]

            def work(offered: Offered = offered, stage: list[str] = stage) -> dict[int, float]:
                return _scorer_pass(offered, context, candidates, stage)

            def hook(offered: Offered = offered, stage: list[str] = stage) -> str:
                return f"{offered.name}.{stage[0]}"

            result = self.isolation.run(offered.plugin, hook, self.budget_s, work)
            if not isinstance(result, Done):
                failures.append(result)
                continue
            added = {i: totals[i] + weight * value for i, value in result.value.items()}
            overflow = next((i for i, total in added.items() if not math.isfinite(total)), None)
            if overflow is not None:
                failures.append(
                    PluginFailure(
                        offered.plugin,
                        f"{offered.name}.score",
                        f"weight {weight:g} x score {result.value[overflow]:g} for "
                        f"{candidates[overflow].key} makes its total overflow (not finite)",
                    )
                )
                continue
            for i, total in added.items():
                totals[i] = total
                per_candidate[i][offered.name] = result.value[i]

        fallback = ""
        if candidates and not any(per_candidate):
            # no scorer gave an opinion on any candidate (all failed, overran, or abstained):
            # ties would go to the newest process, which could be the smallest. The kernel's
            # own order decides instead, the one its OOM killer would follow.
            fallback = "no scorer ranked any candidate: the kernel's own order (oom_badness) decided"
            totals = [
                float(
                    max(
                        (process_oom_score(p, context.page_size, context.totalpages) for p in c.processes),
                        default=0,
                    )
                )
                for c in candidates
            ]
        ranked = [Ranked(c, per_candidate[i], totals[i]) for i, c in enumerate(candidates)]
        ranked.sort(key=lambda r: _order(r, context))
        noted = max(explained, EXPLAINED)
        ranked[:noted] = self._notes(context, ranked[:noted], failures)
        return Ranking(
            context=context,
            ranked=tuple(ranked),
            excluded=tuple(excluded),
            failures=tuple(failures),
            weights=weights,
            elapsed_us=int((time.monotonic() - start) * 1e6),
            fallback=fallback,
        )

    def _notes(
        self, context: RankContext, first: list[Ranked], failures: list[PluginFailure]
    ) -> list[Ranked]:
        """Each scorer's explain() of the first candidates it scored, under its budget; a scorer
        that fails here is reported and changes nothing of the order."""
        notes: list[dict[str, str]] = [{} for _ in first]
        for offered, _weight in self.scorers:
            mine = [i for i, r in enumerate(first) if offered.name in r.scores]
            if not mine:
                continue

            def work(offered: Offered = offered, mine: list[int] = mine) -> dict[int, str]:
                said = {}
                for i in mine:
                    text = offered.scorer.explain(first[i].candidate, context)
                    if text is None:
                        continue
                    if not isinstance(text, str):
                        raise Refusal(f"explain returned {value_text(text)}, not a str or None")
                    said[i] = shown(str.__str__(text))
                return said

            result = self.isolation.run(offered.plugin, f"{offered.name}.explain", self.budget_s, work)
            if not isinstance(result, Done):
                failures.append(result)
                continue
            for i, text in result.value.items():
                notes[i][offered.name] = text
        return [replace(r, notes=n) if n else r for r, n in zip(first, notes)]


EXPLAINED = 2  # the first candidate and its runner-up


def kernel_pages(candidate: Candidate, context: RankContext) -> int:
    """The candidate's oom_badness() in pages (a group: its worst member's), the kernel's own
    resolution for breaking ties."""
    return max(
        (
            badness_points(p, context.page_size, context.totalpages)
            for p in candidate.processes
            if eligible(p)
        ),
        default=-(1 << 62),
    )


def _order(r: Ranked, context: RankContext) -> tuple[float, int, int, int]:
    p = r.candidate.process
    pages = kernel_pages(r.candidate, context)
    if p is not None:
        return (-r.total, -pages, -p.starttime_ticks, -p.pid)
    newest = max((m.starttime_ticks for m in r.candidate.members), default=0)
    return (-r.total, -pages, -newest, 0)
