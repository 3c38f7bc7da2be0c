"""Choosing a victim: Sample + Policy + plugins -> Ranking.

``Selector`` is what ``guardian rank`` and the daemon call: it works out the scope's scale
(``totalpages``), builds the candidates and guardian's own exclusions, asks every plugin's
``guardian_exclude`` hook (each call isolated: a raising hook is reported, not fatal), and runs
the policy's scorers through the Ranker.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional

from guardian.candidates import (
    Candidate,
    Exclusion,
    group_candidates,
    memory_cgroup,
    process_candidates,
)
from guardian.config import Policy
from guardian.errors import ParseError, Unavailable
from guardian.host import cgroup_ancestors, cgroup_path
from guardian.plugins import Plugins
from guardian.ranking import RankContext, Ranker, Ranking, ScorerFailure
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


class Selector:
    """Ranks candidates for one policy with one plugin set. Keep one per daemon."""

    def __init__(self, policy: Policy, plugins: Plugins) -> None:
        self.policy = policy
        self.plugins = plugins
        self.ranker = Ranker(plugins.resolve(policy), policy.plugins.budget_ms)

    def context(self, sample: Sample, mode: str = "process", scope: Optional[str] = None) -> RankContext:
        totalpages, source = totalpages_for(sample, scope, PAGE_SIZE)
        layout = sample.host.cgroup_layout()

        def facts_of(process: Process, cgroup: Optional[str]) -> Facts:
            pid = process.pid
            return Facts(
                comm=process.comm,
                cgroup=cgroup if cgroup is not None else memory_cgroup(process, layout),
                uid=process.uid,
                cmdline=lambda: sample.cmdline(pid),
                exe=lambda: sample.exe(pid),
            )

        return RankContext(
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

    def rank(self, sample: Sample, mode: str = "process", scope: Optional[str] = None) -> Ranking:
        context = self.context(sample, mode, scope)
        layout = sample.host.cgroup_layout()
        if mode == "process":
            candidates, excluded = process_candidates(
                sample.processes_in(scope), layout, scope, self.policy, context.self_pid, context.facts_of
            )
        elif mode == "cgroup":

            def oom_group(path: str) -> bool:
                try:
                    return bool(sample.cgroup(path).memory.oom_group)
                except Unavailable:
                    return False

            candidates, excluded = group_candidates(
                sample.processes_in(scope),
                layout,
                sample.cgroup_paths,
                oom_group,
                scope,
                self.policy,
                context.self_pid,
                context.facts_of,
            )
        else:
            raise ValueError(f"mode must be 'process' or 'cgroup', got {mode!r}")
        candidates = [self._with_oom_group(sample, c, scope) for c in candidates]
        candidates, hook_excluded, hook_failures = self._plugin_exclusions(candidates, context)
        ranking = self.ranker.rank(context, candidates, [*excluded, *hook_excluded])
        if hook_failures:
            ranking = replace(ranking, failures=(*ranking.failures, *hook_failures))
        return ranking

    @staticmethod
    def _with_oom_group(sample: Sample, candidate: Candidate, scope: Optional[str]) -> Candidate:
        """A process in a memory.oom.group group dies with its whole group (the highest such
        group below the scope, as mem_cgroup_get_oom_group() walks)."""
        if candidate.process is None or not candidate.cgroup:
            return candidate
        highest = None
        path = candidate.cgroup
        stop = (scope or "").rstrip("/")
        while path and path != stop:
            try:
                if sample.cgroup(path).memory.oom_group:
                    highest = path
            except Unavailable:
                break
            path = path.rsplit("/", 1)[0]
        if highest is None:
            return candidate
        return replace(candidate, kill_group=highest)

    def _plugin_exclusions(
        self, candidates: list[Candidate], context: RankContext
    ) -> tuple[list[Candidate], list[Exclusion], list[ScorerFailure]]:
        impls = self.plugins.manager.hook.guardian_exclude.get_hookimpls()
        kept: list[Candidate] = []
        excluded: list[Exclusion] = []
        failures: dict[str, ScorerFailure] = {}
        for candidate in candidates:
            reasons = []
            for impl in impls:
                if impl.plugin_name in failures:
                    continue
                try:
                    kwargs = {"candidate": candidate, "context": context}
                    reason = impl.function(**{k: kwargs[k] for k in impl.argnames})
                except Exception as exc:
                    failures[impl.plugin_name] = ScorerFailure(
                        f"{impl.plugin_name} (guardian_exclude)", f"raised {type(exc).__name__}: {exc}"
                    )
                    continue
                if reason:
                    reasons.append((impl.plugin_name, str(reason)))
            if reasons:
                by = reasons[0][0]
                excluded.append(Exclusion(candidate, "; ".join(r for _, r in reasons), by))
            else:
                kept.append(candidate)
        return kept, excluded, list(failures.values())
