"""The only module that signals processes or writes cgroup.kill. Dry-run lives here too.

Killing one process (kernel.md 2.7):

1. ``pidfd_open(pid)`` as soon as the victim is chosen: from then on the descriptor names that
   process and no other, even if the pid is recycled;
2. re-check identity through it: /proc/PID/stat must show the same start time as when the victim
   was ranked (a pid reused between the ranking and the open fails here and nothing is sent);
3. ``pidfd_send_signal``: SIGTERM, then SIGKILL if it still lives after the grace period, or
   SIGKILL at once at the KILL level, or as soon as ``escalate()`` says memory got worse;
4. ``process_mrelease`` (syscall 448) only after SIGKILL: it reaps the address space now instead
   of when the victim is next scheduled. After SIGTERM it fails with EINVAL (earlyoom#354).

Killing a group: ``cgroup.kill`` (5.14+) kills every process of the cgroup and its descendants
atomically with respect to fork; where it is missing, every pid of cgroup.procs (recursively) is
killed through its own pidfd, repeated until no new pid appears (as systemd-oomd does).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from guardian.errors import GuardianError, NoSuchProcess, Unavailable
from guardian.host import Host
from guardian.records import Process
from guardian.sources.processes import parse_stat

SYS_PROCESS_MRELEASE = 448  # the same number on every architecture

Escalate = Callable[[], bool]


@dataclass
class Outcome:
    """What an action did. ``result`` is one of: ``terminated`` (died after SIGTERM), ``killed``
    (died after SIGKILL), ``alive`` (still there after SIGKILL and the wait), ``dry-run``,
    ``vanished`` (gone before anything was sent), ``pid-reused`` (identity changed: nothing
    sent), ``failed`` (the kernel refused)."""

    result: str
    signals: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    mreleased: bool = False
    detail: str = ""
    elapsed_s: float = 0.0


def _libc_syscall() -> Optional[Callable[..., int]]:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall
    except OSError:
        return None


_syscall = _libc_syscall()


def process_mrelease(pidfd: int) -> bool:
    """Reap a SIGKILLed process's memory now. False where the kernel cannot (pre-5.15, ESRCH
    when it is already gone, EINVAL if it is not dying)."""
    if _syscall is None:
        return False
    return _syscall(SYS_PROCESS_MRELEASE, pidfd, 0) == 0


def wait_exit(pidfd: int, timeout_s: float) -> bool:
    """True when the process behind ``pidfd`` has exited (the pidfd polls readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


class Killer:
    """Carries out kill decisions; ``dry_run`` decides and reports but signals nothing."""

    def __init__(self, host: Host, dry_run: bool = False) -> None:
        self.host = host
        # Under a fake root (--root DIR) the pids are a fixture's, not this machine's: signalling
        # them would hit whatever real process has that number. Such a Killer only decides.
        self.dry_run = dry_run or not host.is_live

    # --- one process -----------------------------------------------------------------------

    def open_victim(self, victim: Process) -> int:
        """pidfd for ``victim``, verified to be the same process that was ranked."""
        try:
            pidfd = os.pidfd_open(victim.pid)
        except ProcessLookupError:
            raise NoSuchProcess(victim.pid) from None
        try:
            stat = parse_stat(self.host.read_pid_file(victim.pid, "stat").decode("utf-8", "replace"))
        except (GuardianError, OSError):
            os.close(pidfd)
            raise NoSuchProcess(victim.pid) from None
        if stat.starttime_ticks != victim.starttime_ticks:
            os.close(pidfd)
            raise PidReused(victim.pid, victim.starttime_ticks, stat.starttime_ticks)
        if stat.state in ("Z", "X") or self._sigkill_pending(victim.pid):
            os.close(pidfd)
            raise AlreadyDying(victim.pid)
        return pidfd

    def _sigkill_pending(self, pid: int) -> bool:
        """A SIGKILL is already queued for the process (the kernel's OOM killer, or anyone):
        signalling it again would claim a kill that someone else made (found in the VM suite)."""
        try:
            status = self.host.read_pid_file(pid, "status").decode("ascii", "replace")
        except (GuardianError, OSError):
            return False
        for line in status.splitlines():
            if line.startswith("ShdPnd:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGKILL - 1)))
        return False

    def kill_process(
        self,
        victim: Process,
        level: str,
        grace_s: float,
        escalate: Optional[Escalate] = None,
        pidfd: Optional[int] = None,
    ) -> Outcome:
        start = time.monotonic()
        if self.dry_run:
            return Outcome("dry-run", pids=[victim.pid], detail=f"would send SIG{level}")
        try:
            fd = pidfd if pidfd is not None else self.open_victim(victim)
        except NoSuchProcess:
            return Outcome("vanished", pids=[victim.pid], detail="exited before it was signalled")
        except PidReused as exc:
            return Outcome("pid-reused", pids=[victim.pid], detail=str(exc))
        except AlreadyDying as exc:
            return Outcome("already-dying", pids=[victim.pid], detail=str(exc))
        try:
            outcome = self._signal(fd, victim.pid, level, grace_s, escalate)
        finally:
            os.close(fd)
        outcome.elapsed_s = time.monotonic() - start
        return outcome

    def _signal(self, fd: int, pid: int, level: str, grace_s: float, escalate: Optional[Escalate]) -> Outcome:
        outcome = Outcome("alive", pids=[pid])
        if level == "TERM":
            if not self._send(fd, signal.SIGTERM, outcome):
                return outcome
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                if wait_exit(fd, min(0.05, max(0.0, deadline - time.monotonic()))):
                    outcome.result = "terminated"
                    return outcome
                if escalate is not None and escalate():
                    outcome.detail = (
                        "escalated to SIGKILL: memory reached the KILL level during the grace period"
                    )
                    break
        if not self._send(fd, signal.SIGKILL, outcome):
            return outcome
        outcome.mreleased = process_mrelease(fd)
        outcome.result = "killed" if wait_exit(fd, 10.0) else "alive"
        return outcome

    @staticmethod
    def _send(fd: int, sig: signal.Signals, outcome: Outcome) -> bool:
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            outcome.result = "terminated" if outcome.signals else "vanished"
            return False
        except OSError as exc:
            outcome.result = "failed"
            outcome.detail = f"pidfd_send_signal({sig.name}): {exc.strerror}"
            return False
        outcome.signals.append(sig.name)
        return True

    # --- a whole cgroup ----------------------------------------------------------------------

    def kill_group(self, cgroup: str, wait_s: float = 10.0) -> Outcome:
        start = time.monotonic()
        pids = self._group_pids(cgroup)
        if self.dry_run:
            return Outcome("dry-run", pids=pids, detail=f"would write 1 to {cgroup}/cgroup.kill")
        if not pids:
            return Outcome("vanished", detail=f"{cgroup} has no processes left")
        kill_file = self._v2_dir(cgroup)
        if kill_file is not None and os.path.exists(f"{kill_file}/cgroup.kill"):
            try:
                with open(f"{kill_file}/cgroup.kill", "w") as f:
                    f.write("1")
                outcome = Outcome("killed", signals=["cgroup.kill"], pids=pids)
            except OSError as exc:
                outcome = self._kill_each(cgroup, pids)
                outcome.detail = f"cgroup.kill failed ({exc.strerror}); killed each process instead"
        else:
            outcome = self._kill_each(cgroup, pids)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self._group_pids(cgroup):
            time.sleep(0.02)
        if self._group_pids(cgroup):
            outcome.result = "alive"
        outcome.elapsed_s = time.monotonic() - start
        return outcome

    def _kill_each(self, cgroup: str, first: list[int]) -> Outcome:
        outcome = Outcome("killed", pids=list(first))
        seen: set[int] = set()
        for _ in range(10):  # processes may fork while we kill: repeat until none is new
            new = [p for p in self._group_pids(cgroup) if p not in seen]
            if not new:
                break
            for pid in new:
                seen.add(pid)
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    process_mrelease(fd)
                except OSError as exc:
                    if exc.errno != errno.ESRCH:
                        outcome.detail = f"pid {pid}: {exc.strerror}"
                finally:
                    os.close(fd)
        outcome.signals.append("SIGKILL")
        outcome.pids = sorted(seen)
        return outcome

    def _v2_dir(self, cgroup: str) -> Optional[str]:
        try:
            directory = self.host.cgroup_v2_dir(cgroup)
        except Unavailable:
            return None
        return directory if os.path.isdir(directory) else None

    def _group_pids(self, cgroup: str) -> list[int]:
        """Every pid in the cgroup and its descendants, from whichever hierarchy has the group."""
        directories = []
        v2 = self._v2_dir(cgroup)
        if v2 is not None:
            directories.append(v2)
        else:
            try:
                directories.append(self.host.cgroup_v1_memory_dir(cgroup))
            except Unavailable:
                return []
        pids: set[int] = set()
        for top in directories:
            for rel in ["", *self.host.walk_cgroups(top)]:
                try:
                    text = self.host.read_text(f"{top}{rel}/cgroup.procs")
                except OSError:
                    continue
                pids.update(int(x) for x in text.split())
        return sorted(pids)


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
