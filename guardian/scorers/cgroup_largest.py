"""``cgroup_largest``: the largest cgroup first, as Meta's oomd ranks (kill_by_memory_size_or_growth).

For each cgroup (a cgroup candidate, or the cgroup of a process candidate):

* effective usage = ``memory.current - protection``, protection =
  ``min(current, max(memory.min, memory.low))``: memory the kernel itself shields is not held
  against a group;
* three tiers compared first, as oomd's lexicographic phases:
  2. the group holds at least ``SIZE_THRESHOLD`` (50 %) of its siblings' total usage;
  1. it grows: ``current / decayed average >= MIN_GROWTH_RATIO`` (1.25), the average updated each
     ranking as ``avg * 3/4 + current / 4``, and it is in the top ``GROWING_SIZE_PERCENTILE`` (80)
     by size among its siblings;
  0. the rest;
* within a tier, effective usage in per-mille of the scope's memory (the scope cgroup's limit, or
  MemTotal for the machine).

So score = tier * 1000 + per-mille (0..3000). Extended attributes on a cgroup directory adjust
it the way systemd-oomd and oomd honour them: ``trusted.oomd_prefer`` adds ``PREFER_POINTS``,
``trusted.oomd_avoid`` / ``user.oomd_avoid`` subtract them, and ``user.oomd_omit`` keeps the group
out of the ranking (a guardian_exclude hook). systemd-oomd reads omit on the candidate group
only; guardian also honours it on the candidate's ancestors inside the scope, so omitting a unit
covers the scopes and sub-groups systemd creates below it. As systemd-oomd does, xattrs count only on groups
owned by root, so an unprivileged user cannot shield their own processes.

A process scores as its group: among processes, this favours those in the biggest group (the
"kill one process of the largest group" mode systemd#25853 asks for); kernel_badness then
orders processes within the group.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import ClassVar, Optional

from guardian.api import (
    Candidate,
    CgroupMemory,
    RankContext,
    Sample,
    Scorer,
    Unavailable,
    cgroup_ancestors,
    hookimpl,
    shown,
)

SIZE_THRESHOLD = 0.50
MIN_GROWTH_RATIO = 1.25
GROWING_SIZE_PERCENTILE = 80
PREFER_POINTS = 10_000.0  # beyond any tier: a preferred group goes first, an avoided one last
# Growth averages kept at most, least recently ranked dropped first. The daemon ranks for as long
# as it runs and pods come and go by the thousand on a busy node: without a bound the averages
# of groups long gone would grow without end. 4096 is several times the containers of a full
# node (110 pods by default), and costs well under a megabyte.
MAX_AVERAGES = 4096

XATTR_PREFER = ("trusted.oomd_prefer",)
XATTR_AVOID = ("trusted.oomd_avoid", "user.oomd_avoid")
XATTR_OMIT = ("user.oomd_omit",)


def effective_usage(memory: CgroupMemory) -> int:
    current = memory.current_bytes or 0
    protection = min(current, max(memory.min_bytes or 0, memory.low_bytes or 0))
    return current - protection


def _parent(path: str) -> str:
    # rpartition: "system.slice" (no "/") has the root as parent, never itself
    return path.rpartition("/")[0] or "/"


def _memory(sample: Sample, path: Optional[str]) -> Optional[CgroupMemory]:
    if not path:
        return None
    try:
        return sample.cgroup(path).memory
    except Unavailable:
        return None


def scope_bytes(context: RankContext) -> int:
    memory = _memory(context.sample, context.scope)
    if memory is not None and memory.max_bytes:
        return memory.max_bytes
    return context.sample.meminfo.total_bytes


class CgroupLargest(Scorer):
    name: ClassVar[str] = "cgroup_largest"
    kinds: ClassVar[frozenset[str]] = frozenset({"process", "cgroup"})
    unit: ClassVar[str] = "tier x 1000 + effective usage in per-mille of the scope"

    def __init__(self) -> None:
        # decayed average usage by cgroup path across rankings, least recently ranked first
        self._avg: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._scores: dict[str, float] = {}

    def prepare(self, context: RankContext, candidates: list[Candidate]) -> None:
        sample = context.sample
        groups = sorted({c.cgroup for c in candidates if c.cgroup})
        usage = {}
        for path in groups:
            memory = _memory(sample, path)
            if memory is not None and memory.current_bytes is not None:
                usage[path] = memory
        siblings: dict[str, list[str]] = {}
        for path in usage:
            siblings.setdefault(_parent(path), []).append(path)
        total = max(scope_bytes(context), 1)

        with self._lock:
            growth = {}
            for path, memory in usage.items():
                current = float(memory.current_bytes or 0)
                previous = self._avg.get(path)
                growth[path] = current / previous if previous else 1.0
                self._avg[path] = current if previous is None else previous * 0.75 + current * 0.25
                self._avg.move_to_end(path)
            while len(self._avg) > MAX_AVERAGES:
                self._avg.popitem(last=False)

        scores = {}
        for _parent_path, members in siblings.items():
            sizes = sorted((usage[p].current_bytes or 0) for p in members)
            family = sum(sizes) or 1
            # the size a group must reach to be in the top GROWING_SIZE_PERCENTILE
            cut = sizes[int(len(sizes) * (100 - GROWING_SIZE_PERCENTILE) / 100)] if sizes else 0
            for path in members:
                current = usage[path].current_bytes or 0
                if current >= SIZE_THRESHOLD * family:
                    tier = 2
                elif growth[path] >= MIN_GROWTH_RATIO and current >= cut:
                    tier = 1
                else:
                    tier = 0
                permille = 1000.0 * effective_usage(usage[path]) / total
                scores[path] = tier * 1000 + min(permille, 999.0) + self._xattr_points(context, path)
        self._scores = scores

    @staticmethod
    def _xattr_points(context: RankContext, path: str) -> float:
        attrs = context.sample.host.cgroup_xattrs(path, XATTR_PREFER + XATTR_AVOID)
        points = 0.0
        if any(name in attrs for name in XATTR_PREFER):
            points += PREFER_POINTS
        if any(name in attrs for name in XATTR_AVOID):
            points -= PREFER_POINTS
        return points

    def score(self, candidate: Candidate, context: RankContext) -> Optional[float]:
        if candidate.cgroup is None:
            return None
        return self._scores.get(candidate.cgroup)


@hookimpl
def guardian_scorers() -> list[Scorer]:
    return [CgroupLargest()]


class _OmitMemo:
    """Which cgroups carry user.oomd_omit, read once per cgroup per Sample: a ranking asks for
    every candidate, and a thousand processes in one service must not cost a thousand walks of
    getxattr calls (the hook runs under the plugin budget, and a candidate it has not reached
    when the budget runs out would lose its omit)."""

    def __init__(self) -> None:
        self._sample: Optional[Sample] = None
        self._marked: dict[str, bool] = {}
        self._lock = threading.Lock()

    def marked(self, sample: Sample, path: str) -> bool:
        with self._lock:
            if sample is not self._sample:
                self._sample, self._marked = sample, {}
            found = self._marked.get(path)
        if found is None:
            found = bool(sample.host.cgroup_xattrs(path, XATTR_OMIT))
            with self._lock:
                if sample is self._sample:
                    self._marked[path] = found
        return found


_OMIT = _OmitMemo()


@hookimpl
def guardian_exclude(candidate: Candidate, context: RankContext) -> Optional[str]:
    if candidate.cgroup is None or "cgroup_largest" not in context.policy.scorers:
        return None
    for path in cgroup_ancestors(candidate.cgroup):  # ends at the root for any string
        if _OMIT.marked(context.sample, path):
            return f"cgroup {shown(path)} is marked user.oomd_omit (ManagedOOMPreference=omit)"
    return None
