"""A killer that records instead of signalling, with kills the engine carries as flights: for
testing the engine's bookkeeping of kills in flight on fake roots (where the real Killer only
decides, since a fake root's pids are not this machine's)."""

from __future__ import annotations

from typing import Optional, Union

from guardian.actions import Guard, Hierarchy, Killer, Outcome
from guardian.kinds import Level
from guardian.records import Process


class FakeKill:
    """A kill that stays in flight until ``finish()``; escalation sends a recorded SIGKILL."""

    def __init__(
        self, log: list[tuple[str, int, str]], pid: int, level: Level, grace_s: float, now_us: int
    ) -> None:
        self.log = log
        self.pid = pid
        self.guard: Guard = lambda _p: None
        self.outcome = Outcome("alive", pids=[pid])
        self.phase = "term" if level == "TERM" else "kill"
        self.killed_us: Optional[int] = None if level == "TERM" else now_us
        self.deadline_us = now_us + int((grace_s if level == "TERM" else 10) * 1e6)
        self.outcome.signals.append("SIGTERM" if level == "TERM" else "SIGKILL")
        self.finished = False
        log.append(("start", pid, self.outcome.signals[-1]))

    @property
    def fds(self) -> list[tuple[int, int]]:
        return []

    @property
    def targets(self) -> list[int]:
        return [self.pid]

    def next_look_us(self, now_us: int) -> int:
        return self.deadline_us

    def finish(self) -> None:
        self.finished = True

    def step(self, now_us: int, escalate: bool = False) -> Optional[Outcome]:
        if self.finished:
            self.outcome.result = "killed" if self.killed_us is not None else "terminated"
            return self.outcome
        if self.phase == "term" and (escalate or now_us >= self.deadline_us):
            self.phase, self.killed_us = "kill", now_us
            self.outcome.signals.append("SIGKILL")
            self.log.append(("escalate", self.pid, "SIGKILL"))
        return None

    def close(self) -> None:
        pass


class RecordingKiller(Killer):
    """Starts FakeKills; pins nothing."""

    def __init__(self, killer: Killer) -> None:
        super().__init__(killer.host)
        self.dry_run = False
        self.log: list[tuple[str, int, str]] = []
        self.kills: dict[int, FakeKill] = {}

    def open_victim(self, victim: Process) -> int:
        return -1

    def start_process(
        self,
        victim: Process,
        level: Level,
        grace_s: float,
        guard: Guard,
        now_us: int,
        pidfd: Optional[int] = None,
    ) -> Union[Outcome, FakeKill]:  # type: ignore[override]
        kill = FakeKill(self.log, victim.pid, level, grace_s, now_us)
        self.kills[victim.pid] = kill
        return kill

    def start_group(  # type: ignore[override]
        self, group: str, hierarchy: Hierarchy, guard: Guard, now_us: int
    ) -> Union[Outcome, FakeKill]:
        self.log.append(("group", 0, group))
        return Outcome("killed", signals=["cgroup.kill"])
