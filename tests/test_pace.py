"""Polling on evidence (pace.py, policy.next_look, the engine's fast path): the interval follows the
speed each gap was measured closing, with a safety factor and a floor; a gap closing at a steady
speed is never crossed unseen by more than min_interval_s of growth; swap counts as room; a
condition that holds where nothing can be done yet is looked at on its KILL line, not flat out."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.builder import FakeRoot, set_meminfo_kb
from test_daemon import GiB_KB, covered, guardian_for, machine

from guardian.daemon.engine import HELD_LOOK_S
from guardian.daemon.wakeups import WAKE, Waiter, plan
from guardian.host import Host
from guardian.pace import DECAY_S, MIN_SPAN_S, SAFETY, Gauge, Pace, bounded_wait
from guardian.sample import Sample

MiB = 1 << 20
S = 1_000_000


def test_a_gauge_measures_the_closing_speed_over_a_span_and_keeps_its_peak() -> None:
    gauge = Gauge(0, 1000 * MiB)
    gauge.read(int(MIN_SPAN_S * S) // 2, 900 * MiB)  # too short a span: noise, not measured
    assert gauge.rate(S) == 0.0
    gauge.read(S, 990 * MiB)  # 10 MiB in 1 s
    assert gauge.rate(S) == pytest.approx(10 * MiB)
    gauge.read(2 * S, 990 * MiB)  # a pause: the peak stays, decaying
    assert gauge.rate(2 * S) == pytest.approx(10 * MiB * 0.5 ** (1 / DECAY_S))
    assert gauge.rate(int((1 + DECAY_S) * S)) == pytest.approx(5 * MiB)
    gauge.read(3 * S, 890 * MiB)  # faster: the new peak
    assert gauge.rate(3 * S) == pytest.approx(100 * MiB)
    gauge.read(4 * S, 2000 * MiB)  # memory freed: growth, never a negative speed
    assert gauge.rate(4 * S) > 0


def test_pace_plans_for_twice_the_measured_speed_and_at_least_the_floor() -> None:
    pace = Pace()
    floor = 256 * MiB
    assert pace.seconds("g", 512 * MiB, 0, floor) == pytest.approx(2.0)  # nothing measured: the floor
    pace.read("g", 0, 2000 * MiB)
    pace.read("g", S, 1000 * MiB)  # 1000 MiB/s measured
    assert pace.seconds("g", 500 * MiB, S, floor) == pytest.approx(500 / (SAFETY * 1000))
    assert pace.seconds("g", -1, S, floor) == 0.0
    pace.keep(["other"])
    assert pace.rate("g", S) == 0.0
    assert bounded_wait([], 0.02, 5.0) == 5.0
    assert bounded_wait([0.001, 3.0], 0.02, 5.0) == 0.02
    assert bounded_wait([30.0], 0.02, 5.0) == 5.0


def test_the_floor_plans_a_burst_to_the_kill_line_and_the_measured_speed_to_the_term_line() -> None:
    """Seen still 25 MiB under TERM, KILL 21 MiB further: looked at when a burst at the floor
    could reach KILL (46 MiB at 256 MiB/s), not TERM; once a speed is measured, the TERM gap at
    twice that speed decides whenever it is sooner."""
    pace = Pace()
    floor = 256 * MiB
    pace.read("g", 0, 500 * MiB)
    pace.read("g", S, 500 * MiB)  # still
    assert pace.seconds("g", 25 * MiB, S, floor, 46 * MiB) == pytest.approx(46 / 256)
    assert pace.seconds("g", 25 * MiB, S, floor) == pytest.approx(25 / 256)  # no KILL line
    assert pace.seconds("g", 25 * MiB, S, floor, 10 * MiB) == pytest.approx(25 / 256)  # never below the gap
    assert pace.seconds("g", 0, S, floor, 46 * MiB) == 0.0  # at the line: now
    pace.read("g", 2 * S, 400 * MiB)  # 100 MiB/s measured closing
    assert pace.seconds("g", 25 * MiB, 2 * S, floor, 46 * MiB) == pytest.approx(25 / (SAFETY * 100))
    pace.read("g", 3 * S, 100 * MiB)  # 300 MiB/s: faster than the floor
    assert pace.seconds("g", 25 * MiB, 3 * S, floor, 46 * MiB) == pytest.approx(25 / (SAFETY * 300))


@pytest.mark.parametrize("burst_mib_s", [16, 64, 256])
def test_a_burst_no_faster_than_the_floor_from_a_standing_start_is_seen_before_the_kill_line(
    burst_mib_s: int,
) -> None:
    """The guarantee the floor gives: a quantity seen still starts falling at any moment at up
    to fill_rate; the looks the plan makes see it before it passes its KILL line."""
    floor = 256 * MiB
    term_gap, kill_gap = 25 * MiB, 46 * MiB  # from the still value down to each line
    for start_s in (0.0, 0.05, 0.17, 0.5, 1.3):  # when the burst starts, after the first look
        pace = Pace()
        now_s, value = 0.0, 0.0  # how far the quantity has fallen
        pace.read("g", 0, 0)
        seen_below_kill = False
        for _ in range(1000):
            wait = pace.seconds("g", int(term_gap - value), int(now_s * 1e6), floor, int(kill_gap - value))
            now_s += max(wait, 0.001)
            value = max(0.0, (now_s - start_s) * burst_mib_s * MiB)
            if value >= term_gap:  # the look that sees the TERM line crossed
                seen_below_kill = value <= kill_gap
                break
            pace.read("g", int(now_s * 1e6), -int(value))
        assert seen_below_kill, (burst_mib_s, start_s, value / MiB)


def walk_to_the_line(tmp_path: Path, rate_mib_s: float, policy: str = "") -> tuple[int, float]:
    """A machine whose MemAvailable falls at a steady speed towards its 10 % line, the engine
    run as the daemon's loop runs it (the fast path, and a full tick when it says so). Returns
    the looks it took and how far past the line (in seconds of growth) the crossing was seen."""
    total_kb = 16 * GiB_KB
    line_kb = total_kb // 10
    start_kb = line_kb + 2 * GiB_KB
    root = machine(tmp_path, available_kb=start_kb)
    g, _, clock = guardian_for(
        root, "dry_run = true\n" + policy + "[machine]\nmem_available = { term = '10%' }\n"
    )
    covered(g)
    t = 0.0
    looks = 0
    while True:
        available_kb = start_kb - int(rate_mib_s * 1024 * t)
        set_meminfo_kb(root, "MemAvailable", available_kb)
        looks += 1
        interval = g.quick(clock.monotonic_us())
        if interval is None:
            result = g.tick()
            if result.started:
                past_s = (line_kb - available_kb) / (rate_mib_s * 1024)
                return looks, past_s
            interval = result.interval_s
        assert looks < 10_000
        clock.advance(interval)
        t += interval


# speeds the floor covers from a standing start (a look planned before anything was measured
# comes within 2 GiB / 256 MiB/s, capped at 5 s); faster bursts are the kernel's to report
@pytest.mark.parametrize("rate_mib_s", [8, 30, 120, 300])
def test_a_steady_walk_to_the_line_costs_few_looks_and_is_seen_at_once(
    tmp_path: Path, rate_mib_s: float
) -> None:
    looks, past_s = walk_to_the_line(tmp_path / "measured", rate_mib_s)
    assert past_s <= 0.02 + 1e-6  # seen within min_interval_s of growth past the line
    looks_4g, past_4g_s = walk_to_the_line(tmp_path / "4g", rate_mib_s, "[poll]\nfill_rate = '4G'\n")
    assert past_4g_s <= 0.02 + 1e-6
    # measured on the development machine: 227, 59, 14 and 10 looks against 2160, 576, 144
    # and 57 when every look plans for a 4 GiB/s burst, as guardian did before it measured
    assert looks < {8: 260, 30: 80, 120: 20, 300: 15}[rate_mib_s]
    assert looks_4g > 5 * looks


def swap_machine(tmp_path: Path, available_pct: float, swap_free_pct: float) -> Path:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    total = 16 * GiB_KB
    swap = 8 * GiB_KB
    root.meminfo(
        total_kb=total,
        available_kb=int(total * available_pct / 100),
        swap_total_kb=swap,
        swap_free_kb=int(swap * swap_free_pct / 100),
    )
    root.psi("memory", some=(0, 0, 0, 1000), full=(0, 0, 0, 500))
    root.vmstat(pgscan_kswapd=100)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(400, "hog", ppid=1, rss_anon_kb=8 * GiB_KB, cgroup_v2="/system.slice/hog.service")
    root.finish()
    return tmp_path / "root"


def set_swap_free(root: Path, pct: float) -> None:
    set_meminfo_kb(root, "SwapFree", int(8 * GiB_KB * pct / 100))


def test_memory_below_its_line_with_swap_free_is_calm_and_paced_by_swap(tmp_path: Path) -> None:
    """MemAvailable under its line while swap is still free is room, not a condition (earlyoom's
    rule): the fast path keeps going, paced by SwapFree's gap, instead of a full look every
    few milliseconds for as long as swap lasts."""
    root = swap_machine(tmp_path, available_pct=5, swap_free_pct=60)
    g, _, clock = guardian_for(root, "dry_run = true\n")
    covered(g)
    assert not g.tick().started
    assert g.calm is not None and g.calm.swap_line_bytes == 8 * GiB_KB * 1024 // 10
    interval = g.quick(clock.monotonic_us())
    assert interval == pytest.approx(min(5.0, (0.5 * 8 * GiB_KB * 1024) / (256 * MiB)))
    set_swap_free(root, 12)  # 2 % of 8 GiB above the swap line: looks come sooner
    clock.advance(1)
    assert g.quick(clock.monotonic_us()) == pytest.approx(interval - 1)  # not due: not read
    clock.advance(interval - 1)
    assert g.quick(clock.monotonic_us()) == pytest.approx(
        0.02 * 8 * GiB_KB * 1024 / (SAFETY * 3932 * MiB / interval), rel=0.01
    )
    set_swap_free(root, 10)  # both low: the condition holds, a full tick decides
    clock.advance(1)
    assert g.quick(clock.monotonic_us()) is None
    assert g.tick().started


def test_a_condition_held_through_a_grace_period_is_not_polled_flat_out(tmp_path: Path) -> None:
    """A victim in its grace period: the machine's TERM condition holds and cannot act again
    (one kill in flight per scope), so the looks follow the KILL line and the kill's own time,
    not min_interval_s; reaching the KILL line still escalates at once."""
    root = swap_machine(tmp_path, available_pct=8, swap_free_pct=9)
    g, _, clock = guardian_for(
        root, "grace_s = 5\n[machine]\nmem_available = { term = '10%', kill = '2%' }\n"
    )
    g.killer.dry_run = False  # a kill in flight, its signals stubbed out below
    sent = []

    class FakeKill:
        fds: tuple[tuple[int, int], ...] = ()
        targets: tuple[int, ...] = ()
        killed_us = None

        def next_look_us(self, now_us: int) -> int:
            return now_us + 5 * S

        def step(self, now_us: int, escalate: bool) -> None:
            if escalate:
                sent.append("SIGKILL")

    from guardian.daemon.engine import Flight

    first = g.tick()
    assert [t.level for t in first.assessment.triggers] == ["TERM"]
    g.flights.clear()
    g.cooldowns.clear()
    g.flights[None] = Flight(first.assessment.triggers[0], first.started[0].victim, "term", FakeKill())  # type: ignore[arg-type]
    clock.advance(0.1)
    result = g.tick()
    assert not result.started
    assert result.interval_s == HELD_LOOK_S  # 6 % of 16 GiB above the KILL line
    swap = root / "proc/meminfo"
    swap.write_text(
        swap.read_text().replace(f"{int(16 * GiB_KB * 0.08):>8} kB", f"{int(16 * GiB_KB * 0.019):>8} kB", 1)
    )
    set_swap_free(root, 1)
    clock.advance(0.5)
    g.tick()
    assert sent == ["SIGKILL"]


def test_the_wake_up_trigger_is_planned_but_covers_nothing(tmp_path: Path) -> None:
    root = swap_machine(tmp_path, available_pct=50, swap_free_pct=90)
    g, _, _ = guardian_for(root, "")
    wake_plan = plan(Host(root), g.policy, [], Sample(Host(root), 0))
    wakes = [s for s in wake_plan.psi if s.wake_only]
    assert [(s.kind, s.stall_pct, s.key) for s in wakes] == [("some", 5.0, (WAKE, None))]
    waiter = Waiter()
    try:
        armed = waiter.arm(wake_plan)  # under a fake root nothing is written, and nothing polled
        assert armed.psi == frozenset() and armed.psi_modes == {}
    finally:
        waiter.close()
