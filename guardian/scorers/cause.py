"""``cause``: the group that caused the shortage first, then the process inside it.

The kernel, earlyoom and nohang take the largest process. When a large, steady service sits
beside a group of small processes that keep growing, that kills the bystander: its death does
not end the episode, and the growers are killed next anyway. Meta's oomd ranks cgroups by size
or growth (``kill_by_memory_size_or_growth``), systemd-oomd by reclaim activity; this scorer
does the same at the level of the leaf groups (services, scopes, pod containers, user
sessions; a ``memory.oom.group`` group is one whole), in points per mille of the scope (the
kernel's scale: RAM + swap for the machine, the limit for a cgroup):

* **size**: what killing the group's candidates would free (guardian/gain.py: anonymous
  memory, swap, page tables, shared memory only where they are its last user), at most the
  group's memory use less what ``memory.min``/``memory.low`` protect;
* **growth**: what the group would take in the next ``GROWTH_HORIZON_S`` seconds at the rate
  the usage history measured (guardian/history.py), counted in the proportion of its memory
  use that a kill frees (a group that grows page cache earns little by growing), at most the
  whole scope.

A group's points = size + growth (0..2000). A process scores as its group, plus below one point
for its place inside it: the kernel's oom_badness() order with what a kill frees in place of
RSS (``oom_score_adj`` counts as the kernel counts it). So the group is chosen first, then the
process; ``[[prefer]]``/``[[avoid]]`` points (the ``rules`` scorer) move candidates across
groups. A cgroup candidate (a group kill) scores as its group.

Without history (``guardian rank`` without ``--interval``, the daemon's first seconds) growth
is unknown and counts nothing: size decides.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import ClassVar, Optional

from guardian.api import (
    Candidate,
    Growth,
    RankContext,
    Scorer,
    Unavailable,
    expected_gain,
    hookimpl,
    human_bytes,
    shown,
    worth_a_look,
)

GROWTH_HORIZON_S = 60.0


@dataclass(frozen=True)
class GroupCause:
    """What the cause points of one group rest on."""

    path: str
    members: int  # candidates counted in it
    gain_bytes: int  # what killing them would free
    usage_bytes: Optional[int]  # memory.current (None: not a readable group, e.g. the root)
    protected_bytes: int  # memory.min / memory.low shielding it
    size_bytes: int
    growth: Optional[Growth]
    growth_bytes: int  # projected over the horizon, counted (see the module docstring)
    scope_bytes: int

    @property
    def size_points(self) -> float:
        return 1000.0 * self.size_bytes / self.scope_bytes

    @property
    def growth_points(self) -> float:
        return 1000.0 * self.growth_bytes / self.scope_bytes

    @property
    def points(self) -> float:
        return self.size_points + self.growth_points

    def describe(self) -> str:
        usage = (
            "no memory use of its own to read"
            if self.usage_bytes is None
            else f"memory use {human_bytes(self.usage_bytes)}"
            + (f", {human_bytes(self.protected_bytes)} protected" if self.protected_bytes else "")
        )
        size = (
            f"frees ~{human_bytes(self.size_bytes)} of {human_bytes(self.scope_bytes)} "
            f"(a {self.size_points / 10:.1f} % share: {self.size_points:.0f} points; {usage})"
        )
        if self.growth is None:
            grows = "growth unknown (no earlier reading), counted 0"
        else:
            grows = (
                f"grows {self.growth.bytes_per_s / 1e6:+.1f} MB/s over {self.growth.span_s:.1f} s, "
                f"counted {human_bytes(self.growth_bytes)} in {GROWTH_HORIZON_S:.0f} s "
                f"({self.growth_points:.0f} points)"
            )
        return f"group {shown(self.path)} {size}; {grows}"


def group_of(candidate: Candidate) -> str:
    """The group a candidate's cause is judged on: its memory.oom.group group where it dies
    with one, else its own cgroup."""
    return candidate.kill_group or candidate.cgroup or "/"


def _counted(growth: Optional[Growth], freed_share: float, scope_bytes: int) -> int:
    """What growth adds: what it would take over the horizon, in the share a kill frees, at most
    the scope; nothing for a group or process that is not growing."""
    if growth is None or growth.bytes_per_s <= 0:
        return 0
    return int(min(growth.bytes_per_s * GROWTH_HORIZON_S * freed_share, scope_bytes))


def _within(gain_bytes: int, adj: int, context: RankContext) -> float:
    """A process's place in its group, in (0, 1): oom_badness() with what a kill frees (and
    what the process would take in the next minute, where its growth is known) in place of RSS,
    mapped so that it never saturates: in a small memcg every grower's projection reaches the
    limit, and a clamp made them all equal (the many-procs run killed a worker that had just
    stopped growing, then the one still growing)."""
    total = max(context.totalpages, 1)
    points = gain_bytes // context.page_size + adj * (total // 1000)
    return 0.5 + math.atan(points / total) / math.pi


class Cause(Scorer):
    name: ClassVar[str] = "cause"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    uses_growth: ClassVar[bool] = True
    unit: ClassVar[str] = (
        "per mille of the scope: what a kill of the group frees + what it would take in the next "
        "minute; a process adds its place in the group (below 1)"
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, GroupCause] = {}
        self._within: dict[int, float] = {}
        self._processes: dict[int, tuple[int, Optional[Growth], int]] = {}

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        sample = context.sample
        scope_bytes = max(context.totalpages * context.page_size, 1)
        gains: dict[str, int] = {}
        members: dict[str, int] = {}
        within: dict[int, float] = {}
        process_notes: dict[int, tuple[int, Optional[Growth], int]] = {}
        looked = worth_a_look(p for c in candidates for p in c.processes)
        for candidate in candidates:
            path = group_of(candidate)
            spared = {pid for pid, _why in candidate.spared}
            total = 0
            for process in candidate.processes:
                if process.pid in spared:
                    continue
                gain = expected_gain(process, sample.freed_shmem, looked).total_bytes
                total += gain
                if candidate.process is not None:
                    growth = context.process_growth(process)
                    grown = _counted(growth, 1.0, scope_bytes)
                    within[process.pid] = _within(gain + grown, process.oom_score_adj, context)
                    process_notes[process.pid] = (gain, growth, grown)
            gains[path] = gains.get(path, 0) + total
            members[path] = members.get(path, 0) + 1
        groups = {}
        for path, gain in gains.items():
            groups[path] = self._group(context, path, gain, members[path], scope_bytes)
        with self._lock:
            self._groups, self._within, self._processes = groups, within, process_notes

    @staticmethod
    def _group(context: RankContext, path: str, gain: int, members: int, scope_bytes: int) -> GroupCause:
        usage: Optional[int] = None
        protected = 0
        if path != "/":
            try:
                memory = context.sample.cgroup(path).memory
            except Unavailable:
                memory = None
            if memory is not None and memory.current_bytes is not None:
                usage = memory.current_bytes
                protected = min(usage, max(memory.min_bytes or 0, memory.low_bytes or 0))
        size = gain if usage is None else max(0, min(gain, usage - protected))
        growth = None if usage is None else context.growth(path, usage)
        counted = _counted(growth, min(1.0, size / usage), scope_bytes) if usage else 0
        return GroupCause(path, members, gain, usage, protected, size, growth, counted, scope_bytes)

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        group = self._groups.get(group_of(candidate))
        if group is None:
            return None
        if candidate.process is None:
            return group.points
        return group.points + self._within.get(candidate.process.pid, 0.0)

    def explain(self, candidate: Candidate, context: RankContext) -> Optional[str]:
        group = self._groups.get(group_of(candidate))
        if group is None:
            return None
        text = group.describe()
        if candidate.process is not None:
            pid = candidate.process.pid
            gain, growth, grown = self._processes.get(pid, (0, None, 0))
            grows = "growth unknown"
            if growth is not None:
                rate = f"{growth.bytes_per_s / 1e6:+.1f} MB/s over {growth.span_s:.1f} s"
                grows = f"grows {rate}, counted {human_bytes(grown)}"
            place = self._within.get(pid, 0.0)
            text += (
                f"; in it pid {pid} frees ~{human_bytes(gain)}, {grows} "
                f"(place {place:.3f}: the kernel's order on what a kill frees and growth)"
            )
        return text


@hookimpl
def guardian_scorers() -> list[Scorer]:
    return [Cause()]
