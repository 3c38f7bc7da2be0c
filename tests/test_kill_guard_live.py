"""Live: the never-kill and protect rules are asked again right before every signal.

A victim is chosen from a ranking; between that ranking and the signal (or during its grace
period) it can change: exec into a protected program, be renamed, become -1000, move into a
protected unit. Each such process must not be signalled. Group kills judge every member,
including members that join while the group is being killed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from support.arena import Arena
from support.kills import drive, now_us

from guardian.actions import GroupKill, Killer, ProcessKill
from guardian.config import parse_policy
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.sources.processes import parse_stat, read_process

pytestmark = pytest.mark.live

# the child renames itself (/proc/self/comm) when told to, on its stdin
RENAMES = (
    "import signal, sys, time\n"
    "if len(sys.argv) > 1: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "open('/proc/self/comm', 'w').write('guardian-safe')\n"
    "print('renamed', flush=True)\n"
    "time.sleep(600)\n"
)
PROTECT = "[[protect]]\ncomm = '^guardian-safe$'\n"


def guard_for(host: Host, policy_text: str, whole_group: bool = False):  # type: ignore[no-untyped-def]
    from guardian.selection import Selector

    policy = parse_policy(policy_text, "test.toml")
    return Selector(policy, make_plugin_manager(None, entry_points=False)).guard(host, whole_group)


def renamer(ignore_term: bool = False) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", RENAMES] + (["ignore-term"] if ignore_term else [])
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


def rename(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"go\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"renamed\n"


def reap(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
    child.wait(timeout=10)
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


def test_a_victim_protected_after_the_ranking_is_not_signalled(live_host: Host) -> None:
    child = renamer()
    try:
        ranked = read_process(live_host, child.pid)  # ranked under its old name
        killer = Killer(live_host)
        pidfd = killer.open_victim(ranked)  # pinned, as the engine pins a victim
        rename(child)  # now it is what the policy protects
        started = killer.start_process(ranked, "KILL", 5, guard_for(live_host, PROTECT), now_us(), pidfd)
        outcome = drive(started)
        assert outcome.result == "protected"
        assert outcome.signals == []
        assert "protected by policy protect[0]" in outcome.detail
        assert child.poll() is None
    finally:
        reap(child)


def test_no_sigkill_for_a_victim_protected_during_its_grace_period(live_host: Host) -> None:
    child = renamer(ignore_term=True)
    try:
        victim = read_process(live_host, child.pid)
        started = Killer(live_host).start_process(
            victim, "TERM", 600, guard_for(live_host, PROTECT), now_us()
        )
        assert isinstance(started, ProcessKill) and started.outcome.signals == ["SIGTERM"]
        rename(child)  # SIGTERM was ignored; now it is protected
        outcome = drive(started, escalate=lambda: True)  # memory reached the KILL level
        assert outcome.result == "protected"
        assert outcome.signals == ["SIGTERM"]
        assert child.poll() is None
    finally:
        reap(child)


def test_a_group_kill_judges_members_that_join_while_it_runs(arena: Arena, live_host: Host) -> None:
    """Member by member (no cgroup.kill, or someone is spared), each pass judges the members
    it has not seen: a protected process that joins is spared, another one is killed."""
    sleeper = "import time; print('ready', flush=True); time.sleep(600)"
    first = arena.spawn(sleeper)
    assert first.stdout is not None and first.stdout.readline() == b"ready\n"
    hierarchy = "v1" if live_host.cgroup_layout().memory_controller == "v1" else "v2"
    kill = GroupKill(live_host, arena.name, hierarchy, guard_for(live_host, PROTECT, whole_group=True))
    kill.each = True  # as without cgroup.kill: passes over the members
    kill.started_us = now_us()
    kill.deadline_us = kill.started_us + 30_000_000
    kill._kill_each(kill._judge(kill.members()))
    assert first.wait(timeout=10) == -signal.SIGKILL
    protected, plain = renamer(), renamer()
    try:
        rename(protected)
        arena.enter(protected.pid)
        arena.enter(plain.pid)
        outcome = drive(kill)
        assert plain.wait(timeout=10) == -signal.SIGKILL
        assert protected.poll() is None
        assert outcome.result == "killed"
        assert outcome.spared == [protected.pid]
        assert sorted(outcome.pids) == sorted([first.pid, plain.pid])
        assert "guardian-safe: protected by policy protect[0]" in outcome.detail
    finally:
        reap(protected)
        reap(plain)


def test_a_group_of_protected_members_is_not_touched(arena: Arena, live_host: Host) -> None:
    child = renamer()
    try:
        rename(child)
        arena.enter(child.pid)
        hierarchy = "v1" if live_host.cgroup_layout().memory_controller == "v1" else "v2"
        started = Killer(live_host).start_group(
            arena.name, hierarchy, guard_for(live_host, PROTECT, whole_group=True), now_us()
        )
        outcome = drive(started)
        assert outcome.result == "protected" and outcome.signals == []
        assert child.poll() is None
    finally:
        reap(child)


def test_dry_run_group_kill_lists_who_would_be_spared(arena: Arena, live_host: Host) -> None:
    child = renamer()
    other = arena.spawn("import time; print('ready', flush=True); time.sleep(600)")
    try:
        assert other.stdout is not None and other.stdout.readline() == b"ready\n"
        rename(child)
        arena.enter(child.pid)
        outcome = Killer(live_host, dry_run=True).start_group(
            arena.name, "v2", guard_for(live_host, PROTECT, whole_group=True), now_us()
        )
        assert not isinstance(outcome, (GroupKill, ProcessKill))
        assert outcome.result == "dry-run" and outcome.spared == [child.pid] and outcome.pids == [other.pid]
        assert child.poll() is None and other.poll() is None
    finally:
        reap(child)


# the main thread exits (pthread_exit) while another thread holds the memory: /proc/PID shows a
# zombie leader without memory lines, but the group lives (the kernel's oom_score is not 0)
LEADER_EXITS = r"""
import ctypes, signal, sys, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so that the SIGKILL after the grace is needed
ready = threading.Event()
def work():
    buf = bytearray(48 << 20); buf[::4096] = b"x" * len(buf[::4096]); ready.set()
    while True: time.sleep(1)
threading.Thread(target=work).start(); ready.wait()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_group_whose_main_thread_exited_is_alive_and_killable(arena: Arena, live_host: Host) -> None:
    child = arena.spawn(LEADER_EXITS)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    try:
        leader = ""
        for _ in range(200):  # the leader's exit shows a moment after it prints
            leader = parse_stat(live_host.read_pid_file(child.pid, "stat").decode()).state
            if leader == "Z":
                break
            time.sleep(0.01)
        assert leader == "Z", "the main thread did not exit"
        process = read_process(live_host, child.pid)
        assert not process.is_zombie and process.rss_bytes >= 48 << 20
        selector = guard_for(live_host, "")  # the guard of an empty policy
        assert selector(process) is None
        outcome = drive(Killer(live_host).start_process(process, "TERM", 0.2, selector, now_us()))
        assert outcome.signals == ["SIGTERM", "SIGKILL"] and outcome.result == "killed"
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        reap(child)
