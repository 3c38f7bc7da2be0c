"""Live: the kill path. pidfds make a recycled pid unhittable; escalation; group kill fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.arena import Arena
from support.freezer import Freezer
from support.kills import allow, drive, now_us

from guardian.actions import Killer, Outcome
from guardian.host import Host
from guardian.records import Process
from guardian.sources.processes import read_process

pytestmark = pytest.mark.live

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def spawn(code: str = "import time; print('ready', flush=True); time.sleep(600)") -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    child.stdout.close()  # ready is all we wanted to hear
    return child


def spawn_with_pid(pid: int) -> subprocess.Popen[bytes]:
    """A new process that gets exactly ``pid`` (recycled), through ns_last_pid."""
    for _ in range(20):
        try:
            Path(NS_LAST_PID).write_text(str(pid - 1))
        except OSError as exc:
            pytest.skip(f"cannot steer pid allocation here: {exc.strerror}")
        child = subprocess.Popen(["sleep", "600"])
        if child.pid == pid:
            return child
        child.kill()
        child.wait()
    pytest.skip("another process kept taking the pid")


def gone(host: Host) -> Process:
    """The record of a process that has exited and been reaped."""
    child = spawn()
    record = read_process(host, child.pid)
    child.kill()
    child.wait()
    return record


def test_recycled_pid_is_not_signalled(live_host: Host) -> None:
    victim = gone(live_host)
    stranger = spawn_with_pid(victim.pid)
    try:
        outcome = drive(Killer(live_host).start_process(victim, "KILL", 1, allow, now_us()))
        assert outcome.result == "pid-reused"
        assert outcome.signals == []
        assert "nothing was sent" in outcome.detail
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_pidfd_opened_before_reuse_cannot_reach_the_new_process(live_host: Host) -> None:
    child = spawn()
    victim = read_process(live_host, child.pid)
    killer = Killer(live_host)
    pidfd = killer.open_victim(victim)  # pinned when chosen...
    child.kill()  # ...then it exits (the test's own child) and its pid is recycled
    child.wait()
    stranger = spawn_with_pid(victim.pid)
    try:
        outcome = drive(killer.start_process(victim, "KILL", 1, allow, now_us(), pidfd))
        assert outcome.result == "vanished"
        assert outcome.signals == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_term_then_kill_after_grace_with_mrelease(arena: Arena, live_host: Host) -> None:
    """SIGTERM ignored, SIGKILL after the grace, then process_mrelease. A victim left to run
    races the reap: it may tear down its own memory first (then the call fails with ESRCH, and
    under load it often wins). So the victim, holding 160 MiB inside the test's own confined
    cgroup, is frozen (cgroup v1 freezer) once it ignores SIGTERM: it cannot exit, the reap
    must take its memory, and it dies once the test thaws it."""
    stubborn = arena.spawn(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "x = bytearray(160 << 20); x[::4096] = b's' * len(x[::4096]); print('ready', flush=True); "
        "time.sleep(600)"
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    freezer = Freezer(live_host)
    try:
        kill = Killer(live_host).start_process(
            read_process(live_host, stubborn.pid), "TERM", 0.3, allow, now_us()
        )
        assert not isinstance(kill, Outcome)
        freezer.freeze(stubborn.pid)  # SIGTERM is sent; from here on it cannot run
        thaw = threading.Timer(2.5, freezer.thaw)  # let the frozen victim die, well after the reap
        thaw.start()
        try:
            outcome = drive(kill)
        finally:
            thaw.cancel()
        assert outcome.signals == ["SIGTERM", "SIGKILL"]
        assert outcome.result == "killed"
        assert outcome.mreleased, "process_mrelease did not reap a SIGKILLed victim that could not exit"
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
    finally:
        freezer.cleanup()
        stubborn.kill()
        stubborn.wait(timeout=10)


def test_escalation_during_grace(live_host: Host) -> None:
    stubborn = spawn(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    )
    calls = []

    def escalate() -> bool:
        calls.append(1)
        return len(calls) >= 2  # memory reaches the KILL level on the second look

    started = Killer(live_host).start_process(
        read_process(live_host, stubborn.pid), "TERM", 600, allow, now_us()
    )
    outcome = drive(started, escalate)
    assert outcome.signals == ["SIGTERM", "SIGKILL"]
    assert "escalated" in outcome.detail
    # a 600 s grace period, yet the kill ended within drive()'s limit: SIGKILL came on the look
    # that saw the KILL level
    stubborn.wait(timeout=10)


def test_term_is_enough_for_a_cooperative_victim(live_host: Host) -> None:
    child = spawn()
    outcome = drive(
        Killer(live_host).start_process(read_process(live_host, child.pid), "TERM", 5, allow, now_us())
    )
    assert outcome.result == "terminated" and outcome.signals == ["SIGTERM"]
    assert not outcome.mreleased  # never after SIGTERM (earlyoom#354)
    assert child.wait(timeout=10) == -signal.SIGTERM


def test_dry_run_signals_nothing(live_host: Host) -> None:
    child = spawn()
    try:
        outcome = Killer(live_host, dry_run=True).start_process(
            read_process(live_host, child.pid), "KILL", 1, allow, now_us()
        )
        assert isinstance(outcome, Outcome)
        assert outcome.result == "dry-run" and outcome.signals == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_group_kill_without_cgroup_kill_kills_each_pid(
    arena: Arena, live_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cgroup2 group, where guardian would write cgroup.kill if it were there (a v1 memory
    # group never has one: killing it member by member would pass whatever exists() said)
    if arena.v2_dir is None:
        pytest.skip("cgroup.kill is a cgroup2 file: needs cgroup2")
    members = [arena.spawn("import time; print('ready', flush=True); time.sleep(600)") for _ in range(3)]
    for m in members:
        assert m.stdout is not None and m.stdout.readline() == b"ready\n"
    killer = Killer(live_host)
    real_exists = os.path.exists
    # a kernel before 5.14: no cgroup.kill file
    monkeypatch.setattr(
        os.path, "exists", lambda p: False if str(p).endswith("cgroup.kill") else real_exists(p)
    )
    outcome = drive(killer.start_group(arena.name, "v2", allow, now_us()))
    assert outcome.result == "killed"
    assert outcome.signals == ["SIGKILL"]
    assert sorted(outcome.pids) == sorted(m.pid for m in members)
    for m in members:
        assert m.wait(timeout=10) == -signal.SIGKILL
