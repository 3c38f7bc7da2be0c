"""Who may be killed: candidates within a scope, and why the others may not.

A scope is the whole machine (``None``) or one cgroup subtree. Candidates are processes, or
cgroups for group kills (leaf cgroups, and ``memory.oom.group=1`` groups taken whole, as the
kernel and systemd-oomd do).

Never killed, whatever any plugin says, and however the kill is made: pid 1, kernel threads,
zombies, guardian itself, processes with ``oom_score_adj = -1000`` (the kernel never kills them
either) and what the policy protects. ``[[ignore]]`` keeps a process or a cgroup from being
chosen. A group kill (a cgroup candidate, a ``memory.oom.group`` group, ``action = "group"``)
kills every member but the never-kill ones, as the kernel's oom.group kill spares
OOM_SCORE_ADJ_MIN tasks; ``spared`` names them. A group with no member that may die is no
candidate.

Protection is judged on every cgroup path a process has: the one that accounts its memory and,
on a hybrid host, its cgroup2 path too (systemd's units live there). A process is protected if
any of them matches, so moving it in one hierarchy cannot unprotect it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Callable, Optional

from guardian.config import Policy
from guardian.frozen import frozen
from guardian.host import CgroupLayout
from guardian.kinds import Mode
from guardian.offloop import Stalled
from guardian.records import Process
from guardian.rules import Facts, Rule

OOM_SCORE_ADJ_MIN = -1000


@frozen
class Candidate:
    """A process or a cgroup that could be killed.

    ``cgroup`` is, for a process, its cgroup in the hierarchy that accounts memory; for a cgroup
    candidate, the group itself. ``kill_group`` is set when killing this candidate means killing
    a whole ``memory.oom.group`` group.
    """

    kind: Mode
    cgroup: Optional[str]
    process: Optional[Process] = None
    members: tuple[Process, ...] = ()
    kill_group: Optional[str] = None
    spared: tuple[tuple[int, str], ...] = ()  # (pid, why) of kill_group members that will live

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


@frozen
class Exclusion:
    """A process or cgroup kept out of the ranking; ``by`` is ``guardian``, ``policy`` or a plugin."""

    candidate: Candidate
    reason: str
    by: str
    protects: bool = False  # out because a never-kill or [[protect]] rule holds for it
    dying: bool = False  # out because someone else's SIGKILL is pending for it


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


DYING = "already dying: someone else's SIGKILL is pending"


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


def cgroup_paths(process: Process, layout: CgroupLayout) -> list[Optional[str]]:
    """Every cgroup path the process has, the memory one first (None when it has none)."""
    paths: list[Optional[str]] = []
    for path in (memory_cgroup(process, layout), process.cgroup.v2, process.cgroup.v1_memory):
        if path is not None and path not in paths:
            paths.append(path)
    return paths or [None]


def rules_reason(
    rules: Sequence[Rule], process: Process, layout: CgroupLayout, facts_of: FactsOf, verb: str
) -> Optional[str]:
    """policy_reason() on each of the process's cgroup paths: any match counts."""
    if not rules:
        return None
    for path in cgroup_paths(process, layout):
        try:
            reason = policy_reason(rules, facts_of(process, path), verb)
        except Stalled as exc:
            # a fact a rule needs (cmdline) could not be read in time: the process holds its
            # own memory lock. Unknown counts as a match for these rules, which keep processes
            # alive: never kill on a guess. (Like any fact a process controls, its cmdline can
            # be made to match anyway; this is no new way out.)
            return f"{verb}: {exc}, so the {verb.split(maxsplit=1)[0]} rules are taken to match"
        if reason is not None:
            return reason
    return None


def spare_reason(
    process: Process, self_pid: int, policy: Policy, facts_of: FactsOf, layout: CgroupLayout
) -> Optional[tuple[str, str]]:
    """(why, by whom) this process must not die, whoever kills: guardian's never-kill rules,
    then the policy's [[protect]]. None when it may be killed."""
    reason = never_kill_reason(process, self_pid)
    if reason is not None:
        return reason, "guardian"
    reason = rules_reason(policy.protect, process, layout, facts_of, "protected")
    if reason is not None:
        return reason, "policy"
    return None


def victim_refusal(
    process: Process, self_pid: int, policy: Policy, facts_of: FactsOf, layout: CgroupLayout
) -> Optional[tuple[str, str]]:
    """(why, by whom) this process may not be chosen as a victim: spare_reason(), or [[ignore]]."""
    verdict = spare_reason(process, self_pid, policy, facts_of, layout)
    if verdict is not None:
        return verdict
    reason = rules_reason(policy.ignore, process, layout, facts_of, "ignored")
    return None if reason is None else (reason, "policy")


def spared_members(
    members: Iterable[Process], self_pid: int, policy: Policy, facts_of: FactsOf, layout: CgroupLayout
) -> tuple[tuple[int, str], ...]:
    """The live members a group kill must leave alive, with why (zombies and kernel threads
    are not members that could die)."""
    spared = []
    for member in members:
        if member.is_zombie or member.is_kernel_thread:
            continue
        verdict = spare_reason(member, self_pid, policy, facts_of, layout)
        if verdict is not None:
            spared.append((member.pid, f"{member.comm}: {verdict[0]}"))
    return tuple(spared)


def process_candidates(
    processes: Iterable[Process],
    layout: CgroupLayout,
    scope: Optional[str],
    policy: Policy,
    self_pid: int,
    facts_of: FactsOf,
    busy: Callable[[Process], Optional[str]] = lambda _p: None,
) -> tuple[list[Candidate], list[Exclusion]]:
    """Processes in scope, split into candidates and exclusions (with reasons). ``busy`` says
    why a process is out of the question for now (guardian is already killing it)."""
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for process in processes:
        cgroup = memory_cgroup(process, layout)
        if not in_scope(cgroup, scope):
            continue
        candidate = Candidate(kind="process", cgroup=cgroup, process=process)
        verdict = victim_refusal(process, self_pid, policy, facts_of, layout)
        if verdict is None and (reason := busy(process)) is not None:
            verdict = (reason, "guardian")
        if verdict is not None:
            excluded.append(Exclusion(candidate, *verdict))
            continue
        if process.sigkill_pending:
            # killed by someone else (the kernel's OOM killer, an operator) and not gone yet:
            # choosing it again would claim that kill, and choosing it every tick would stall
            excluded.append(Exclusion(candidate, DYING, "guardian", dying=True))
            continue
        candidates.append(candidate)
    return candidates, excluded


def group_candidate(
    path: str,
    members: Sequence[Process],
    policy: Policy,
    self_pid: int,
    facts_of: FactsOf,
    layout: CgroupLayout,
    busy: Callable[[Process], Optional[str]] = lambda _p: None,
) -> tuple[Optional[Candidate], Optional[Exclusion]]:
    """One cgroup as a group-kill candidate, or why it is none."""
    spared = spared_members(members, self_pid, policy, facts_of, layout)
    candidate = Candidate(kind="cgroup", cgroup=path, members=tuple(members), kill_group=path, spared=spared)
    live = [m for m in members if not m.is_zombie and not m.is_kernel_thread]
    if not live:
        return None, Exclusion(candidate, "no live processes", "guardian")
    if len(spared) == len(live):
        why = "; ".join(f"pid {pid} ({reason})" for pid, reason in spared)
        return None, Exclusion(
            candidate, f"every process in it must be spared: {why}", "guardian", protects=True
        )
    for member in live:
        reason = busy(member)
        if reason is not None:
            return None, Exclusion(candidate, f"pid {member.pid}: {reason}", "guardian")
    reason = policy_reason(policy.ignore, Facts.of_cgroup(path), "ignored")
    if reason is not None:
        return None, Exclusion(candidate, reason, "policy")
    return candidate, None


def group_candidates(
    processes: Iterable[Process],
    layout: CgroupLayout,
    cgroup_paths_: Iterable[str],
    oom_group: Callable[[str], bool],
    scope: Optional[str],
    policy: Policy,
    self_pid: int,
    facts_of: FactsOf,
    busy: Callable[[Process], Optional[str]] = lambda _p: None,
) -> tuple[list[Candidate], list[Exclusion]]:
    """Cgroups in scope that a group kill could take: leaves, and memory.oom.group=1 groups
    (whole, not recursed into), as systemd-oomd's recursively_get_cgroup_context() does."""
    paths = sorted(
        p for p in cgroup_paths_ if in_scope(p, scope) and p.rstrip("/") != (scope or "").rstrip("/")
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
        candidate, exclusion = group_candidate(
            path, members_of[path], policy, self_pid, facts_of, layout, busy
        )
        if candidate is not None:
            candidates.append(candidate)
        if exclusion is not None:
            excluded.append(exclusion)
    return candidates, excluded
