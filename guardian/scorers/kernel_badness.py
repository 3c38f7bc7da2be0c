"""``kernel_badness``: the kernel's oom_badness(), mirrored exactly (guardian/badness.py), in
/proc/PID/oom_score units (0..2000); in a cgroup scope on the scale of the cgroup's limit, as
the kernel's memcg OOM would score it. A cgroup scores as its worst member."""

from __future__ import annotations

from typing import ClassVar, Optional

from guardian.api import Candidate, RankContext, Scorer, hookimpl, process_oom_score


class KernelBadness(Scorer):
    name: ClassVar[str] = "kernel_badness"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    unit: ClassVar[str] = "oom_score points (0..2000); a cgroup scores as its worst member"

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        scores = [process_oom_score(p, context.page_size, context.totalpages) for p in candidate.processes]
        return float(max(scores)) if scores else None


@hookimpl
def guardian_scorers() -> list[Scorer]:
    return [KernelBadness()]
