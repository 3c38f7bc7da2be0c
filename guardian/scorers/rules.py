"""``rules``: the policy's ``[[prefer]]`` and ``[[avoid]]`` rules as points.

Each matching prefer rule adds its ``points`` (default 300, earlyoom's --prefer in oom_score
units), each matching avoid rule subtracts them. A cgroup candidate matches a rule when the
group itself does (cgroup, unit) or any of its processes does. ``[[protect]]`` and
``[[ignore]]`` are not scores: they keep candidates out of the ranking (guardian/candidates.py).
"""

from __future__ import annotations

from typing import ClassVar, Optional

from guardian.api import Candidate, Facts, RankContext, Rule, Scorer, Stalled, hookimpl


def rule_matches(rule: Rule, candidate: Candidate, context: RankContext) -> bool:
    """Whether a prefer/avoid rule matches. A fact that could not be read in time (Stalled: a
    cmdline whose process holds its own memory lock) matches nothing: points are a preference,
    and a guess would move a candidate either way."""
    if candidate.kind == "cgroup" and rule.matches(Facts.of_cgroup(candidate.cgroup)):
        return True
    for process in candidate.processes:
        try:
            if rule.matches(context.facts_of(process, candidate.cgroup if candidate.process else None)):
                return True
        except Stalled:
            continue
    return False


class RulesScorer(Scorer):
    name: ClassVar[str] = "rules"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    unit: ClassVar[str] = "points of the matching prefer (+) and avoid (-) rules"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        policy = context.policy
        if not policy.prefer and not policy.avoid:
            return None
        total = 0.0
        for rule in policy.prefer:
            if rule_matches(rule, candidate, context):
                total += rule.points
        for rule in policy.avoid:
            if rule_matches(rule, candidate, context):
                total -= rule.points
        return total


@hookimpl
def guardian_scorers() -> list[Scorer]:
    return [RulesScorer()]
