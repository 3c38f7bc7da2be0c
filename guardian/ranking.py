"""Ranking: candidates + scorers -> an ordered list with each scorer's contribution kept.

Pure except for one thing: each scorer runs in a worker thread under a time budget, so that a
scorer that hangs cannot stop a kill. A scorer that raises, returns a non-number, or overruns
is left out of that ranking and reported (``Ranking.failures``); the others still decide.
A scorer whose earlier run is still stuck is not started again until that run ends.

Order: total descending; ties go to the newest process, as in the kernel's
select_bad_process() (an equal score replaces the current choice, and tasks are visited in
creation order), then to the higher pid.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from guardian.candidates import Candidate, Exclusion
from guardian.config import Policy
from guardian.hookspecs import Scorer
from guardian.records import Process
from guardian.rules import Facts
from guardian.sample import Sample


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    scores: Mapping[str, float]  # raw score by scorer name (only scorers with an opinion)
    total: float  # sum of weight x score


@dataclass(frozen=True)
class ScorerFailure:
    scorer: str
    reason: str


@dataclass(frozen=True)
class Ranking:
    context: RankContext
    ranked: tuple[Ranked, ...]  # best victim first
    excluded: tuple[Exclusion, ...]
    failures: tuple[ScorerFailure, ...]
    weights: Mapping[str, float]
    elapsed_us: int = 0

    @property
    def top(self) -> Optional[Ranked]:
        return self.ranked[0] if self.ranked else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Run:
    """One scorer's pass over the candidates, in its own thread."""

    def __init__(self, scorer: Scorer, context: RankContext, candidates: Sequence[Candidate]) -> None:
        self.scorer = scorer
        self.context = context
        self.candidates = [c for c in candidates if c.kind in scorer.kinds]
        self.scores: dict[int, float] = {}
        self.error: Optional[str] = None
        self.timed_out = False
        self.thread = threading.Thread(target=self._main, name=f"scorer-{scorer.name}", daemon=True)

    def _main(self) -> None:
        try:
            self.scorer.prepare(self.context, list(self.candidates))
            for index, candidate in enumerate(self.candidates):
                value = self.scorer.score(candidate, self.context)
                if value is None:
                    continue
                if not _is_number(value):
                    self.error = (
                        f"returned {value!r} ({type(value).__name__}) for {candidate.key}, not a number"
                    )
                    return
                self.scores[index] = float(value)
        except Exception as exc:  # a plugin's bug must not stop a kill
            self.error = f"raised {type(exc).__name__}: {exc}"


class Ranker:
    """Runs the policy's scorers with their weights. Keep one per daemon: it remembers scorers
    whose runs are stuck."""

    def __init__(self, scorers: Sequence[tuple[Scorer, float]], budget_ms: float) -> None:
        self.scorers = list(scorers)
        self.budget_s = budget_ms / 1000.0
        self._stuck: dict[str, threading.Thread] = {}

    def rank(
        self,
        context: RankContext,
        candidates: Sequence[Candidate],
        excluded: Sequence[Exclusion] = (),
    ) -> Ranking:
        start = time.monotonic()
        failures: list[ScorerFailure] = []
        runs: list[_Run] = []
        for scorer, _weight in self.scorers:
            stuck = self._stuck.get(scorer.name)
            if stuck is not None and stuck.is_alive():
                failures.append(
                    ScorerFailure(scorer.name, "still running from an earlier ranking (hung); skipped")
                )
                continue
            self._stuck.pop(scorer.name, None)
            # one at a time, each with its own budget: under the GIL, scorers side by side
            # would share one clock and a slow-but-honest scorer could starve the next
            run = _Run(scorer, context, candidates)
            run.thread.start()
            run.thread.join(self.budget_s)
            run.timed_out = run.thread.is_alive()
            runs.append(run)

        totals = [0.0] * len(candidates)
        per_candidate: list[dict[str, float]] = [{} for _ in candidates]
        index_of = {id(c): i for i, c in enumerate(candidates)}
        weights = {scorer.name: weight for scorer, weight in self.scorers}
        for run in runs:
            name = run.scorer.name
            if run.timed_out:
                self._stuck[name] = run.thread
                failures.append(
                    ScorerFailure(name, f"did not finish within its budget of {self.budget_s * 1000:g} ms")
                )
                continue
            if run.error is not None:
                failures.append(ScorerFailure(name, run.error))
                continue
            for local_index, value in run.scores.items():
                i = index_of[id(run.candidates[local_index])]
                per_candidate[i][name] = value
                totals[i] += weights[name] * value

        ranked = [Ranked(c, per_candidate[i], totals[i]) for i, c in enumerate(candidates)]
        ranked.sort(key=_order)
        return Ranking(
            context=context,
            ranked=tuple(ranked),
            excluded=tuple(excluded),
            failures=tuple(failures),
            weights=weights,
            elapsed_us=int((time.monotonic() - start) * 1e6),
        )


def _order(r: Ranked) -> tuple[float, int, int]:
    p = r.candidate.process
    if p is not None:
        return (-r.total, -p.starttime_ticks, -p.pid)
    newest = max((m.starttime_ticks for m in r.candidate.members), default=0)
    return (-r.total, -newest, 0)
