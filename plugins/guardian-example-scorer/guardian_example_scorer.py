"""An example guardian plugin: the ``example_swap`` scorer.

Installed as its own package, it is found through the ``guardian`` entry-point group
(``[project.entry-points.guardian]`` in its pyproject.toml). Name it in the policy to use it:

    [scorers]
    kernel_badness = 1.0
    example_swap = 0.5

It scores a candidate by the swap it holds, in per-mille of the machine's swap (0 without
swap): on a host that swaps, the process with most memory pushed out is often the one keeping
the disk busy, the idea behind oomd's kill_by_swap_usage.
"""

from __future__ import annotations

from typing import ClassVar, Optional

from guardian.api import Candidate, RankContext, Scorer, hookimpl


class SwapScorer(Scorer):
    name: ClassVar[str] = "example_swap"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    unit: ClassVar[str] = "swap held, per-mille of SwapTotal"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        swap_total = context.sample.meminfo.swap_total_bytes
        if not swap_total:
            return 0.0
        held = sum(p.swap_bytes for p in candidate.processes)
        return 1000.0 * held / swap_total


@hookimpl
def guardian_scorers() -> list[Scorer]:
    return [SwapScorer()]
