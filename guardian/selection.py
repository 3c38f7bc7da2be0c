"""Choosing a victim: Sample + Policy + plugins -> Ranking.

``Selector`` is what ``guardian rank`` and the daemon call, and the one way a victim is chosen,
a process or a whole group alike: it works out the scope's scale (``totalpages``), builds the
candidates and guardian's own exclusions (candidates.py: never-kill rules, ``[[protect]]``,
``[[ignore]]``, kills already in flight), asks every plugin's ``guardian_exclude`` hook (each
call isolated: a raising hook is reported, not fatal), and runs the policy's scorers through the
Ranker. ``guard()`` gives the actions the same never-kill and protect rules to ask again, on a
fresh read, right before each signal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Optional

from guardian.candidates import (
    Candidate,
    Exclusion,
    FactsOf,
    group_candidate,
    group_candidates,
    in_scope,
    memory_cgroup,
    process_candidates,
    spare_reason,
    spared_members,
    victim_refusal,
)
from guardian.config import Policy
from guardian.errors import ParseError, Unavailable
from guardian.history import Growth, Histories, process_key, process_usage
from guardian.host import CgroupLayout, Host, cgroup_ancestors, cgroup_path
from guardian.kinds import Mode
from guardian.plugins import Exclusions, Plugins
from guardian.ranking import RankContext, Ranker, Ranking
from guardian.records import Process
from guardian.rules import Facts
from guardian.sample import Sample
from guardian.sources.cgroups import read_v1_value
from guardian.sources.vmstat import parse_sysctl_value, read_sysctl

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def totalpages_for(sample: Sample, scope: Optional[str], page_size: int) -> tuple[int, str]:
    """The kernel's ``totalpages`` for an OOM in ``scope`` (mm/oom_kill.c: constrained_alloc()).

    Machine: MemTotal + SwapTotal in pages. Cgroup: the limit of the scope or of its nearest
    limited ancestor (the memcg whose limit an allocation in the scope hits first), plus
    min(swap limit, SwapTotal) when swappiness is not 0 (mm/memcontrol.c: mem_cgroup_get_max()).
    A scope with no limited cgroup above it OOMs machine-wide, and so does a scope that is not
    a cgroup path (the walk up from it would have nowhere to go).
    """
    mem = sample.meminfo
    swap_pages = mem.swap_total_bytes // page_size
    global_pages = mem.total_bytes // page_size + swap_pages
    try:
        start = cgroup_path(scope) if scope else "/"
    except ValueError:
        start = "/"
    for path in cgroup_ancestors(start):  # ends at the root for any string
        try:
            memory = sample.cgroup(path).memory
        except Unavailable:
            memory = None
        if memory is not None and memory.max_bytes is not None:
            pages = memory.max_bytes // page_size
            if swap_pages and _swappiness(sample, path, memory.source) != 0:
                swap_limit = _swap_limit_pages(sample, path, memory.source, memory.max_bytes, page_size)
                pages += min(swap_limit, swap_pages)
            return max(pages, 1), f"memcg {path}"
    return global_pages, "global"


def _swappiness(sample: Sample, path: str, source: str) -> int:
    """The group's swappiness: v1 memory.swappiness, else vm.swappiness (the kernel default 60
    where that is missing or unreadable, as read_sysctl documents)."""
    host = sample.host
    if source == "v1":
        try:
            return parse_sysctl_value(
                host.read_text(host.cgroup_v1_memory_dir(path) + "/memory.swappiness"), "swappiness"
            )
        except (OSError, Unavailable, ParseError):
            pass  # the group's own value cannot be read: the machine's is the next best guess
    # cgroup v2 has no per-group file: groups take vm.swappiness
    return read_sysctl(host, "swappiness", 60)


def _swap_limit_pages(sample: Sample, path: str, source: str, max_bytes: int, page_size: int) -> int:
    """How much swap the group may use, in pages; "no limit" (1 << 62) where that cannot be read,
    as the kernel takes a missing limit."""
    memory = sample.cgroup(path).memory
    if source == "v2":
        limit = memory.swap_max_bytes
        return (1 << 62) if limit is None else limit // page_size
    try:  # v1: memsw.limit - limit
        memsw = read_v1_value(sample.host, path, "memory.memsw.limit_in_bytes")
    except Unavailable:
        return 1 << 62
    return (1 << 62) if memsw is None else max(0, memsw - max_bytes) // page_size


Busy = Callable[[Process], Optional[str]]


def _no_growth(_path: str, _current: int) -> Optional[Growth]:
    return None


def _no_process_growth(_process: Process) -> Optional[Growth]:
    return None


def _growth_from(history: Histories, now_us: int) -> Callable[[str, int], Optional[Growth]]:
    def growth(path: str, current: int) -> Optional[Growth]:
        return history.cgroups.growth(path, now_us, current)

    return growth


def _process_growth_from(history: Histories, now_us: int) -> Callable[[Process], Optional[Growth]]:
    def growth(process: Process) -> Optional[Growth]:
        return history.processes.growth(process_key(process), now_us, process_usage(process))

    return growth


def _not_busy(_process: Process) -> Optional[str]:
    return None


def busy_with(pids: Collection[int]) -> Busy:
    """The ``busy`` check for processes guardian is already killing (a victim in its grace
    period, the members of a group being killed): chosen again, they would be claimed twice."""
    taken = frozenset(pids)

    def busy(process: Process) -> Optional[str]:
        return "guardian is already killing it" if process.pid in taken else None

    return busy


def facts_from(sample: Sample, layout: CgroupLayout) -> FactsOf:
    """Facts of a process for the rules, its cmdline and exe read through ``sample`` on demand."""

    def facts_of(process: Process, cgroup: Optional[str]) -> Facts:
        pid = process.pid
        return Facts(
            comm=process.comm,
            cgroup=cgroup if cgroup is not None else memory_cgroup(process, layout),
            uid=process.uid,
            cmdline=lambda: sample.cmdline(pid),
            exe=lambda: sample.exe(pid),
        )

    return facts_of


class Selector:
    """Ranks candidates for one policy with one plugin set. Keep one per daemon."""

    def __init__(self, policy: Policy, plugins: Plugins) -> None:
        self.policy = policy
        self.plugins = plugins
        # one Isolation for a plugin's exclude hook and its scorers: a plugin stuck in one is
        # not started in the other while that run lasts
        plugins.check_settings(policy)
        self.ranker = Ranker(plugins.resolve(policy), policy.plugins.budget_ms, plugins.isolation)

    @property
    def uses_growth(self) -> bool:
        """Some scorer of the policy, with a weight, reads growth (Scorer.uses_growth)."""
        return any(offered.uses_growth and weight for offered, weight in self.ranker.scorers)

    def context(
        self,
        sample: Sample,
        mode: Mode = "process",
        scope: Optional[str] = None,
        history: Optional[Histories] = None,
    ) -> RankContext:
        totalpages, source = totalpages_for(sample, scope, PAGE_SIZE)
        facts_of = facts_from(sample, sample.host.cgroup_layout())
        return RankContext(
            growth=_no_growth if history is None else _growth_from(history, sample.time_us),
            process_growth=_no_process_growth
            if history is None
            else _process_growth_from(history, sample.time_us),
            sample=sample,
            policy=self.policy,
            mode=mode,
            scope=scope,
            page_size=PAGE_SIZE,
            totalpages=totalpages,
            totalpages_source=source,
            capacity_bytes=sample.meminfo.total_bytes,
            self_pid=sample.host.self_pid(),
            facts_of=facts_of,
        )

    def rank(
        self,
        sample: Sample,
        mode: Mode = "process",
        scope: Optional[str] = None,
        busy: Busy = _not_busy,
        history: Optional[Histories] = None,
        explained: int = 0,
    ) -> Ranking:
        """Every candidate in ``scope``: processes, or cgroups for a group kill. ``history``
        gives the scorers each group's growth (history.py); the first ``explained`` candidates
        (at least the first two) come with each scorer's note."""
        context = self.context(sample, mode, scope, history)
        layout = sample.host.cgroup_layout()
        processes = sample.processes_in(scope)
        if mode == "process":
            candidates, excluded = process_candidates(
                processes, layout, scope, self.policy, context.self_pid, context.facts_of, busy
            )
            candidates = [self._with_oom_group(sample, context, c, scope, processes) for c in candidates]
        elif mode == "cgroup":

            def oom_group(path: str) -> bool:
                try:
                    return bool(sample.cgroup(path).memory.oom_group)
                except Unavailable:
                    return False

            candidates, excluded = group_candidates(
                processes,
                layout,
                sample.cgroup_paths,
                oom_group,
                scope,
                self.policy,
                context.self_pid,
                context.facts_of,
                busy,
            )
        else:
            raise ValueError(f"mode must be 'process' or 'cgroup', got {mode!r}")
        ranking = self._finish(context, candidates, excluded, explained)
        if history is not None and self.uses_growth:
            history.record_processes(sample.time_us, processes)  # read anyway: the next ranking's base
        return ranking

    def rank_group(
        self, sample: Sample, group: str, busy: Busy = _not_busy, history: Optional[Histories] = None
    ) -> Ranking:
        """The cgroup ``group`` itself as the one candidate of a group kill (a rule's ``action =
        "group"``), through the same exclusions and scorers as every other candidate."""
        context = self.context(sample, "cgroup", group, history)
        layout = sample.host.cgroup_layout()
        members = [
            p
            for p in sample.processes_in(group)
            if not p.is_kernel_thread and in_scope(memory_cgroup(p, layout), group)
        ]
        candidate, exclusion = group_candidate(
            group, members, self.policy, context.self_pid, context.facts_of, layout, busy
        )
        return self._finish(context, [candidate] if candidate else [], [exclusion] if exclusion else [])

    def _finish(
        self, context: RankContext, candidates: list[Candidate], excluded: list[Exclusion], explained: int = 0
    ) -> Ranking:
        hooks = self._plugin_exclusions(candidates, context)
        ranking = self.ranker.rank(context, hooks.kept, [*excluded, *hooks.excluded], explained)
        return replace(
            ranking, failures=(*ranking.failures, *hooks.failures), exclude_hooks=tuple(hooks.asked)
        )

    def _with_oom_group(
        self,
        sample: Sample,
        context: RankContext,
        candidate: Candidate,
        scope: Optional[str],
        processes: Sequence[Process],
    ) -> Candidate:
        """A process in a memory.oom.group group dies with its whole group: the highest such
        group from the process's cgroup up to and including the scope, as
        mm/memcontrol.c: mem_cgroup_get_oom_group() walks from the victim's memcg to the OOM
        domain (for the machine, up to the root). The group's never-kill members are spared."""
        if candidate.process is None or not candidate.cgroup:
            return candidate
        highest = None
        stop = scope.rstrip("/") if scope else "/"
        for path in cgroup_ancestors(candidate.cgroup):
            try:
                if sample.cgroup(path).memory.oom_group:
                    highest = path
            except Unavailable:
                break
            if path == stop:
                break
        if highest is None:
            return candidate
        layout = sample.host.cgroup_layout()
        members = [p for p in processes if in_scope(memory_cgroup(p, layout), highest)]
        spared = spared_members(members, context.self_pid, self.policy, context.facts_of, layout)
        return replace(candidate, kill_group=highest, spared=spared)

    def guard(self, host: Host, whole_group: bool = False) -> Callable[[Process], Optional[str]]:
        """What the actions ask right before each signal, on the process as it is then: why it
        must not die now (never-kill rules and [[protect]]; for a chosen victim also [[ignore]]),
        or None. Facts such as cmdline are read fresh."""
        layout = host.cgroup_layout()
        self_pid = host.self_pid()
        policy = self.policy
        check = spare_reason if whole_group else victim_refusal

        def guard(process: Process) -> Optional[str]:
            verdict = check(process, self_pid, policy, facts_from(Sample(host, 0), layout), layout)
            return None if verdict is None else verdict[0]

        return guard

    def _plugin_exclusions(self, candidates: list[Candidate], context: RankContext) -> Exclusions:
        return self.plugins.exclude(candidates, context, self.policy.plugins.budget_ms)
