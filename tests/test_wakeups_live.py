"""Live: the kills' descriptors in the loop's poll set (review findings: a cgroup.events fd
polled for POLLIN is always ready, and a descriptor number reused between a kill's end and a
rearm lost the new wake-up)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.arena import Arena
from support.kills import allow, now_us

from guardian.actions import GroupKill
from guardian.daemon.wakeups import REST_S, Waiter, WakePlan
from guardian.host import Host
from guardian.sources.processes import parse_cgroup_file

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


def _toggle_populated(arena: Arena, pid: int, home: str, stop: threading.Event) -> None:
    """Move ``pid`` into the arena's cgroup2 group and back, flat out: its cgroup.events flips
    between populated 1 and 0 as fast as kernfs notifies (every 10 ms at most)."""
    assert arena.v2_dir is not None
    while not stop.is_set():
        Path(arena.v2_dir, "cgroup.procs").write_text(str(pid))
        Path(home, "cgroup.procs").write_text(str(pid))


def _home_of(live_host: Host, pid: int) -> str:
    v2 = parse_cgroup_file(Path(f"/proc/{pid}/cgroup").read_text()).v2
    assert v2 is not None
    return live_host.cgroup_v2_dir(v2)


def test_a_group_file_that_changes_flat_out_wakes_the_loop_at_most_twice_per_rest(
    arena: Arena, live_host: Host
) -> None:
    """A kernfs file the loop watches for changes (memory.events; here cgroup.events, which the
    same kernfs notification drives and a host without cgroup2's memory controller has too) that
    changes all the time wakes the loop at most twice per REST_S, not at every change: a group
    sitting at its limit changed memory.events fifty times a second in the thrash scenario, and
    every change was a full look. A change alone, and the second of two, wake it at once; a third
    within REST_S is reported when the rest ends, not lost."""
    if arena.v2_dir is None:
        pytest.skip("needs cgroup2")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    home = _home_of(live_host, child.pid)
    waiter = Waiter()
    stop = threading.Event()
    toggler = threading.Thread(target=_toggle_populated, args=(arena, child.pid, home, stop))
    try:
        waiter.arm(WakePlan(events=((f"{arena.v2_dir}/cgroup.events", arena.name),)))
        assert not waiter.wait(0).events
        toggler.start()
        woken = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            if arena.name in waiter.wait(max(0.0, end - time.monotonic())).events:
                woken += 1
        stop.set()
        toggler.join()
        assert 2 <= woken <= 2 * 1.5 / REST_S + 2, f"{woken} wake-ups in 1.5 s of changes"
        waiter.wait(REST_S * 2)  # whatever the last toggles left, reported
        time.sleep(REST_S * 1.2)  # a quiet spell
        moves = [arena.v2_dir, home, arena.v2_dir]
        for number, (directory, held) in enumerate(zip(moves, [False, False, True]), 1):
            moved_at = time.monotonic()
            Path(directory, "cgroup.procs").write_text(str(child.pid))
            wake = waiter.wait(2.0)
            took = time.monotonic() - moved_at
            assert wake.events == {arena.name}, f"change {number} was lost"
            if held:
                assert took >= REST_S / 2, f"change {number} was not held back ({took:.3f} s)"
            else:
                assert took < REST_S / 2, f"change {number} was held back ({took:.3f} s)"
            assert wake.resting == ({arena.name} if number == 2 else set())
        Path(home, "cgroup.procs").write_text(str(child.pid))
    finally:
        stop.set()
        if toggler.is_alive():
            toggler.join()
        waiter.close()
        child.kill()
        child.wait()


def test_one_groups_rest_does_not_hold_back_another_groups_first_change(
    arena: Arena, live_host: Host
) -> None:
    """Each file rests on its own: while one group's changes are held back, a second group's
    first change wakes the loop at once (the loop must not go deaf to a second service)."""
    if arena.v2_dir is None:
        pytest.skip("needs cgroup2")
    from support.arena import Arena as Made

    other = Made(live_host, 256 << 20, prefix="guardian-test")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    home = _home_of(live_host, child.pid)
    waiter = Waiter()
    try:
        assert other.v2_dir is not None
        waiter.arm(
            WakePlan(
                events=(
                    (f"{arena.v2_dir}/cgroup.events", arena.name),
                    (f"{other.v2_dir}/cgroup.events", other.name),
                )
            )
        )
        for directory in (arena.v2_dir, home):  # in and out: the first group rests from then
            Path(directory, "cgroup.procs").write_text(str(child.pid))
            assert waiter.wait(2.0).events == {arena.name}
        started = time.monotonic()
        Path(other.v2_dir, "cgroup.procs").write_text(str(child.pid))
        wake = waiter.wait(2.0)
        assert wake.events == {other.name} and wake.resting == {arena.name}
        assert time.monotonic() - started < REST_S / 2, "the second group waited for the first's rest"
        Path(home, "cgroup.procs").write_text(str(child.pid))
    finally:
        waiter.close()
        child.kill()
        child.wait()
        other.cleanup()


def test_a_v1_threshold_crossed_flat_out_wakes_the_loop_at_most_twice_per_rest(arena: Arena) -> None:
    """A v1 usage threshold fires at every crossing: a process that swings its group's usage
    about the line (16 MiB mapped, touched and unmapped, over and over) wakes the loop at most
    twice per REST_S."""
    if arena.v1_dir is None:
        pytest.skip("needs the v1 memory controller")
    swinger = arena.spawn(
        "import mmap, signal, time\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "print('ready', flush=True)\n"
        "signal.sigwait({signal.SIGUSR1})\n"
        "end = time.monotonic() + 1.5\n"
        "while time.monotonic() < end:\n"
        "    block = mmap.mmap(-1, 16 << 20)\n"
        "    for offset in range(0, 16 << 20, 4096):\n"
        "        block[offset] = 1\n"
        "    block.close()\n"
    )
    assert swinger.stdout is not None and swinger.stdout.readline() == b"ready\n"
    usage = int(Path(arena.v1_dir, "memory.usage_in_bytes").read_text())  # before any swing
    waiter = Waiter()
    try:
        waiter.arm(WakePlan(thresholds=((arena.v1_dir, usage + (8 << 20), arena.name),)))
        swinger.send_signal(signal.SIGUSR1)
        woken = 0
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            if waiter.wait(max(0.0, end - time.monotonic())).kernel:
                woken += 1
        assert 2 <= woken <= 2 * 1.2 / REST_S + 2, f"{woken} wake-ups in 1.2 s of crossings"
    finally:
        waiter.close()
        swinger.kill()
        swinger.wait()
