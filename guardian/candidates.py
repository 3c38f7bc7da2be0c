"""Who may be killed: candidates within a scope, and why the others may not.

A scope is the whole machine (``None``) or one cgroup subtree. Candidates are processes, or
cgroups for group kills (leaf cgroups, and ``memory.oom.group=1`` groups taken whole, as the
kernel and systemd-oomd do).

Never candidates, whatever any plugin says: pid 1, kernel threads, zombies, guardian itself,
processes with ``oom_score_adj = -1000`` (the kernel never kills them either) and what the
policy protects or ignores. A cgroup that holds any never-kill process is itself never a
candidate: ``cgroup.kill`` would take that process down with the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from guardian.config import Policy
from guardian.host import CgroupLayout
from guardian.records import Process
from guardian.rules import Facts, Rule

OOM_SCORE_ADJ_MIN = -1000


@dataclass(frozen=True)
class Candidate:
    """A process or a cgroup that could be killed.

    ``cgroup`` is, for a process, its cgroup in the hierarchy that accounts memory; for a cgroup
    candidate, the group itself. ``kill_group`` is set when killing this candidate means killing
    a whole ``memory.oom.group`` group.
    """

    kind: str
    cgroup: Optional[str]
    process: Optional[Process] = None
    members: tuple[Process, ...] = ()
    kill_group: Optional[str] = None

    @property
    def key(self) -> str:
        if self.process is not None:
            return f"pid {self.process.pid}"
        return f"cgroup {self.cgroup}"

    @property
    def name(self) -> str:
        if self.process is not None:
            return self.process.comm
        return self.cgroup or "/"

    @property
    def processes(self) -> tuple[Process, ...]:
        return (self.process,) if self.process is not None else self.members

    @property
    def rss_bytes(self) -> int:
        return sum(p.rss_bytes for p in self.processes)


@dataclass(frozen=True)
class Exclusion:
    """A process or cgroup kept out of the ranking; ``by`` is ``guardian``, ``policy`` or a plugin."""

    candidate: Candidate
    reason: str
    by: str


def memory_cgroup(process: Process, layout: CgroupLayout) -> Optional[str]:
    """The cgroup that accounts the process's memory: the v2 path where cgroup2 has the memory
    controller, else the v1 memory path (hybrid and legacy hosts), else the v2 path."""
    if layout.memory_controller == "v1" and process.cgroup.v1_memory is not None:
        return process.cgroup.v1_memory
    return process.cgroup.v2 if process.cgroup.v2 is not None else process.cgroup.v1_memory


def in_scope(cgroup: Optional[str], scope: Optional[str]) -> bool:
    if scope is None or scope in ("", "/"):
        return True
    if cgroup is None:
        return False
    scope = scope.rstrip("/")
    return cgroup == scope or cgroup.startswith(scope + "/")


def never_kill_reason(process: Process, self_pid: int) -> Optional[str]:
    """Why guardian itself refuses to kill this process, or None."""
    if process.pid == self_pid:
        return "guardian itself"
    if process.is_global_init:
        return "pid 1 (init): killing it brings the machine down"
    if process.is_kernel_thread:
        return "kernel thread: holds no user memory and cannot be killed"
    if process.is_zombie:
        return "zombie: already dead, its memory is already being freed"
    if process.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return "oom_score_adj is -1000 (OOM_SCORE_ADJ_MIN): the kernel never kills it either"
    return None


def first_match(rules: Sequence[Rule], facts: Facts) -> Optional[Rule]:
    for rule in rules:
        if rule.matches(facts):
            return rule
    return None


def policy_reason(rules: Sequence[Rule], facts: Facts, verb: str) -> Optional[str]:
    """``"protected by policy protect[0] (comm~/^sshd$/)"`` when a rule matches, else None."""
    rule = first_match(rules, facts)
    return None if rule is None else f"{verb} by policy {rule.describe()}"


FactsOf = Callable[[Process, Optional[str]], Facts]


def process_candidates(
    processes: Iterable[Process],
    layout: CgroupLayout,
    scope: Optional[str],
    policy: Policy,
    self_pid: int,
    facts_of: FactsOf,
) -> tuple[list[Candidate], list[Exclusion]]:
    """Processes in scope, split into candidates and exclusions (with reasons)."""
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for process in processes:
        cgroup = memory_cgroup(process, layout)
        if not in_scope(cgroup, scope):
            continue
        candidate = Candidate(kind="process", cgroup=cgroup, process=process)
        reason = never_kill_reason(process, self_pid)
        if reason is not None:
            excluded.append(Exclusion(candidate, reason, "guardian"))
            continue
        facts = facts_of(process, cgroup)
        reason = policy_reason(policy.protect, facts, "protected") or policy_reason(
            policy.ignore, facts, "ignored"
        )
        if reason is not None:
            excluded.append(Exclusion(candidate, reason, "policy"))
            continue
        candidates.append(candidate)
    return candidates, excluded


def group_candidates(
    processes: Iterable[Process],
    layout: CgroupLayout,
    cgroup_paths: Iterable[str],
    oom_group: Callable[[str], bool],
    scope: Optional[str],
    policy: Policy,
    self_pid: int,
    facts_of: FactsOf,
) -> tuple[list[Candidate], list[Exclusion]]:
    """Cgroups in scope that a group kill could take: leaves, and memory.oom.group=1 groups
    (whole, not recursed into), as systemd-oomd's recursively_get_cgroup_context() does."""
    paths = sorted(
        p for p in cgroup_paths if in_scope(p, scope) and p.rstrip("/") != (scope or "").rstrip("/")
    )
    children: dict[str, list[str]] = {}
    for path in paths:
        parent = path.rsplit("/", 1)[0] or "/"
        children.setdefault(parent, []).append(path)

    chosen: list[str] = []
    taken_whole: list[str] = []
    for path in paths:
        if any(in_scope(path, whole) for whole in taken_whole):
            continue  # inside a group already taken whole
        if oom_group(path):
            taken_whole.append(path)
            chosen.append(path)
        elif path not in children:
            chosen.append(path)

    members_of: dict[str, list[Process]] = {p: [] for p in chosen}
    for process in processes:
        cgroup = memory_cgroup(process, layout)
        for path in chosen:
            if in_scope(cgroup, path):
                members_of[path].append(process)
                break

    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for path in chosen:
        members = tuple(members_of[path])
        candidate = Candidate(kind="cgroup", cgroup=path, members=members, kill_group=path)
        live = [m for m in members if not m.is_zombie]
        if not live:
            excluded.append(Exclusion(candidate, "no live processes", "guardian"))
            continue
        verdict = group_never_kill(members, self_pid, policy, facts_of, layout)
        if verdict is not None:
            excluded.append(Exclusion(candidate, *verdict))
            continue
        reason = policy_reason(policy.ignore, Facts.of_cgroup(path), "ignored")
        if reason is not None:
            excluded.append(Exclusion(candidate, reason, "policy"))
            continue
        candidates.append(candidate)
    return candidates, excluded


def group_never_kill(
    members: Sequence[Process],
    self_pid: int,
    policy: Policy,
    facts_of: FactsOf,
    layout: CgroupLayout,
) -> Optional[tuple[str, str]]:
    """(why, by whom) when killing the whole group would take a never-kill process with it."""
    for member in members:
        if member.is_zombie or member.is_kernel_thread:
            continue
        reason = never_kill_reason(member, self_pid)
        if reason is not None:
            return f"holds pid {member.pid} ({member.comm}) that must not be killed: {reason}", "guardian"
        reason = policy_reason(policy.protect, facts_of(member, memory_cgroup(member, layout)), "protected")
        if reason is not None:
            return f"holds pid {member.pid} ({member.comm}), {reason}", "policy"
    return None
