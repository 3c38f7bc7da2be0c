"""The only module that signals processes or writes cgroup.kill. Dry-run lives here too.

A kill is a state the loop carries, not a call that waits (systemd-oomd signals and goes back
to sd-event). ``Killer.start_process``/``start_group`` pin the victim and send the first signal;
the loop adds the kill's ``fds`` to its wake-ups (a pidfd polls readable when its process exits;
a cgroup2 group's ``cgroup.events`` raises POLLPRI when ``populated`` changes) and calls
``step()`` on every wake-up, and at ``deadline_us`` at the latest, until it returns an Outcome.
Nothing here sleeps: while one victim sits in its grace period, the loop goes on assessing every
other scope.

One process (kernel.md 2.7):

1. ``pidfd_open(pid)`` as soon as the victim is chosen: from then on the descriptor names that
   process and no other, even if the pid is recycled; its start time must be the one ranked;
2. before EVERY signal, the process is read again and the guard asked: a process can become
   ``oom_score_adj -1000``, exec into a protected program or move to a protected unit between
   the ranking and the signal (or during the grace period), and then nothing is sent;
3. ``pidfd_send_signal``: SIGTERM, then SIGKILL when the grace period is over or the loop asks
   for escalation (memory reached the KILL level); SIGKILL at once at the KILL level;
4. ``process_mrelease`` only after SIGKILL (after SIGTERM it fails with EINVAL, earlyoom#354).

A group, as the kernel kills a ``memory.oom.group`` (mm/memcontrol.c: mem_cgroup_scan_tasks()
with oom_kill_memcg_member(), which skips OOM_SCORE_ADJ_MIN tasks): every member except those
that must not be killed (guardian's never-kill rules and the policy's ``[[protect]]``). Members
are read from the hierarchy that accounts memory, the one the ranking and the checks used:

* ``cgroup.kill`` (5.14+, atomic with respect to fork) only when that hierarchy is cgroup2 and
  no member must be spared, checked on a fresh read right before the write;
* otherwise every member through its own pidfd, each re-checked at signal time, in passes that
  repeat for members forked meanwhile (as systemd-oomd's cg_kill_recursive() does).

On a hybrid host memory is accounted by a cgroup v1 group, and its cgroup2 namesake may hold
other processes: cgroup.kill is never written there.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from guardian.errors import GuardianError, NoSuchProcess, Unavailable
from guardian.host import Host
from guardian.kernel import process_mrelease
from guardian.kinds import Level, OutcomeResult
from guardian.records import Process
from guardian.sources.processes import parse_stat, parse_status, process_state, read_process
from guardian.text import counted

KILL_WAIT_S = 10.0  # after SIGKILL (or cgroup.kill), how long a victim may take to be gone
GROUP_PASSES = 10  # kill-each passes over a group whose members keep forking
GROUP_POLL_S = 0.05  # how often a group without cgroup.events is looked at while it dies

Guard = Callable[[Process], Optional[str]]  # why this process must not be signalled now, or None
Hierarchy = Literal["v2", "v1"]


@dataclass
class Outcome:
    """What an action did (``result``: guardian.kinds.OutcomeResult)."""

    result: OutcomeResult
    signals: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    spared: list[int] = field(default_factory=list)  # group members left alive: must not be killed
    mreleased: bool = False
    detail: str = ""
    elapsed_s: float = 0.0


class AlreadyDying(GuardianError):
    def __init__(self, pid: int) -> None:
        super().__init__(
            f"pid {pid} is already dying (a SIGKILL from someone else is pending); nothing was sent"
        )
        self.pid = pid


class PidReused(GuardianError):
    def __init__(self, pid: int, expected: int, found: int) -> None:
        super().__init__(
            f"pid {pid} now belongs to another process (start time {found}, the victim's was {expected}); "
            "nothing was sent"
        )
        self.pid = pid


def exited(pidfd: int) -> bool:
    """True when the process behind ``pidfd`` has exited (the pidfd polls readable). Never waits."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _sigkill_pending(host: Host, pid: int) -> bool:
    """A SIGKILL is already queued for the process (the kernel's OOM killer, or anyone):
    signalling it again would claim a kill that someone else made (found in the VM suite)."""
    try:
        return parse_status(os.fsdecode(host.read_pid_file(pid, "status"))).sigkill_pending
    except (GuardianError, OSError):
        return False


def _reap(host: Host, pid: int, pidfd: int) -> bool:
    """process_mrelease() of a process that has SIGKILL, off the loop with a deadline: it takes
    the victim's memory lock, which a stuck thread of it may hold (Host.slow_call). The call
    gets a descriptor of its own, closed when it returns, however late."""
    own = os.dup(pidfd)

    def reap() -> bool:
        try:
            return process_mrelease(own)
        finally:
            os.close(own)

    try:
        return host.slow_call(("mrelease", pid), f"process_mrelease of pid {pid}", reap)
    except GuardianError:  # Stalled: it goes on in its worker, and the kernel reaps anyway
        return False


def reap_dying(host: Host, process: Process) -> bool:
    """Free the memory of a process someone else has SIGKILLed that has not died yet (it is
    frozen, or not scheduled): process_mrelease() through its pidfd, no signal sent. True when
    the kernel reaped it. The kernel's own OOM killer waits for such a victim and its
    oom_reaper frees its memory; guardian does the same instead of choosing a second victim."""
    try:
        fd = os.pidfd_open(process.pid)
    except OSError:
        return False
    try:
        if _starttime(host, process.pid) != process.starttime_ticks or not _sigkill_pending(
            host, process.pid
        ):
            return False  # not the process judged, or no longer dying
        return _reap(host, process.pid, fd)
    finally:
        os.close(fd)


def _starttime(host: Host, pid: int) -> Optional[int]:
    """The start time in /proc/PID/stat, or None when the process is gone or unreadable."""
    try:
        return parse_stat(host.read_pid_file(pid, "stat").decode("utf-8", "surrogateescape")).starttime_ticks
    except (GuardianError, OSError):
        return None


def _send(fd: int, sig: signal.Signals, outcome: Outcome) -> Optional[str]:
    """Signal through the pidfd. None when sent; ``gone`` or ``failed`` otherwise (and the
    outcome says how)."""
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return "gone"
    except OSError as exc:
        outcome.result = "failed"
        outcome.detail = f"pidfd_send_signal({sig.name}): {exc.strerror}"
        return "failed"
    outcome.signals.append(sig.name)
    return None


class ProcessKill:
    """One process being killed: SIGTERM, the grace period, SIGKILL, the wait for its exit."""

    def __init__(self, host: Host, victim: Process, pidfd: int, guard: Guard, grace_s: float) -> None:
        self.host = host
        self.victim = victim
        self.pidfd: Optional[int] = pidfd
        self.guard = guard
        self.grace_s = grace_s
        self.outcome = Outcome("alive", pids=[victim.pid])
        self.phase: Literal["new", "term", "kill"] = "new"
        self.started_us = 0
        self.deadline_us = 0
        self.killed_us: Optional[int] = None  # when SIGKILL went out

    @property
    def fds(self) -> list[tuple[int, int]]:
        """(fd, poll events) that wake the loop: the pidfd polls readable once the victim is gone."""
        return [(self.pidfd, select.POLLIN)] if self.pidfd is not None else []

    @property
    def targets(self) -> list[int]:
        """The pids this kill signals (for the loop: not to be chosen again meanwhile)."""
        return [self.victim.pid]

    def next_look_us(self, now_us: int) -> int:
        """When to look without an event (the pidfd wakes the loop at the victim's exit)."""
        return self.deadline_us

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _finish(self, result: OutcomeResult, now_us: int) -> Outcome:
        self.outcome.result = result
        self.outcome.elapsed_s = (now_us - self.started_us) / 1e6
        self.close()
        return self.outcome

    def _refusal(self) -> Optional[tuple[OutcomeResult, str]]:
        """Read the pinned process again and ask the guard, right before a signal."""
        try:
            fresh = read_process(self.host, self.victim.pid)
        except (GuardianError, OSError):
            fresh = None
        if fresh is None or fresh.starttime_ticks != self.victim.starttime_ticks:
            # gone (its pid may already name another process: the pidfd could not reach that
            # one, but its facts are not the victim's to judge)
            return ("terminated" if self.outcome.signals else "vanished"), "exited before the signal"
        reason = self.guard(fresh)
        if reason is not None:
            return "protected", f"not signalled: {reason}"
        return None

    def _signal(self, sig: signal.Signals, now_us: int) -> Optional[Outcome]:
        assert self.pidfd is not None
        refusal = self._refusal()
        if refusal is not None:
            self.outcome.detail = refusal[1]
            return self._finish(refusal[0], now_us)
        sent = _send(self.pidfd, sig, self.outcome)
        if sent == "gone":
            return self._finish("terminated" if self.outcome.signals else "vanished", now_us)
        if sent == "failed":
            return self._finish("failed", now_us)
        if sig == signal.SIGKILL:
            self.outcome.mreleased = _reap(self.host, self.victim.pid, self.pidfd)
            self.phase, self.deadline_us = "kill", now_us + int(KILL_WAIT_S * 1e6)
            self.killed_us = now_us
        else:
            self.phase, self.deadline_us = "term", now_us + int(self.grace_s * 1e6)
        return None

    def start(self, level: Level, now_us: int) -> Optional[Outcome]:
        """Send the first signal; an Outcome if the kill is over already (nothing sent)."""
        self.started_us = now_us
        return self._signal(signal.SIGKILL if level == "KILL" else signal.SIGTERM, now_us)

    def step(self, now_us: int, escalate: bool = False) -> Optional[Outcome]:
        """Look again: an Outcome once the victim is gone or the wait is over, else None."""
        assert self.pidfd is not None
        if exited(self.pidfd):
            return self._finish("terminated" if self.phase == "term" else "killed", now_us)
        if self.phase == "term" and (escalate or now_us >= self.deadline_us):
            if escalate and now_us < self.deadline_us:
                self.outcome.detail = (
                    "escalated to SIGKILL: memory reached the KILL level during the grace period"
                )
            return self._signal(signal.SIGKILL, now_us)
        if self.phase == "kill" and now_us >= self.deadline_us:
            return self._finish("alive", now_us)
        return None


class GroupKill:
    """A cgroup being killed: every member but those that must be spared."""

    def __init__(self, host: Host, group: str, hierarchy: Hierarchy, guard: Guard) -> None:
        self.host = host
        self.group = group
        self.hierarchy = hierarchy
        self.guard = guard
        self.outcome = Outcome("alive")
        self.spared: dict[int, str] = {}  # pid -> why it must live
        self.signalled: set[int] = set()
        self.passes = 0
        self.each = False  # killing member by member (no cgroup.kill here, or someone is spared)
        self.started_us = 0
        self.deadline_us = 0
        self.killed_us: Optional[int] = None  # when cgroup.kill (or the first SIGKILL) went out
        self._events_fd: Optional[int] = None

    @property
    def fds(self) -> list[tuple[int, int]]:
        """cgroup.events raises POLLPRI on a change (kernfs files always poll readable: asking
        for POLLIN would wake the loop at once, every time)."""
        return [(self._events_fd, select.POLLPRI)] if self._events_fd is not None else []

    @property
    def targets(self) -> list[int]:
        return sorted(self.signalled)

    def close(self) -> None:
        if self._events_fd is not None:
            os.close(self._events_fd)
            self._events_fd = None

    def _directory(self) -> Optional[str]:
        try:
            if self.hierarchy == "v2":
                return self.host.cgroup_v2_dir(self.group)
            return self.host.cgroup_v1_memory_dir(self.group)
        except Unavailable:
            return None

    def members(self) -> list[int]:
        """Every pid in the group and its descendants, in the hierarchy the kill is judged in."""
        top = self._directory()
        if top is None:
            return []
        pids: set[int] = set()
        for rel in ["", *self.host.walk_cgroups(top)]:
            try:
                text = self.host.read_text(f"{top}{rel}/cgroup.procs")
            except OSError:
                continue  # removed meanwhile
            pids.update(int(x) for x in text.split() if x.isascii() and x.isdigit())
        return sorted(pids)

    def _judge(self, pids: list[int]) -> dict[int, Process]:
        """Read the members not judged yet; the ones the guard refuses join ``spared``, and so
        do the ones that cannot be read but are still members on a second look: a member
        guardian cannot judge is one it must not kill (cgroup.procs lists a process outside
        guardian's pid namespace as 0; a file may not parse). Spared members rule cgroup.kill
        out: the kill then goes member by member, to judged members only."""
        fresh: dict[int, Process] = {}
        unread: dict[int, str] = {}
        for pid in pids:
            if pid in self.spared or pid in self.signalled:
                continue
            if pid <= 0:
                unread[pid] = "listed as 0: a process outside guardian's pid namespace"
                continue
            try:
                process = read_process(self.host, pid)
            except NoSuchProcess:
                continue  # gone
            except (GuardianError, OSError) as exc:
                unread[pid] = f"cannot be read ({exc})"
                continue
            reason = self.guard(process)
            if reason is not None:
                self.spared[pid] = f"{process.comm}: {reason}"
            else:
                fresh[pid] = process
        if unread:
            still = set(self.members())
            self.spared.update({pid: why for pid, why in unread.items() if pid in still})
        return fresh

    def _write_kill(self, directory: str) -> bool:
        try:
            with open(f"{directory}/cgroup.kill", "w") as f:
                f.write("1")
        except OSError as exc:
            self.outcome.detail = f"cgroup.kill failed ({exc.strerror}); killed each process instead"
            return False
        self.outcome.signals.append("cgroup.kill")
        return True

    def _kill_each(self, judged: dict[int, Process]) -> None:
        """SIGKILL each judged member through its own pidfd. The start time is read before the
        pidfd is opened and again after: equal, the pidfd names the process the guard judged."""
        self.passes += 1
        for pid, process in judged.items():
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # exited
            try:
                if _starttime(self.host, pid) != process.starttime_ticks:
                    continue  # exited and the pid was reused: not the process judged
                if _send(fd, signal.SIGKILL, Outcome("alive")) is None:
                    self.signalled.add(pid)
                    self.outcome.mreleased = _reap(self.host, pid, fd) or self.outcome.mreleased
            finally:
                os.close(fd)
        if "SIGKILL" not in self.outcome.signals and self.signalled:
            self.outcome.signals.append("SIGKILL")

    def _finish(self, result: OutcomeResult, now_us: int) -> Outcome:
        self.outcome.result = result
        self.outcome.pids = sorted(self.signalled | set(self.outcome.pids))
        self.outcome.spared = sorted(self.spared)
        if self.spared:
            spared = ", ".join(f"pid {pid}: {why}" for pid, why in sorted(self.spared.items()))
            self.outcome.detail = "; ".join(filter(None, [self.outcome.detail, f"spared {spared}"]))
        self.outcome.elapsed_s = (now_us - self.started_us) / 1e6
        self.close()
        return self.outcome

    def start(self, now_us: int) -> Optional[Outcome]:
        self.started_us = self.killed_us = now_us
        self.deadline_us = now_us + int(KILL_WAIT_S * 1e6)
        directory = self._directory()
        judged = self._judge(self.members())
        if not judged:
            self.outcome.detail = f"{self.group} has no process that may be killed"
            return self._finish("protected" if self.spared else "vanished", now_us)
        if directory is not None and self.hierarchy == "v2":
            try:
                self._events_fd = os.open(f"{directory}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
                os.read(self._events_fd, 4096)  # a read arms kernfs change notification
            except OSError:
                self.close()
        can_kill_file = directory is not None and self.hierarchy == "v2"
        if can_kill_file and not self.spared and os.path.exists(f"{directory}/cgroup.kill"):
            # a fresh look right before the write: a member that joined since must pass too
            judged.update(self._judge(self.members()))
            if not self.spared and directory is not None and self._write_kill(directory):
                self.outcome.pids = sorted(judged)
                return None
        self.each = True
        self._kill_each(judged)
        return None

    def step(self, now_us: int, escalate: bool = False) -> Optional[Outcome]:
        if self._events_fd is not None:
            try:
                os.lseek(self._events_fd, 0, os.SEEK_SET)
                os.read(self._events_fd, 4096)  # re-arm
            except OSError:
                self.close()
        left = [pid for pid in self.members() if pid not in self.spared]
        if not left:
            return self._finish("killed", now_us)
        if self.each and self.passes < GROUP_PASSES:
            fresh = self._judge(left)
            if fresh:  # forked or moved in since the last pass
                self._kill_each(fresh)
        if now_us >= self.deadline_us:
            self.outcome.detail = "; ".join(
                filter(
                    None,
                    [
                        self.outcome.detail,
                        f"{counted(len(left), 'process', 'processes')} still there after the wait",
                    ],
                )
            )
            return self._finish("alive", now_us)
        return None

    def next_look_us(self, now_us: int) -> int:
        """When to look without an event: soon where no cgroup.events can tell (v1 groups)."""
        if self._events_fd is None:
            return min(self.deadline_us, now_us + int(GROUP_POLL_S * 1e6))
        return self.deadline_us


Kill = Union[ProcessKill, GroupKill]


class Killer:
    """Starts kills; ``dry_run`` decides and reports but signals nothing."""

    def __init__(self, host: Host, dry_run: bool = False) -> None:
        self.host = host
        # Under a fake root (--root DIR) the pids are a fixture's, not this machine's: signalling
        # them would hit whatever real process has that number. Such a Killer only decides.
        self.dry_run = dry_run or not host.is_live

    def open_victim(self, victim: Process) -> int:
        """pidfd for ``victim``, verified to be the same process that was ranked and not dying."""
        try:
            pidfd = os.pidfd_open(victim.pid)
        except ProcessLookupError:
            raise NoSuchProcess(victim.pid) from None
        try:
            stat = parse_stat(self.host.read_pid_file(victim.pid, "stat").decode("utf-8", "surrogateescape"))
        except (GuardianError, OSError):
            os.close(pidfd)
            raise NoSuchProcess(victim.pid) from None
        if stat.starttime_ticks != victim.starttime_ticks:
            os.close(pidfd)
            raise PidReused(victim.pid, victim.starttime_ticks, stat.starttime_ticks)
        if process_state(self.host, victim.pid, stat) in ("Z", "X") or _sigkill_pending(
            self.host, victim.pid
        ):
            os.close(pidfd)
            raise AlreadyDying(victim.pid)
        return pidfd

    def start_process(
        self,
        victim: Process,
        level: Level,
        grace_s: float,
        guard: Guard,
        now_us: int,
        pidfd: Optional[int] = None,
    ) -> Union[Outcome, ProcessKill]:
        """An Outcome when it is over already (dry run, gone, refused), else the kill in flight.
        Takes ownership of ``pidfd`` (from open_victim) if given."""
        if self.dry_run:
            return Outcome("dry-run", pids=[victim.pid], detail=f"would send SIG{level}")
        if pidfd is None:
            try:
                pidfd = self.open_victim(victim)
            except NoSuchProcess:
                return Outcome("vanished", pids=[victim.pid], detail="exited before it was signalled")
            except PidReused as exc:
                return Outcome("pid-reused", pids=[victim.pid], detail=str(exc))
            except AlreadyDying as exc:
                return Outcome("already-dying", pids=[victim.pid], detail=str(exc))
        kill = ProcessKill(self.host, victim, pidfd, guard, grace_s)
        done = kill.start(level, now_us)
        return done if done is not None else kill

    def start_group(
        self, group: str, hierarchy: Hierarchy, guard: Guard, now_us: int
    ) -> Union[Outcome, GroupKill]:
        kill = GroupKill(self.host, group, hierarchy, guard)
        if self.dry_run:
            members = kill.members()
            judged = kill._judge(members)
            how = "1 to cgroup.kill" if hierarchy == "v2" and not kill.spared else "SIGKILL to each member"
            outcome = Outcome(
                "dry-run", pids=sorted(judged), spared=sorted(kill.spared), detail=f"would send {how}"
            )
            if kill.spared:
                outcome.detail += "; would spare " + ", ".join(
                    f"pid {pid}: {why}" for pid, why in sorted(kill.spared.items())
                )
            return outcome
        done = kill.start(now_us)
        return done if done is not None else kill
