"""An example guardian plugin: the ``example_swap`` scorer.

Installed as its own package, it is found through the ``guardian`` entry-point group
(``[project.entry-points.guardian]`` in its pyproject.toml). Name it in the policy to use it:

    [scorers]
    cause = 1.0
    example_swap = 0.5

    [plugins.settings.example_swap]   # optional: its one setting
    points = 1000                     # what holding all of SwapTotal is worth (default 1000)

It scores a candidate by the swap it holds, in per-mille of the machine's swap (0 without
swap): on a host that swaps, the process with most memory pushed out is often the one keeping
the disk busy, the idea behind oomd's kill_by_swap_usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from guardian.api import Candidate, Policy, RankContext, Scorer, hookimpl

NAME = "example_swap"  # the entry point's name: its settings are [plugins.settings.example_swap]
DEFAULT_POINTS = 1000.0  # per mille, the unit of cause and kernel_badness


class SwapScorer(Scorer):
    name: ClassVar[str] = "example_swap"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    unit: ClassVar[str] = "swap held, per-mille of SwapTotal (scaled by its points setting)"

    def __init__(self, points: float = DEFAULT_POINTS) -> None:
        self.points = points

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        swap_total = context.sample.meminfo.swap_total_bytes
        if not swap_total:
            return 0.0
        held = sum(p.swap_bytes for p in candidate.processes)
        return self.points * held / swap_total


def points_setting(settings: Mapping[str, Any]) -> float:
    """The ``points`` setting, checked: a mistake raises, and guardian reports it (``guardian
    check`` exits 78) instead of scoring with a value the operator did not mean."""
    unknown = sorted(set(settings) - {"points"})
    if unknown:
        raise ValueError(f"[plugins.settings.{NAME}] {unknown[0]}: unknown key (known: points)")
    points = settings.get("points", DEFAULT_POINTS)
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 < points <= 2000:
        raise ValueError(
            f"[plugins.settings.{NAME}] points: expected a number above 0 up to 2000, got {points!r}"
        )
    return float(points)


@hookimpl
def guardian_scorers(policy: Policy) -> list[Scorer]:
    return [SwapScorer(points_setting(policy.plugins.settings.get(NAME, {})))]
