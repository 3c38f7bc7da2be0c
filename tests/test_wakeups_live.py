"""Live: the kills' descriptors in the loop's poll set (review findings: a cgroup.events fd
polled for POLLIN is always ready, and a descriptor number reused between a kill's end and a
rearm lost the new wake-up)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.arena import Arena
from support.kills import allow, now_us

from guardian.actions import GroupKill
from guardian.daemon.wakeups import Waiter, WakePlan
from guardian.host import Host

pytestmark = pytest.mark.live


def test_a_group_kill_in_flight_does_not_spin_the_loop(arena: Arena, live_host: Host) -> None:
    """cgroup.events is polled for POLLPRI (a change), never POLLIN: kernfs files always poll
    readable, and the loop woke at once, tens of thousands of times a second."""
    if arena.v2_dir is None:
        pytest.skip("needs cgroup2")
    first = arena.spawn("import time; print('ready', flush=True); time.sleep(600)")
    assert first.stdout is not None and first.stdout.readline() == b"ready\n"
    kill = GroupKill(live_host, arena.name, "v2", allow)
    assert kill.start(now_us()) is None and kill.outcome.signals == ["cgroup.kill"]
    assert first.wait(timeout=10) == -9
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    waiter = Waiter()
    try:
        arena.enter(late.pid)  # joins after the write: the kill stays in flight
        passes = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            now = now_us()
            assert kill.step(now) is None
            waiter.set_kills(kill.fds)
            waiter.wait(min(0.2, max(0.0, (kill.next_look_us(now) - now) / 1e6)))
            passes += 1
        assert passes <= 10, f"{passes} wake-ups in one second: the descriptor is always ready"
    finally:
        waiter.close()
        kill.close()
        late.kill()
        late.wait()


def test_a_reused_descriptor_number_keeps_its_new_wake_up(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    waiter = Waiter()
    try:
        fd = os.pidfd_open(child.pid)
        waiter.set_kills([(fd, select.POLLIN)])
        os.close(fd)  # the kill ended and closed its pidfd...
        waiter.arm(WakePlan(directories=(str(tmp_path),)))  # ...and the rearm reuses the number
        assert fd in waiter.fds, "the test needs the number reused"
        waiter.set_kills([])  # the kill is gone from the loop's set
        os.mkdir(tmp_path / "new-service")
        assert waiter.wait(2.0).cgroups, "the new wake-up was unregistered with the old kill"
    finally:
        waiter.close()
        child.kill()
        child.wait()


@pytest.mark.parametrize("filled", ["after-the-arm", "between-the-plan-and-the-arm"])
def test_an_empty_watched_group_wakes_the_loop_when_its_first_process_enters(
    arena: Arena, live_host: Host, filled: str
) -> None:
    """A unit's limits are written after its group is made and before its first process enters:
    the plan watches the limit of a group whose headroom it watches, and the cgroup.events of
    one still empty, whose change (populated 0 -> 1) wakes the loop to rescan and plan again. A
    group that filled after the plan read it and before the arm read it (no change is left to
    notify then) is reported by the next wait at once."""
    if arena.v2_dir is None:
        pytest.skip("needs cgroup2")
    from dataclasses import replace

    from guardian.config import parse_policy
    from guardian.daemon.wakeups import plan
    from guardian.sample import Sample

    policy = parse_policy(
        f'[[cgroup]]\nmatch = "{arena.name.strip("/")}"\nmin_headroom = {{ term = "64M" }}\n', "test.toml"
    )
    made = plan(live_host, policy, [arena.name], Sample(live_host, now_us()))
    assert [(lim.cgroup, lim.max_bytes) for lim in made.limits] == [(arena.name, 256 << 20)]
    assert made.unpopulated == ((f"{arena.v2_dir}/cgroup.events", arena.name),)
    made = replace(made, directories=())  # groups other tests make are no wake-up of this one's
    waiter = Waiter()
    try:
        child = None
        if filled == "between-the-plan-and-the-arm":
            child = arena.spawn("import time; print('ready', flush=True); time.sleep(600)")
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        waiter.arm(made)
        if child is None:
            assert not waiter.wait(0.1).cgroups  # nothing has changed yet
            child = arena.spawn("import time; print('ready', flush=True); time.sleep(600)")
        started = time.monotonic()
        wake = waiter.wait(5)
        assert wake.cgroups and wake.kernel and wake.filled == {arena.name}
        assert time.monotonic() - started < 4, "the wait ran out: nothing woke it"
        assert not waiter.wait(0).filled  # reported once
        # populated now: the plan made for the group as it is no longer asks for it
        assert plan(live_host, policy, [arena.name], Sample(live_host, now_us())).unpopulated == ()
    finally:
        waiter.close()
