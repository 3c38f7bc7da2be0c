"""What the daemon counts and last saw, in memory, for the Prometheus metrics.

The loop writes here and nothing else: counters are plain integers in dicts keyed by their
labels, and the gauges are copied from what the loop has read already (the Sample of a full
look, the idle fast path's own reads, the stall meters of the policy's state). Nothing here
reads a file. The exporter (guardian/daemon/exporter.py, which alone imports prometheus_client)
reads these values from its own thread when it is scraped or writes its text file.

Sharing without locks: the loop only ever assigns (a number, a whole new record or dict) or
adds a key to a dict, and the exporter takes ``dict.copy()`` of a dict before iterating it
(one C call under the GIL: it sees the dict before or after the loop's change, never halfway).
So a scrape can never hold up the loop on a lock, and the loop never waits on a scrape.

Cardinality is bounded by the policy: rule labels are the policy's rules (``machine``,
``cgroup[N]``), actions, outcomes, levels and conditions are the closed sets of guardian.kinds,
plugins are the loaded ones, and the per-cgroup series cover only the cgroups the rules watch,
at most ``[metrics] max_cgroups`` of them (in path order; ``guardian_watched_cgroups`` says how
many there are in all).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

from guardian.frozen import frozen
from guardian.kinds import Condition, KillAction, Level
from guardian.records import CgroupMemory, MemInfo, Pressure
from guardian.sources.psi import StallMeter
from guardian.text import shown

# decision latency: from the look that saw the trigger to the first signal (or the decision
# not to send one); guardian's own measurements put it at 1-30 ms, a ranking over a few
# thousand processes at ~100 ms, and a plugin at its budget (250 ms) beyond that
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# the kernel's CONSTRAINT_* of an OOM kill (mm/oom_kill.c: oom_constraint_text), as labels
KERNEL_CONSTRAINTS = {
    "CONSTRAINT_NONE": "global",
    "CONSTRAINT_CPUSET": "cpuset",
    "CONSTRAINT_MEMORY_POLICY": "memory_policy",
    "CONSTRAINT_MEMCG": "memcg",
}


@frozen
class Stall:
    """One PSI source as last seen: the live stall rates (percent, from the stall meter over
    ``total``; None before it has two readings) and the kernel's avg10 and totals."""

    seen_us: int
    some_pct: Optional[float]
    full_pct: Optional[float]
    pressure: Optional[Pressure]


@frozen
class CgroupSeen:
    """A watched cgroup as last seen: its memory use and limit, and its memory stall."""

    seen_us: int
    current_bytes: Optional[int]
    max_bytes: Optional[int]
    stall: Optional[Stall] = None

    @property
    def headroom_bytes(self) -> Optional[int]:
        if self.current_bytes is None or self.max_bytes is None:
            return None
        return max(0, self.max_bytes - self.current_bytes)


@dataclass
class Histogram:
    """Observations in cumulative-ready buckets (each observation counted once, in the first
    bucket whose bound holds it; the exporter sums them up)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


def _stall(meter: Optional[StallMeter], pressure: Optional[Pressure], seen_us: int) -> Optional[Stall]:
    if meter is None and pressure is None:
        return None
    rate = meter.rate() if meter is not None else None
    some = None if rate is None else rate.some_pct
    full = None if rate is None else rate.full_pct
    return Stall(seen_us, some, full, pressure)


class Metrics:
    """The daemon's counters and last readings. ``on`` is False while no endpoint or text
    file reads them: the loop then skips copying its readings here (the counters are counted
    anyway: an integer added to, at events that are rare)."""

    def __init__(self) -> None:
        self.on = False
        self.max_cgroups = 0
        # counters, by their labels
        self.looks: dict[str, int] = {"quick": 0, "full": 0}
        self.wakeups: dict[str, int] = {}
        self.triggers: dict[tuple[str, Condition, Level], int] = {}
        self.kills: dict[tuple[KillAction, str, str], int] = {}
        self.not_done: dict[tuple[str, str], int] = {}
        self.plugin_failures: dict[tuple[str, str], int] = {}
        self.kernel_oom_kills: dict[tuple[str, str], int] = {}
        self.policy_loads: dict[str, int] = {}
        self.decision_seconds = Histogram()
        # gauges: replaced whole by the loop, never changed in place
        self.meminfo: Optional[MemInfo] = None
        self.meminfo_us: Optional[int] = None
        self.available: Optional[tuple[int, int, Optional[int]]] = None  # (at, MemAvailable, SwapFree)
        self.stall: Optional[Stall] = None
        self.cgroups: dict[str, CgroupSeen] = {}
        self.watched = 0
        self.kills_in_flight = 0
        self._crossed: frozenset[tuple[str, Optional[str], Condition, Level]] = frozenset()

    def configure(self, on: bool, max_cgroups: int) -> None:
        self.on = on
        self.max_cgroups = max_cgroups
        if not on:
            self.cgroups = {}

    # --- counted by the loop ----------------------------------------------------------------------

    def look(self, full: bool) -> None:
        self.looks["full" if full else "quick"] += 1

    def woke(self, source: str) -> None:
        """A wait ended: ``kernel`` (PSI, memory.events, a usage threshold, a kill's pidfd, a
        cgroup made or removed), ``signal`` (a signal or a reload), or ``timer``."""
        self.wakeups[source] = self.wakeups.get(source, 0) + 1

    def crossed(self, triggers: Iterable[tuple[str, Optional[str], Condition, Level]]) -> None:
        """The triggers of a full look: each (rule, scope, condition, level) that did not hold at
        the previous full look is counted once, by rule, condition and level."""
        now = frozenset(triggers)
        if not now and not self._crossed:
            return
        for rule, _scope, condition, level in now - self._crossed:
            key = (rule, condition, level)
            self.triggers[key] = self.triggers.get(key, 0) + 1
        self._crossed = now

    def decision(self, action: KillAction, outcome: str, rule: str) -> None:
        """A kill ended (or never got going), with its outcome."""
        key = (action, outcome, rule)
        self.kills[key] = self.kills.get(key, 0) + 1

    def latency(self, seconds: float) -> None:
        """From the look that saw a trigger to the first signal (or the decision to send none)."""
        self.decision_seconds.observe(max(0.0, seconds))

    def no_kill(self, rule: str, outcome: str) -> None:
        key = (rule, outcome)
        self.not_done[key] = self.not_done.get(key, 0) + 1

    def plugin_failure(self, plugin: str, hook: str) -> None:
        # a scorer's hook is SCORER.prepare / SCORER.score: the scorers are the plugin's own,
        # a bounded set; the names are escaped (a plugin chose them)
        key = (shown(plugin), shown(hook))
        self.plugin_failures[key] = self.plugin_failures.get(key, 0) + 1

    def policy_loaded(self, result: str) -> None:
        self.policy_loads[result] = self.policy_loads.get(result, 0) + 1

    def kernel_oom_kill(self, constraint: Optional[str], covered: bool) -> None:
        """The kernel's OOM killer killed a process: ``constraint`` as the kernel's report gives
        it (``CONSTRAINT_MEMCG``, ...; None when its summary line was rate-limited away), and
        whether a guardian rule watched that scope."""
        label = "unknown" if constraint is None else KERNEL_CONSTRAINTS.get(constraint, "other")
        key = (label, "true" if covered else "false")
        self.kernel_oom_kills[key] = self.kernel_oom_kills.get(key, 0) + 1

    # --- last readings, copied from what the loop read ------------------------------------------

    def quick_memory(self, now_us: int, available: int, swap_free: Optional[int]) -> None:
        """MemAvailable (and SwapFree) as the idle fast path read them."""
        self.available = (now_us, available, swap_free)

    def quick_cgroup(self, path: str, now_us: int, current: int) -> None:
        """A watched group's memory.current as the idle fast path read it."""
        seen = self.cgroups.get(path)
        if seen is not None:
            self.cgroups[path] = CgroupSeen(now_us, current, seen.max_bytes, seen.stall)

    def full_look(
        self,
        now_us: int,
        meminfo: Optional[MemInfo],
        machine_stall: tuple[Optional[StallMeter], Optional[Pressure]],
        watched: list[str],
        cgroups: Mapping[str, tuple[Optional[CgroupMemory], Optional[StallMeter], Optional[Pressure]]],
        in_flight: int,
    ) -> None:
        """What a full look read: meminfo, the machine's PSI, and each watched group it read
        (``cgroups``: only the first ``max_cgroups`` of ``watched`` are asked for)."""
        if meminfo is not None:
            self.meminfo, self.meminfo_us = meminfo, now_us
            self.available = (now_us, meminfo.available_bytes, meminfo.swap_free_bytes)
        stall = _stall(*machine_stall, now_us)
        if stall is not None:
            self.stall = stall
        previous = self.cgroups
        seen: dict[str, CgroupSeen] = {}
        for path, (memory, meter, pressure) in cgroups.items():
            old = previous.get(path)
            group_stall = _stall(meter, pressure, now_us) or (old.stall if old else None)
            if memory is not None:
                seen[path] = CgroupSeen(now_us, memory.current_bytes, memory.max_bytes, group_stall)
            elif old is not None:
                seen[path] = CgroupSeen(old.seen_us, old.current_bytes, old.max_bytes, group_stall)
            else:
                seen[path] = CgroupSeen(now_us, None, None, group_stall)
        self.cgroups = seen
        self.watched = len(watched)
        self.kills_in_flight = in_flight
