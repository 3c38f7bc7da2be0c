"""The kernel's own OOM kills, as guardian sees them: one record per kill, from two sources.

* The kernel log (sources/kmsg.py): every kill, with its victim, its memory cgroup, the OOM's
  constraint and domain; reported as soon as the line is read.
* The ``oom_kill`` counter of each watched group (cgroup2 ``memory.events``, v1
  ``memory.oom_control``): a kill there that the log did not report (the log unreadable, in
  a container or without CAP_SYSLOG; records overwritten before guardian read them).

``OomLedger`` keeps the two from reporting one kill twice. It is pure: the engine hands it the
kills the log reported (where, when) and the counters it read (when), and it answers how many
kills each group's counter shows that the log did not.

How the counters count (kernel.md, section 4): ``__oom_kill_process()`` raises the counter of
the victim's memory cgroup; on cgroup2 every ancestor's ``memory.events`` counts it too, on
cgroup v1 only the group's own. So on cgroup2 a kill is attributed to the deepest watched group
that holds the victim, and a group's own share is its counter minus those of the nearest
watched groups below it. The counter rises a few instructions before the log line is printed
(both in ``__oom_kill_process()``), so a rise the log has not explained yet waits ``HOLD_US``
for the line; a kill the log reported waits ``CREDIT_US`` for the counter, which guardian reads
at the latest at the next calm full look (engine.CALM_MAX_S).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Optional

from guardian.frozen import frozen
from guardian.host import cgroup_ancestors
from guardian.ranking import Ranked
from guardian.records import KernelOomKill

HOLD_US = 2_000_000  # a counter's rise waits this long for the log's line of the same kill
CREDIT_US = 120_000_000  # a logged kill waits this long for the counter (2 x the calm look)
CREDITS_KEPT = 1024  # logged kills remembered per group at most (a flood forgets the oldest)

Source = Literal["kmsg", "memory.events"]


@frozen
class SeenKill:
    """One kernel OOM kill guardian saw (``count`` kills for a counter that rose by more).

    ``cgroup`` is the victim's memory cgroup (from the log), or the watched group whose counter
    rose (the victim was in it or, on cgroup2, below it). ``scope`` is where the OOM was: the
    memory cgroup whose limit was hit, None for the machine; ``scope_known`` is False when the
    log's report did not say (dump_header() rate-limited, a kernel before 5.0). ``rule`` names
    the policy's rule that watches that scope (None: none does), and ``choice`` is whom the
    policy ranks first there now, with ``choice_note`` saying why there is none."""

    source: Source
    seen_us: int  # CLOCK_MONOTONIC when guardian read it
    cgroup: Optional[str]
    scope: Optional[str]
    scope_known: bool = True
    kill: Optional[KernelOomKill] = None  # the log's report (source "kmsg")
    count: int = 1
    rule: Optional[str] = None
    choice: Optional[Ranked] = None
    choice_note: str = ""


def kill_location(kill: KernelOomKill) -> Optional[str]:
    """The memory cgroup the victim was in, or the nearest group the report says held it (an
    oom.group member's group, the OOM's memcg); None when the report names none."""
    if kill.task_memcg is not None:
        return kill.task_memcg
    if kill.oom_group_memcg is not None:
        return kill.oom_group_memcg
    return kill.oom_memcg if kill.memcg_oom else None


def kill_scope(kill: KernelOomKill) -> tuple[Optional[str], bool]:
    """Where the OOM was: (the memcg whose limit was hit, or None for the machine; known)."""
    if kill.memcg_oom:
        return kill.oom_memcg, kill.oom_memcg is not None
    return None, True


def _remember(times: list[int], now_us: int) -> None:
    times.append(now_us)
    if len(times) > CREDITS_KEPT:
        del times[0]


@dataclass
class OomLedger:
    """De-duplicates the kernel log's kills against the watched groups' oom_kill counters.

    ``hierarchical``: the counters count the groups below too (cgroup2's memory.events)."""

    hierarchical: bool
    hold_us: int = HOLD_US
    credit_us: int = CREDIT_US
    counts: dict[str, int] = field(default_factory=dict)  # each group's counter at the last look
    marks: dict[str, int] = field(default_factory=dict)  # the highest own share seen (below)
    parents: dict[str, Optional[str]] = field(default_factory=dict)  # nearest watched group above
    credits: dict[str, list[int]] = field(default_factory=dict)  # logged kills, not yet counted
    unplaced: list[int] = field(default_factory=list)  # logged kills whose cgroup is unknown
    pending: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (due_us, kills)

    def owner(self, where: str) -> Optional[str]:
        """The watched group whose counter a kill in ``where`` raises (on cgroup2 the deepest
        that holds it; on v1 only ``where`` itself), or None."""
        if not self.hierarchical:
            return where if where in self.counts else None
        return next((p for p in cgroup_ancestors(where) if p in self.counts), None)

    def logged(self, where: Optional[str], now_us: int) -> None:
        """The log reported a kill in memory cgroup ``where`` (None: it did not say)."""
        self._expire(now_us)
        if where is None:
            group = next((g for g, due in self.pending.items() if due), None)
            if group is None:
                _remember(self.unplaced, now_us)
            else:
                self._take_pending(group)
            return
        group = self.owner(where)
        if group is None:
            return  # no watched group counts it
        if self.pending.get(group):
            self._take_pending(group)
        else:
            _remember(self.credits.setdefault(group, []), now_us)

    def _take_pending(self, group: str) -> None:
        due, kills = self.pending[group][0]
        if kills > 1:
            self.pending[group][0] = (due, kills - 1)
        else:
            self.pending[group].pop(0)
        if not self.pending[group]:
            del self.pending[group]

    def _expire(self, now_us: int) -> None:
        oldest = now_us - self.credit_us
        for group in list(self.credits):
            kept = [t for t in self.credits[group] if t > oldest]
            if kept:
                self.credits[group] = kept
            else:
                del self.credits[group]
        self.unplaced = [t for t in self.unplaced if t > oldest]

    def _own(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Each group's own share: its counter, less (on cgroup2) those of the nearest watched
        groups below it, which count their kills themselves."""
        own = dict(counts)
        if self.hierarchical:
            for path, parent in self.parents.items():
                if parent is not None:
                    own[parent] -= counts[path]
        return own

    def counted(self, counts: Mapping[str, int], now_us: int, hold: bool) -> list[tuple[str, int]]:
        """The watched groups' counters read now (a group whose counter could not be read left
        out). Returns the kills due for a report as seen in a counter alone: those of this look
        at once when ``hold`` is False (no log is followed), else those whose hold is over."""
        self._expire(now_us)
        parents = self._parents(counts)
        fresh = {p for p in counts if p not in self.counts or counts[p] < self.counts[p]}
        for path in counts:
            # a group new, recreated, or whose set of watched groups below changed: its share
            # starts again from here (a kill in it before this look is in its base)
            below = [c for c, up in parents.items() if up == path]
            before = [c for c, up in self.parents.items() if up == path]
            if path in fresh or sorted(below) != sorted(before) or any(c in fresh for c in below):
                fresh.add(path)
        self.counts, self.parents = dict(counts), parents
        own = self._own(counts)
        for path in list(self.marks):
            if path not in counts:
                del self.marks[path]
                self.credits.pop(path, None)
                self.pending.pop(path, None)
        for path, share in own.items():
            if path in fresh:
                self.marks[path] = share
                self.credits.pop(path, None)  # a kill the log reported there is in the base
                continue
            rise = share - self.marks[path]
            if rise <= 0:
                continue  # a share that dipped (read between a kill's two counters) stays marked
            self.marks[path] = share
            rise -= self._credit(path, rise)
            if rise > 0:
                self.pending.setdefault(path, []).append((now_us + self.hold_us if hold else now_us, rise))
        return self.due(now_us)

    def _credit(self, group: str, rise: int) -> int:
        """How many of ``rise`` kills the log has already reported (taken from its credits)."""
        credits = self.credits.get(group, [])
        taken = min(rise, len(credits))
        del credits[:taken]
        if not credits:
            self.credits.pop(group, None)
        unplaced = min(rise - taken, len(self.unplaced))
        del self.unplaced[:unplaced]
        return taken + unplaced

    def _parents(self, counts: Mapping[str, int]) -> dict[str, Optional[str]]:
        if not self.hierarchical:
            return {}
        return {p: next((a for a in cgroup_ancestors(p)[1:] if a in counts), None) for p in counts}

    def due(self, now_us: int) -> list[tuple[str, int]]:
        """Counter rises whose hold is over, the log having not reported them: (group, kills)."""
        out: list[tuple[str, int]] = []
        for group in list(self.pending):
            kept = []
            for due_us, kills in self.pending[group]:
                if due_us <= now_us:
                    out.append((group, kills))
                else:
                    kept.append((due_us, kills))
            if kept:
                self.pending[group] = kept
            else:
                del self.pending[group]
        return out

    def next_due_us(self) -> Optional[int]:
        """When the earliest held rise is due, or None."""
        return min((due for held in self.pending.values() for due, _ in held), default=None)
