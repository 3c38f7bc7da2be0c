"""What the kill hooks are told: a kill decision and its outcome, as plain immutable values.

``guardian_before_kill`` and ``guardian_after_kill`` (guardian/hookspecs.py) and the ``[[hook]]``
commands of the policy (guardian/hooks.py) all see a kill through these two records, built by
guardian from its own records: a plugin cannot reach the ranking, the sample or the kill in
flight through them, and nothing it does to them changes what guardian does.

Text the kernel or a user chose (comm, cgroup paths) stays as guardian read it: a ``str`` in
which bytes that are not UTF-8 are surrogate escapes (``os.fsdecode``); ``guardian.api.shown``
makes it one printable line. The environment of a ``[[hook]]`` command holds the printable
form (``hook_env``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Optional

from guardian.actions import Outcome
from guardian.frozen import frozen
from guardian.history import process_usage
from guardian.kinds import Condition, KillAction, Level, Mode, OutcomeResult
from guardian.policy import Trigger
from guardian.ranking import Ranked
from guardian.rules import unit_of
from guardian.text import shown

# A [[hook]] command gets this PATH and no other variable of guardian's own environment (which
# holds NOTIFY_SOCKET and the watchdog's variables, meant for guardian alone).
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@frozen
class KillDecision:
    """A victim chosen, and what is about to be done (or was done) to it."""

    pid: Optional[int]  # the process; None when the victim is a whole cgroup
    comm: str  # the process's name; "" for a cgroup
    cgroup: str  # the victim's cgroup (for a process: the one that accounts its memory); "/" if unknown
    unit: Optional[str]  # the systemd unit of that cgroup (``nginx.service``, ``session-2.scope``)
    uid: Optional[int]  # the process's real uid; None for a cgroup
    kind: Mode  # "process" or "cgroup"
    kill_group: Optional[str]  # the memory.oom.group killed whole with the process, if any
    rule: str  # the policy rule that triggered: "machine" or "cgroup[N]"
    condition: Condition  # what was crossed: memory, psi, headroom, events
    scope: Optional[str]  # where: None for the machine, else the cgroup the rule watches
    level: Level  # TERM or KILL
    reason: str  # the trigger's sentence, as reported
    action: KillAction  # term, kill or group-kill
    score: float  # the victim's total in the ranking
    rss_bytes: int  # the victim's resident memory when ranked
    detected_us: int  # CLOCK_MONOTONIC of the sample that crossed
    dry_run: bool  # nothing is sent

    @property
    def name(self) -> str:
        """What to call the victim in a sentence, printable: ``pid 42 (firefox)`` or
        ``cgroup /system.slice/x.service``."""
        if self.pid is not None:
            return f"pid {self.pid} ({shown(self.comm)})"
        return f"cgroup {shown(self.cgroup)}"


@frozen
class KillOutcome:
    """How a kill ended."""

    result: OutcomeResult  # terminated, killed, alive, dry-run, vanished, ... (README: GUARDIAN_OUTCOME)
    signals: tuple[str, ...]  # the signals sent, in order ("SIGTERM", "SIGKILL", "cgroup.kill")
    pids: tuple[int, ...]  # the processes signalled
    freed_bytes: int  # anonymous memory, swap and page tables the dead victims held when ranked
    elapsed_s: float  # from the first signal to the end
    detail: str  # guardian's note, when there is one


def decision_of(trigger: Trigger, victim: Ranked, action: KillAction, dry_run: bool) -> KillDecision:
    """The decision record of acting on ``victim`` for ``trigger``."""
    c = victim.candidate
    process = c.process
    return KillDecision(
        pid=None if process is None else process.pid,
        comm="" if process is None else process.comm,
        cgroup=c.cgroup or "/",
        unit=unit_of(c.cgroup),
        uid=None if process is None else process.uid,
        kind=c.kind,
        kill_group=c.kill_group,
        rule=trigger.rule,
        condition=trigger.condition,
        scope=trigger.scope,
        level=trigger.level,
        reason=trigger.reason,
        action=action,
        score=victim.total,
        rss_bytes=c.rss_bytes,
        detected_us=trigger.detected_us,
        dry_run=dry_run,
    )


def freed_bytes(victim: Ranked, result: OutcomeResult, pids: Collection[int]) -> int:
    """What the kill freed, as far as guardian knows without reading again: the anonymous
    memory, swap and page tables of the victim's processes that died (0 unless it died)."""
    if result not in ("terminated", "killed"):
        return 0
    dead = set(pids)
    return sum(process_usage(p) for p in victim.candidate.processes if p.pid in dead)


def outcome_of(victim: Ranked, outcome: Outcome) -> KillOutcome:
    """The outcome record of a kill of ``victim``."""
    return KillOutcome(
        result=outcome.result,
        signals=tuple(outcome.signals),
        pids=tuple(outcome.pids),
        freed_bytes=freed_bytes(victim, outcome.result, outcome.pids),
        elapsed_s=outcome.elapsed_s,
        detail=outcome.detail,
    )


def _safe(text: str) -> str:
    """An environment value: printable, one line, valid UTF-8, no NUL (``shown``)."""
    return shown(text)


def hook_env(decision: KillDecision, outcome: KillOutcome) -> dict[str, str]:
    """The environment of a ``[[hook]]`` command: PATH and the GUARDIAN_* variables below,
    nothing else. Text is ``shown``: a comm or cgroup name with control characters or bytes
    that are not UTF-8 arrives escaped (``\\n``, ``\\xff``), so a shell script can print it
    safely; an unset fact (the pid of a cgroup victim) is an empty string."""

    def opt(value: Optional[object]) -> str:
        return "" if value is None else str(value)

    return {
        "PATH": HOOK_PATH,
        "GUARDIAN_PID": opt(decision.pid),
        "GUARDIAN_PIDS": ",".join(str(p) for p in outcome.pids),
        "GUARDIAN_COMM": _safe(decision.comm),
        "GUARDIAN_CGROUP": _safe(decision.cgroup),
        "GUARDIAN_UNIT": _safe(decision.unit or ""),
        "GUARDIAN_UID": opt(decision.uid),
        "GUARDIAN_KIND": decision.kind,
        "GUARDIAN_KILL_GROUP": _safe(decision.kill_group or ""),
        "GUARDIAN_RULE": decision.rule,
        "GUARDIAN_TRIGGER": f"{decision.rule}:{decision.condition}",
        "GUARDIAN_SCOPE": _safe(decision.scope or "/"),
        "GUARDIAN_LEVEL": decision.level,
        "GUARDIAN_REASON": _safe(decision.reason),
        "GUARDIAN_ACTION": decision.action,
        "GUARDIAN_SCORE": f"{decision.score:g}",
        "GUARDIAN_RSS_BYTES": str(decision.rss_bytes),
        "GUARDIAN_DRY_RUN": "1" if decision.dry_run else "0",
        "GUARDIAN_OUTCOME": outcome.result,
        "GUARDIAN_SIGNALS": ",".join(outcome.signals),
        "GUARDIAN_FREED_BYTES": str(outcome.freed_bytes),
        "GUARDIAN_ELAPSED_S": f"{outcome.elapsed_s:.3f}",
    }
