"""Engine.tick() on built roots with a fake clock and a fake journal: decisions and fields.

Under a fake root the Killer only decides (actions.py), so every decision here reports as a
dry run, with exactly the fields journald would receive.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

import pytest
from fixtures.builder import FakeRoot, set_meminfo_kb
from support.clock import FakeClock
from support.sinks import MemorySink

from guardian.config import parse_policy
from guardian.daemon.engine import Act, Engine, TickResult
from guardian.daemon.wakeups import Armed, Waiter, Wake, WakePlan
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.pace import SAFETY
from guardian.plugins import make_plugin_manager
from guardian.report import MSG_DRY_RUN, MSG_NOT_DONE, Reporter
from guardian.selection import Selector

GiB_KB = 1024 * 1024
MiB = 1 << 20


def guardian_for(root: Path, policy_text: str) -> tuple[Engine, MemorySink, FakeClock]:
    policy = parse_policy(policy_text, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    sink = MemorySink()
    clock = FakeClock()
    g = Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), clock)
    return g, sink, clock


def acted(result: TickResult) -> Optional[Act]:
    """The trigger the tick acted on (these roots have one scope in trouble at a time)."""
    assert len(result.started) <= 1
    return result.started[0] if result.started else None


def victim_comm(result: TickResult) -> Optional[str]:
    act = acted(result)
    if act is None or act.victim is None or act.victim.candidate.process is None:
        return None
    return act.victim.candidate.process.comm


def covered(engine: Engine) -> None:
    """Wake-ups that cover every watched condition (these roots watch no cgroup)."""
    engine.use_wakeups(WakePlan(), Armed())


def machine(tmp_path: Path, available_kb: int, extra: bool = True) -> Path:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=available_kb)
    root.psi("memory", some=(0, 0, 0, 1000), full=(0, 0, 0, 500))
    root.vmstat(pgscan_kswapd=100)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    if extra:
        root.process(
            300,
            "critical",
            ppid=1,
            rss_anon_kb=3 * GiB_KB,
            oom_score_adj=-1000,
            cgroup_v2="/system.slice/critical.service",
        )
        root.process(
            310, "precious", ppid=1, rss_anon_kb=2 * GiB_KB, cgroup_v2="/system.slice/precious.service"
        )
        root.process(320, "worker", ppid=1, rss_anon_kb=GiB_KB, cgroup_v2="/system.slice/worker.service")
        root.process(330, "tiny", ppid=1, rss_anon_kb=4096, cgroup_v2="/system.slice/worker.service")
        for svc in ("critical", "precious", "worker"):
            root.cgroup_v2(f"/system.slice/{svc}.service")
    root.finish()
    return tmp_path / "root"


POLICY = """
cooldown_s = 10
[machine]
mem_available = { term = "10%", kill = "5%" }
[[protect]]
comm = "^precious$"
"""


def set_available(root: Path, pct: float) -> None:
    set_meminfo_kb(root, "MemAvailable", int(16 * GiB_KB * pct / 100))


def test_decision_fields_and_never_kill(tmp_path: Path) -> None:
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.04))
    g, sink, _ = guardian_for(root, POLICY)
    act = acted(g.tick())
    assert act is not None and act.trigger.level == "KILL"
    assert act.victim is not None and act.victim.candidate.process is not None
    assert act.victim.candidate.process.comm == "worker"  # not the -1000 or the protected one
    (event,) = sink.events
    assert event["MESSAGE_ID"] == MSG_DRY_RUN
    assert event["MESSAGE"].startswith("dry run: would kill pid 320 (worker), 1024 MiB: MemAvailable ")
    assert event["PRIORITY"] == "5"
    assert event["GUARDIAN_ACTION"] == "kill"
    assert event["GUARDIAN_LEVEL"] == "KILL"
    assert event["GUARDIAN_TRIGGER"] == "machine:memory"
    assert event["GUARDIAN_SCOPE"] == "/"
    assert event["GUARDIAN_VICTIM_PID"] == "320"
    assert event["GUARDIAN_VICTIM_COMM"] == "worker"
    assert event["GUARDIAN_VICTIM_CGROUP"] == "/system.slice/worker.service"
    assert event["GUARDIAN_VICTIM_RSS_BYTES"] == str(1024 * MiB)
    assert event["GUARDIAN_VALUE_MEM_AVAILABLE_BYTES"] == str(int(16 * GiB_KB * 0.04) * 1024)
    assert event["GUARDIAN_VALUE_MEM_AVAILABLE_PCT"] == "4.0"
    # the default ranking (cause): its group frees the worker's 1 GiB of the machine's 16 GiB
    assert float(event["GUARDIAN_SCORE_CAUSE"]) > 1000 * 1024 / (16 * 1024) * 0.9
    assert event["GUARDIAN_OUTCOME"] == "dry-run"


def test_cooldown_then_a_new_episode(tmp_path: Path) -> None:
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.08))
    g, sink, clock = guardian_for(root, POLICY)
    assert victim_comm(g.tick()) is not None
    clock.advance(0.5)
    assert not g.tick().started  # same trouble, cooling down
    clock.advance(2)
    assert not g.tick().started  # TERM level: waits for recovery or the cooldown
    set_available(root, 30)
    clock.advance(0.5)
    assert g.tick().assessment.triggers == ()  # recovered: the cooldown ends
    set_available(root, 8)
    clock.advance(0.5)
    assert victim_comm(g.tick()) is not None  # a new episode acts at once
    assert len([e for e in sink.events if e["MESSAGE_ID"] == MSG_DRY_RUN]) == 2


def test_kill_level_acts_again_after_settling(tmp_path: Path) -> None:
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.03))
    g, _, clock = guardian_for(root, POLICY)
    assert victim_comm(g.tick()) is not None
    clock.advance(0.2)
    assert not g.tick().started  # memory has not had time to show the kill yet
    clock.advance(1.0)
    assert victim_comm(g.tick()) is not None  # still at KILL after settling: next victim


def test_hysteresis(tmp_path: Path) -> None:
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.09), extra=False)
    g, _, _ = guardian_for(root, "[machine]\nmem_available = { term = '10%' }\n")
    assert [t.level for t in g.tick().assessment.triggers] == ["TERM"]
    set_available(root, 11)  # above the line, within 2 % of it: still on
    assert [t.level for t in g.tick().assessment.triggers] == ["TERM"]
    set_available(root, 12.5)
    assert g.tick().assessment.triggers == ()
    set_available(root, 11)  # off now, so 11 % is fine
    assert g.tick().assessment.triggers == ()


def write_psi(root: Path, some_total: int, full_total: int) -> None:
    (root / "proc/pressure/memory").write_text(
        f"some avg10=0.00 avg60=0.00 avg300=0.00 total={some_total}\n"
        f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_total}\n"
    )


def write_pgscan(root: Path, value: int) -> None:
    text = (root / "proc/vmstat").read_text().splitlines()
    (root / "proc/vmstat").write_text(
        "\n".join(f"pgscan_kswapd {value}" if line.startswith("pgscan_kswapd ") else line for line in text)
        + "\n"
    )


@pytest.mark.parametrize("reclaim", [True, False])
def test_psi_must_hold_for_its_duration_with_reclaim(tmp_path: Path, reclaim: bool) -> None:
    root = machine(tmp_path, available_kb=8 * GiB_KB)
    g, _, clock = guardian_for(root, "[machine]\npsi = { kind = 'full', stall_pct = 50, duration_s = 3 }\n")
    total, pgscan, fired_at = 0, 100, None
    for step in range(60):  # 100 ms ticks, 80 % full stall
        total += 80_000
        if reclaim:
            pgscan += 10
        write_psi(root, total, total)
        write_pgscan(root, pgscan)
        act = acted(g.tick(clock.monotonic_us()))
        if act is not None:
            fired_at = step
            break
        clock.advance(0.1)
    if reclaim:
        assert fired_at is not None and 30 <= fired_at <= 42  # 3 s of stall (after a 1 s warm-up)
        assert act is not None and act.trigger.condition == "psi"
    else:
        assert fired_at is None  # stalls without reclaim are not a memory shortage


def batch_with_an_events_rule(tmp_path: Path) -> tuple[Engine, MemorySink, FakeClock, Path]:
    """A machine with one service and a rule on its memory.events rate; the file to write."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=8 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(500, "batch", ppid=1, rss_anon_kb=200 * 1024, cgroup_v2="/system.slice/batch.service")
    root.cgroup_v2("/system.slice/batch.service", max=512 * MiB)
    root.finish()
    path = tmp_path / "root/sys/fs/cgroup/system.slice/batch.service/memory.events"
    g, sink, clock = guardian_for(
        tmp_path / "root",
        "[machine]\nenabled = false\n[[cgroup]]\nmatch = 'system.slice/*.service'\nevents = { max_per_s = 100 }\n",
    )
    return g, sink, clock, path


def test_memory_events_rate(tmp_path: Path) -> None:
    g, sink, clock, path = batch_with_an_events_rule(tmp_path)
    assert not g.tick().started  # first reading: no rate yet
    path.write_text("low 0\nhigh 0\nmax 50\noom 0\noom_kill 0\noom_group_kill 0\n")
    clock.advance(1)
    assert not g.tick().started  # 50/s
    path.write_text("low 0\nhigh 0\nmax 400\noom 0\noom_kill 0\noom_group_kill 0\n")
    clock.advance(1)
    act = acted(g.tick())
    assert act is not None and act.trigger.condition == "events"
    assert act.trigger.values == {"max_per_s": 350.0}
    assert sink.events[-1]["GUARDIAN_VICTIM_COMM"] == "batch"


def test_a_resting_memory_events_file_is_read_by_the_tick_not_taken_as_unchanged(tmp_path: Path) -> None:
    """The kernel reports every change of an armed memory.events, so a tick takes the counters
    of one that did not change as last read. A file resting after a wake-up (Waiter, REST_S)
    reports nothing: its counters may have moved, and the tick must read them."""
    g, _, clock, path = batch_with_an_events_rule(tmp_path)
    group = "/system.slice/batch.service"
    assert not g.tick(clock.monotonic_us()).started  # finds the group
    g.use_wakeups(WakePlan(), Armed(events=frozenset({group})))
    assert not g.tick(clock.monotonic_us()).started  # the first reading of the armed file
    clock.advance(1)
    g.woke(Wake(events=frozenset({group}), kernel=True, resting=frozenset({group})), clock.monotonic_us())
    assert not g.tick(clock.monotonic_us()).started  # changed (nothing new counted), now resting
    path.write_text("low 0\nhigh 0\nmax 400\noom 0\noom_kill 0\noom_group_kill 0\n")
    clock.advance(1)
    g.woke(Wake(resting=frozenset({group})), clock.monotonic_us())  # another wake-up; it rests on
    act = acted(g.tick(clock.monotonic_us()))
    assert act is not None and act.trigger.condition == "events"
    assert act.trigger.values == {"max_per_s": 400.0}


def test_interval_shrinks_with_headroom(tmp_path: Path) -> None:
    policy = "[poll]\nfill_rate = '1G'\nmax_interval_s = 5\nmin_interval_s = 0.05\n[machine]\nmem_available = { term = '10%' }\n"
    roomy, _, _ = guardian_for(machine(tmp_path / "a", available_kb=12 * GiB_KB), policy)
    tight, _, _ = guardian_for(machine(tmp_path / "b", available_kb=int(16 * GiB_KB * 0.12)), policy)
    assert roomy.tick().interval_s == 5.0  # 10.4 GiB to the line at 1 GiB/s
    interval = tight.tick().interval_s
    assert interval == pytest.approx(0.32, abs=0.01)  # 2 % of 16 GiB = 0.32 GiB at 1 GiB/s


def test_a_timed_stall_is_read_every_quarter_second_a_crossed_line_at_once(tmp_path: Path) -> None:
    """Sustained pressure must not make guardian poll flat out: a stall is timed over seconds,
    so it looks every STALL_POLL_S; a crossed memory line gets min_interval_s."""
    from guardian.daemon.engine import HELD_LOOK_S
    from guardian.policy import STALL_POLL_S

    root = machine(tmp_path / "a", available_kb=8 * GiB_KB)
    policy = (
        "[poll]\nmin_interval_s = 0.02\n[machine]\npsi = { kind = 'full', stall_pct = 50, duration_s = 30 }\n"
    )
    g, _, clock = guardian_for(root, policy)
    total, pgscan = 0, 100
    intervals = []
    for _ in range(40):  # 100 ms ticks, 80 % full stall with reclaim: timed, not yet crossed
        total, pgscan = total + 80_000, pgscan + 10
        write_psi(root, total, total)
        write_pgscan(root, pgscan)
        result = g.tick(clock.monotonic_us())
        assert not result.started
        intervals.append(result.interval_s)
        clock.advance(0.1)
    assert g.state.stalled_since_us  # the stall is being timed
    assert intervals[-1] == STALL_POLL_S
    # below the TERM line, with the kill started (a dry run here: its cooldown holds the scope),
    # what matters is the KILL line: looked at as often as it could be reached at the floor
    # speed (256 MiB/s), and at least every HELD_LOOK_S
    held = "[poll]\nmin_interval_s = 0.02\n[machine]\nmem_available = { term = '10%', kill = '2%' }\n"
    tight, _, _ = guardian_for(machine(tmp_path / "b", available_kb=int(16 * GiB_KB * 0.08)), held)
    result = tight.tick()
    assert result.started and result.interval_s == HELD_LOOK_S  # 983 MiB above the KILL line
    tighter, _, _ = guardian_for(machine(tmp_path / "c", available_kb=int(16 * GiB_KB * 0.021)), held)
    assert tighter.tick().interval_s == pytest.approx(16.4 / 256, abs=0.002)  # 16.4 MiB to go


def db_root(tmp_path: Path, helper_adj: int = 0) -> Path:
    """system.slice/db.service near its limit: db at oom_score_adj -1000, and a helper."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=8 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(
        600, "db", ppid=1, rss_anon_kb=400 * 1024, oom_score_adj=-1000, cgroup_v2="/system.slice/db.service"
    )
    root.process(
        601,
        "helper",
        ppid=600,
        rss_anon_kb=90 * 1024,
        oom_score_adj=helper_adj,
        cgroup_v2="/system.slice/db.service",
    )
    root.cgroup_v2("/system.slice/db.service", max=512 * MiB)
    root.finish()
    return tmp_path / "root"


GROUP_RULE = (
    "[machine]\nenabled = false\n[[cgroup]]\nmatch = 'system.slice/db.service'\n"
    "min_headroom = { term = '20%' }\naction = 'group'\n"
)


def test_group_action_spares_a_never_kill_member(tmp_path: Path) -> None:
    """A group kill takes every member but the never-kill ones, as the kernel's oom.group kill
    spares OOM_SCORE_ADJ_MIN tasks; cgroup.kill would have taken db too."""
    g, sink, _ = guardian_for(db_root(tmp_path), GROUP_RULE)
    act = acted(g.tick())
    assert act is not None and act.action == "group-kill"
    assert act.outcome is not None and act.outcome.result == "dry-run"
    assert act.outcome.pids == [601] and act.outcome.spared == [600]
    event = sink.events[-1]
    assert event["MESSAGE_ID"] == MSG_DRY_RUN
    assert event["GUARDIAN_VICTIM_PIDS"] == "601"
    assert event["GUARDIAN_SPARED_PIDS"] == "600"
    assert "would send SIGKILL to each member" in event["GUARDIAN_DETAIL"]
    assert "oom_score_adj is -1000" in event["GUARDIAN_DETAIL"]


def test_group_action_refuses_a_group_of_never_kill_members(tmp_path: Path) -> None:
    g, sink, _ = guardian_for(db_root(tmp_path, helper_adj=-1000), GROUP_RULE)
    act = acted(g.tick())
    assert act is not None and act.victim is None
    assert act.skipped is not None and "every process in it must be spared" in act.skipped
    assert sink.events[-1]["MESSAGE_ID"] == MSG_NOT_DONE
    assert sink.events[-1]["GUARDIAN_OUTCOME"] == "protected"


def test_an_idle_tick_reads_only_what_it_must(tmp_path: Path) -> None:
    """With the PSI trigger armed by the kernel and nothing stalling, an idle tick reads meminfo
    and nothing else (vmstat only to refresh a stale reclaim baseline)."""
    from guardian.policy import PolicyState, assess
    from guardian.sample import Sample

    root = machine(tmp_path, available_kb=12 * GiB_KB)
    policy = parse_policy("[machine]\npsi = { kind = 'full', stall_pct = 50, duration_s = 3 }\n", "p.toml")
    state = PolicyState()
    quiet = {("machine", None)}
    first = Sample(Host(root), 1_000_000)
    assess(first, policy, state, 1_000_000, quiet_psi=quiet)
    assert first.reads == ["meminfo", "vmstat"]  # the reclaim baseline, once
    second = Sample(Host(root), 2_000_000)
    assessment = assess(second, policy, state, 2_000_000, quiet_psi=quiet)
    assert second.reads == ["meminfo"]
    assert assessment.interval_s == 5.0  # 10.4 GiB from the line: the ceiling; no PSI polling
    # the trigger fired (no longer quiet): read PSI, and look again within a second
    third = Sample(Host(root), 3_000_000)
    assert assess(third, policy, state, 3_000_000).interval_s == 1.0
    assert "psi:memory" in third.reads


def test_rules_walk_only_their_subtrees(tmp_path: Path) -> None:
    policy = parse_policy(
        "[[cgroup]]\nmatch = 'system.slice/*.service'\nevents = { oom_per_s = 0 }\n"
        "[[cgroup]]\nmatch = 'kubepods.slice/**/*.scope'\nevents = { oom_per_s = 0 }\n"
        "[[cgroup]]\nmatch = 'init.scope'\nevents = { oom_per_s = 0 }\n",
        "p.toml",
    )
    assert [r.walk() for r in policy.cgroups] == [
        ("/system.slice", 1),
        ("/kubepods.slice", None),
        ("/init.scope", 0),
    ]
    from conftest import fixture_root

    g, _, _ = guardian_for(fixture_root("k8s-node"), "")
    g.replace_policy(Loaded(policy, g.loaded.plugins, Selector(policy, g.loaded.plugins)))
    from guardian.sample import Sample

    g.rescan(Sample(g.host, 0), 0, force=True)
    assert "/system.slice/kubelet.service" in g.watched
    assert "/init.scope" in g.watched
    assert any(p.endswith(".scope") and p.startswith("/kubepods.slice/") for p in g.watched)
    assert not any(p.endswith(".slice") for p in g.watched)


def test_idle_fast_path(tmp_path: Path) -> None:
    """After a calm full tick, a wake-up reads MemAvailable alone; at the line it runs a full
    tick again."""
    root = machine(tmp_path, available_kb=12 * GiB_KB)
    g, _, clock = guardian_for(
        root, "[poll]\nfill_rate = '4G'\n[machine]\nmem_available = { term = '10%' }\n"
    )
    assert g.quick(clock.monotonic_us()) is None  # nothing known yet: full tick
    covered(g)  # no watched cgroups here
    g.tick()
    assert g.calm is not None
    total = 16 * GiB_KB * 1024
    line = int(total * 10 / 100)  # the TERM line: nothing holds, so no hysteresis
    assert g.calm.mem_line_bytes == line and g.calm.swap_line_bytes is None  # no swap
    interval = g.quick(clock.monotonic_us())
    assert interval == pytest.approx((12 * GiB_KB * 1024 - line) / (4 << 30))
    assert g.quick(clock.monotonic_us()) == pytest.approx(interval)  # not due yet: not read again
    set_available(root, 11)  # 1 % above the line: still the fast path
    clock.advance(interval)
    closing = (12 * GiB_KB - int(16 * GiB_KB * 0.11)) * 1024 / interval  # measured, bytes/s
    gap = total / 100
    interval = g.quick(clock.monotonic_us())
    assert interval == pytest.approx(min(gap / (4 << 30), gap / (SAFETY * closing)), rel=1e-3)
    set_available(root, 10)  # at the line: a full tick must look
    clock.advance(interval)
    assert g.quick(clock.monotonic_us()) is None
    set_available(root, 50)
    clock.advance(61)  # a full tick is due now and then anyway
    assert g.quick(clock.monotonic_us()) is None


@pytest.mark.parametrize(
    ("field", "kb"), [("MemTotal", 32 * GiB_KB), ("SwapTotal", 8 * GiB_KB)], ids=["memory-added", "swapon"]
)
def test_the_fast_path_sees_the_totals_its_lines_are_shares_of_move(
    tmp_path: Path, field: str, kb: int
) -> None:
    """Memory hot-plugged or a balloon deflated (MemTotal), a swapon (SwapTotal): the lines of
    the calm are shares of the old totals. The fast path runs a full tick, which draws them
    again, at its next read of meminfo."""
    root = machine(tmp_path, available_kb=12 * GiB_KB)
    g, _, clock = guardian_for(
        root, "[machine]\nmem_available = { term = '10%' }\nswap_free = { term = '10%' }\n"
    )
    covered(g)
    g.tick()
    assert g.calm is not None and g.calm.totals == (16 * GiB_KB * 1024, 0)
    interval = g.quick(clock.monotonic_us())
    assert interval is not None
    set_meminfo_kb(root, field, kb)
    clock.advance(interval)
    assert g.quick(clock.monotonic_us()) is None
    g.tick()
    assert g.calm is not None and g.calm.totals == (
        (32 * GiB_KB if field == "MemTotal" else 16 * GiB_KB) * 1024,
        8 * GiB_KB * 1024 if field == "SwapTotal" else 0,
    )
    assert g.quick(clock.monotonic_us()) is not None


# walker.service's headroom line under a 10 % TERM rule: limit - TERM headroom
WALKER_LINE = 250 * MiB - 25 * MiB
WALKER_KILL = 250 * MiB - 10 * MiB  # kill = '4%'
FLOOR = 256 * MiB  # the shipped [poll] fill_rate: the least speed a gap is planned to close at


def walker_root(tmp_path: Path, current_mib: int, max_bytes: Optional[int] = 250 * MiB) -> Path:
    """A cgroup2 machine with plenty available and system.slice/walker.service at MemoryMax=250M
    (or ``max_bytes``; None: no limit)."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=12 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(500, "walker", ppid=1, rss_anon_kb=100 * 1024, cgroup_v2="/system.slice/walker.service")
    root.cgroup_v2("/system.slice/walker.service", current=current_mib * MiB, max=max_bytes)
    root.finish()
    return tmp_path / "root"


def test_fast_path_watches_a_cgroup2_limit_through_memory_current(tmp_path: Path) -> None:
    """cgroup2 reports no usage crossing: the fast path reads the watched group's memory.current
    against its headroom line instead of running a full tick each time."""
    from guardian.sample import Sample

    g, _, clock = guardian_for(
        walker_root(tmp_path, current_mib=100),
        "[machine]\nenabled = false\n[[cgroup]]\nmatch = 'system.slice/*.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\n",
    )
    g.rescan(Sample(g.host, 0), 0, force=True)
    waiter = Waiter()
    wake_plan = g.wake_plan(Sample(g.host, 0))
    g.use_wakeups(wake_plan, waiter.arm(wake_plan))
    try:
        assert not g.uncovered
        current = tmp_path / "root/sys/fs/cgroup/system.slice/walker.service/memory.current"
        assert [(u.path, u.line_bytes, u.kill_bytes) for u in g.usage_lines] == [
            (str(current), WALKER_LINE, WALKER_KILL)
        ]
        assert not g.tick().started and g.calm is not None
        interval = g.quick(clock.monotonic_us())
        # nothing measured yet: a burst at the floor speed reaching the KILL line
        assert interval == pytest.approx((WALKER_KILL - 100 * MiB) / FLOOR)
        current.write_text(f"{WALKER_LINE}\n")  # at the line: a full tick must look
        clock.advance(interval)
        assert g.quick(clock.monotonic_us()) is None
        current.write_text("")  # unreadable: a full tick sorts it out
        assert g.quick(clock.monotonic_us()) is None
    finally:
        waiter.close()


def test_a_group_found_by_a_tick_is_watched_from_the_next_wake_up(tmp_path: Path) -> None:
    """The loop's order: a tick finds a new group (its calm knows nothing of it), then the
    wake-ups are rebuilt; the next wake-up must look at the group's memory.current, not sleep
    on the stale calm (seen in the VM: a service walking to MemoryMax= was not looked at until
    the kernel's memcg OOM killer had acted)."""
    from guardian.sample import Sample

    g, _, clock = guardian_for(
        walker_root(tmp_path, current_mib=200),
        "[machine]\nmem_available = { term = '10%' }\n[[cgroup]]\nmatch = 'system.slice/*.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\n",
    )
    covered(g)  # what the previous wake-ups covered: nothing watched yet
    first = g.tick()
    assert not first.started and first.watch_changed  # the tick found walker.service
    waiter = Waiter()
    wake_plan = g.wake_plan(Sample(g.host, clock.monotonic_us()))
    g.use_wakeups(wake_plan, waiter.arm(wake_plan))
    try:
        assert g.quick(clock.monotonic_us()) is None  # the stale calm is not trusted
        g.tick()
        assert g.calm is not None and g.calm.usage_lines == g.usage_lines
        assert g.quick(clock.monotonic_us()) == pytest.approx(
            max(g.policy.poll.min_interval_s, (WALKER_KILL - 200 * MiB) / FLOOR)
        )
    finally:
        waiter.close()


@pytest.mark.parametrize("planned", [None, 600 * MiB], ids=["no-limit-yet", "limit-lowered"])
def test_a_limit_written_after_the_plan_is_seen_within_a_look(tmp_path: Path, planned: Optional[int]) -> None:
    """Writing memory.max wakes nobody. systemd writes a unit's limits after the mkdir that
    inotify reports (in the VM the loop once planned pool.service before its MemoryMax=250M was
    written, and the kernel's OOM killer got there first), and ``systemctl set-property`` writes
    them to a running group. On the calm fast path the limits are read every max_interval_s; a
    limit that moved makes a full tick, which plans the wake-ups for it: the group's line is
    then read on the fast path."""
    from guardian.sample import Sample

    root = walker_root(tmp_path, current_mib=200, max_bytes=planned)
    g, _, clock = guardian_for(
        root,
        "[machine]\nmem_available = { term = '10%' }\n[[cgroup]]\nmatch = 'system.slice/*.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\n",
    )
    waiter = Waiter()

    def replan() -> None:
        wake_plan = g.wake_plan(Sample(g.host, clock.monotonic_us()))
        g.use_wakeups(wake_plan, waiter.arm(wake_plan))

    try:
        g.rescan(Sample(g.host, clock.monotonic_us()), clock.monotonic_us(), force=True)
        replan()
        assert not g.uncovered and not g.tick().watch_changed and g.calm is not None
        limit_file = root / "sys/fs/cgroup/system.slice/walker.service/memory.max"
        assert [(lim.cgroup, lim.max_bytes) for lim in g.limits] == [
            ("/system.slice/walker.service", planned)
        ]
        assert [u.max_bytes for u in g.usage_lines] == ([] if planned is None else [planned])
        interval = g.quick(clock.monotonic_us())
        assert interval is not None
        limit_file.write_text(f"{250 * MiB}\n")  # MemoryMax=250M, usage 200M: 25M above the TERM line
        looked = 0.0
        while interval is not None:
            assert looked <= g.policy.poll.max_interval_s, "the new limit was not read within a look"
            clock.advance(interval)
            looked += interval
            interval = g.quick(clock.monotonic_us())
        result = g.tick()
        assert result.watch_changed and not result.started
        replan()
        assert [(lim.max_bytes, u.max_bytes, u.line_bytes) for lim, u in zip(g.limits, g.usage_lines)] == [
            (250 * MiB, 250 * MiB, WALKER_LINE)
        ]
        assert not g.tick().watch_changed  # planned for the limit as it is: no plan on every tick
        assert g.quick(clock.monotonic_us()) is not None
    finally:
        waiter.close()


def tree_root(tmp_path: Path) -> FakeRoot:
    """A cgroup2 machine with plenty available and system.slice/walker.service at MemoryMax=250M,
    kept open so that groups can be made in it as a test goes."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=12 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(500, "walker", ppid=1, rss_anon_kb=100 * 1024, cgroup_v2="/system.slice/walker.service")
    root.cgroup_v2("/system.slice/walker.service", current=200 * MiB, max=250 * MiB)
    root.finish()
    return root


def arm(g: Engine, waiter: Waiter, now_us: int) -> None:
    """Plan the engine's wake-ups and arm them for real (inotify on the fixture's directories)."""
    from guardian.sample import Sample

    wake_plan = g.wake_plan(Sample(g.host, now_us))
    g.use_wakeups(wake_plan, waiter.arm(wake_plan))


def new_group_seen(g: Engine, waiter: Waiter, now_us: int) -> bool:
    """The watch reported a group made: the wake drops the calm, and the full tick it asks for
    plans the wake-ups again (True) for the tree as it is."""
    wake = waiter.wait(0)
    if not wake.cgroups:
        return False
    g.woke(wake, now_us)
    assert g.quick(now_us) is None
    return g.tick(now_us).watch_changed


SERVICE_RULE = "[[cgroup]]\nmatch = 'system.slice/*.service'\nmin_headroom = { term = '10%', kill = '4%' }\n"


@pytest.mark.parametrize("watch", ["inotify", "none"])
def test_a_watched_tree_keeps_the_calm_past_the_rescan_timer(tmp_path: Path, watch: str) -> None:
    """Where every directory a rule's group can appear in is watched, a new group wakes the
    loop, so the calm fast path runs until CALM_MAX_S (the full tick's own rescan), not until the
    rescan timer (RESCAN_S): a full look fewer every minute of an idle machine. Without the
    watch the timer is what finds a new group, and it still ends the calm."""
    from guardian.daemon.engine import CALM_MAX_S, RESCAN_S
    from guardian.sample import Sample

    root = tree_root(tmp_path)
    g, _, clock = guardian_for(root.root, "[machine]\nenabled = false\n" + SERVICE_RULE)
    waiter = Waiter()
    try:
        g.rescan(Sample(g.host, clock.monotonic_us()), clock.monotonic_us(), force=True)
        if watch == "inotify":
            arm(g, waiter, clock.monotonic_us())
            assert g.tree_watched
        else:
            g.use_wakeups(g.wake_plan(Sample(g.host, clock.monotonic_us())), Armed())
        assert not g.tick().watch_changed and g.calm is not None
        calm_s = CALM_MAX_S if watch == "inotify" else RESCAN_S
        start_us = clock.monotonic_us()
        while True:
            interval = g.quick(clock.monotonic_us())
            if interval is None:
                break
            clock.advance(interval)
        calm_for_s = (clock.monotonic_us() - start_us) / 1e6
        assert calm_s - g.policy.poll.max_interval_s <= calm_for_s <= calm_s
        if watch == "inotify":
            assert g.tick().watch_changed is False  # the minute's rescan: nothing new
            root.cgroup_v2("/system.slice/late.service", current=10 * MiB, max=250 * MiB)
            assert new_group_seen(g, waiter, clock.monotonic_us())
            assert g.watched == ["/system.slice/late.service", "/system.slice/walker.service"]
    finally:
        waiter.close()


def test_levels_made_one_by_one_below_a_missing_prefix_are_each_watched(tmp_path: Path) -> None:
    """A rule whose glob's prefix and its parent do not exist yet: its nearest ancestor that does
    is watched, and each level made below it is watched in turn, so the group that finally
    matches wakes the loop, with no rescan timer."""
    from guardian.daemon.wakeups import rule_directories
    from guardian.sample import Sample

    root = tree_root(tmp_path)
    rule = "[[cgroup]]\nmatch = 'outer.slice/inner.slice/*.service'\nmin_headroom = { term = '10%' }\n"
    g, _, clock = guardian_for(root.root, "[machine]\nenabled = false\n" + rule)
    cgroupfs = str(root.root / "sys/fs/cgroup")
    assert rule_directories(g.host, g.policy) == [cgroupfs]
    waiter = Waiter()
    try:
        g.rescan(Sample(g.host, clock.monotonic_us()), clock.monotonic_us(), force=True)
        arm(g, waiter, clock.monotonic_us())
        assert g.tree_watched and g.watched == []
        for level in ("/outer.slice", "/outer.slice/inner.slice"):
            root.cgroup_v2(level)
            assert new_group_seen(g, waiter, clock.monotonic_us()), f"{level} made, no new plan"
            arm(g, waiter, clock.monotonic_us())
            assert rule_directories(g.host, g.policy)[-1] == cgroupfs + level
            assert g.watched == []
        root.cgroup_v2("/outer.slice/inner.slice/x.service", current=10 * MiB, max=250 * MiB)
        assert new_group_seen(g, waiter, clock.monotonic_us())
        assert g.watched == ["/outer.slice/inner.slice/x.service"]
    finally:
        waiter.close()


def test_a_group_made_before_its_directory_was_watched_is_found_by_the_next_tick(tmp_path: Path) -> None:
    """inotify reports only what happens after a directory is watched: a group made between the
    walk the wake-ups were planned from and the watch itself sends nothing, so arming walks
    again and, finding it, makes the next tick plan for it."""
    from guardian.sample import Sample

    root = tree_root(tmp_path)
    g, _, clock = guardian_for(root.root, "[machine]\nenabled = false\n" + SERVICE_RULE)
    waiter = Waiter()
    try:
        g.rescan(Sample(g.host, clock.monotonic_us()), clock.monotonic_us(), force=True)
        wake_plan = g.wake_plan(Sample(g.host, clock.monotonic_us()))
        root.cgroup_v2("/system.slice/late.service", current=10 * MiB, max=250 * MiB)
        g.use_wakeups(wake_plan, waiter.arm(wake_plan))
        assert not waiter.wait(0).cgroups  # made before the watch: nothing to report
        result = g.tick()
        assert result.watch_changed
        assert g.watched == ["/system.slice/late.service", "/system.slice/walker.service"]
        arm(g, waiter, clock.monotonic_us())
        assert not g.tick().watch_changed  # planned for it now: once
    finally:
        waiter.close()


def walker_watched(tmp_path: Path, max_bytes: Optional[int]) -> tuple[Path, Engine]:
    """walker.service at 200 MiB (limit ``max_bytes``) watched by a headroom rule, the wake-ups
    planned (nothing armed), and a first tick that changed nothing."""
    from guardian.sample import Sample

    root = walker_root(tmp_path, current_mib=200, max_bytes=max_bytes)
    g, _, clock = guardian_for(
        root,
        "[machine]\nenabled = false\n[[cgroup]]\nmatch = 'system.slice/*.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\n",
    )
    g.rescan(Sample(g.host, clock.monotonic_us()), clock.monotonic_us(), force=True)
    g.use_wakeups(g.wake_plan(Sample(g.host, clock.monotonic_us())), Armed())
    assert not g.tick().watch_changed
    return root, g


def test_a_group_planned_empty_that_filled_is_planned_again(tmp_path: Path) -> None:
    """The wake-up of an empty group's first process asks for a new plan even when the limit the
    tick reads is the planned one: the new plan no longer polls the group's cgroup.events (a
    service's later stops and starts are no wake-ups of their own)."""
    from guardian.daemon.wakeups import Wake

    _, g = walker_watched(tmp_path, 250 * MiB)
    g.woke(Wake(cgroups=True, kernel=True, filled=frozenset({"/system.slice/walker.service"})), 0)
    assert g.tick().watch_changed
    assert not g.tick().watch_changed  # once


def test_a_full_tick_plans_again_for_a_limit_it_reads_moved(tmp_path: Path) -> None:
    """Every wake-up is a full tick where something is not covered (here: nothing is armed): one
    that reads a watched group's limit other than planned asks for the wake-ups to be planned
    again."""
    root, g = walker_watched(tmp_path, None)
    (root / "sys/fs/cgroup/system.slice/walker.service/memory.max").write_text(f"{210 * MiB}\n")
    result = g.tick()  # 10 MiB of headroom: below the TERM line, acted on by this very tick
    assert result.watch_changed and result.started


def counting_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, current_mib: int, extra: str = ""
) -> tuple[Path, Engine, FakeClock, Waiter, list[str]]:
    """walker.service at ``current_mib`` watched by a headroom rule beside the machine's
    MemAvailable line, the wake-ups armed (the caller closes the Waiter), and the list that
    ``host.read_hot`` appends what it reads to."""
    from guardian.sample import Sample

    root = walker_root(tmp_path, current_mib=current_mib)
    g, _, clock = guardian_for(
        root,
        "[machine]\nmem_available = { term = '10%' }\n[[cgroup]]\nmatch = 'system.slice/*.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\n" + extra,
    )
    g.rescan(Sample(g.host, clock.monotonic_us()), clock.monotonic_us(), force=True)
    waiter = Waiter()
    wake_plan = g.wake_plan(Sample(g.host, clock.monotonic_us()))
    g.use_wakeups(wake_plan, waiter.arm(wake_plan))
    reads: list[str] = []
    real = g.host.read_hot

    def counted(path: str, what: str) -> bytes:
        reads.append(what)
        return real(path, what)

    monkeypatch.setattr(g.host, "read_hot", counted)
    return root, g, clock, waiter, reads


def test_the_fast_path_reads_each_quantity_when_its_pace_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group near its line is read on every wake-up; the machine, 10 GiB from its line, only
    when its own plan (at most max_interval_s) comes due, or when it would come due before the
    next wake-up anyway (read then, not on a wake-up of its own)."""
    _, g, clock, waiter, reads = counting_fast_path(
        tmp_path, monkeypatch, 200, "[poll]\nmax_interval_s = 1.0\n"
    )
    try:
        g.tick()
        assert g.calm is not None
        wakes = []
        for _ in range(40):
            reads.clear()
            interval = g.quick(clock.monotonic_us())
            assert interval is not None
            wakes.append(sorted(reads))
            clock.advance(interval)
        group_wait = (WALKER_KILL - 200 * MiB) / FLOOR  # 0.156 s
        assert all("cgroup memory usage" in w for w in wakes)  # the group: every wake-up
        machine_reads = [i for i, w in enumerate(wakes) if "meminfo" in w]
        # the machine: the first wake-up, then once per max_interval_s (1 s), read at the
        # wake-up before it comes due when that one is closer than the group's next look
        assert machine_reads[0] == 0
        gaps = [b - a for a, b in zip(machine_reads, machine_reads[1:])]
        assert gaps and all(gap == int(1.0 // group_wait) for gap in gaps), (machine_reads, group_wait)
    finally:
        waiter.close()


def test_a_stall_wake_up_reads_everything_on_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake-up trigger (memory stalled: perhaps a burst faster than the interval planned for)
    makes the next look read every quantity at once, the machine's too, on the fast path: a full
    look only where a line is reached. Any other kernel event still makes a full look."""
    from guardian.daemon.wakeups import Wake

    root, g, clock, waiter, reads = counting_fast_path(tmp_path, monkeypatch, 100)
    try:
        g.tick()
        assert g.calm is not None
        clock.advance(g.quick(clock.monotonic_us()) or 0)
        reads.clear()
        assert g.quick(clock.monotonic_us()) is not None
        assert "meminfo" not in reads  # the machine, 12 GiB from its line, is not due yet
        g.woke(Wake(stalled=True), clock.monotonic_us())
        assert g.calm is not None
        reads.clear()
        assert g.quick(clock.monotonic_us()) is not None  # no line reached: still no full look
        assert {"cgroup memory usage", "meminfo"} <= set(reads)  # the group, the machine (and the limit)
        # a burst took the group past its TERM line: the stall wake-up's look sees it, hands over
        group = root / "sys/fs/cgroup/system.slice/walker.service/memory.current"
        group.write_text(f"{240 * MiB}\n")
        g.woke(Wake(stalled=True), clock.monotonic_us())
        assert g.quick(clock.monotonic_us()) is None
        # any other kernel event: a full look
        group.write_text(f"{100 * MiB}\n")
        clock.advance(20)
        g.tick()
        assert g.calm is not None
        g.woke(Wake(kernel=True), clock.monotonic_us())
        assert g.calm is None
    finally:
        waiter.close()


def test_a_wake_up_trigger_is_a_stall_a_conditions_trigger_a_kernel_event() -> None:
    """The Waiter tells a wake-up trigger (the WAKE label: look at everything now) from a PSI
    condition's trigger (a full look, the condition's source read) and from a removed group's
    (a full look)."""
    import contextlib
    import os
    import select

    from guardian.daemon.wakeups import WAKE

    class Trigger:
        def __init__(self, state: str) -> None:
            self.state = state

        def fired(self, _mask: int) -> str:
            return self.state

    def one_wait(state: str, key: tuple[str, Optional[str]]) -> object:
        waiter = Waiter()
        read_end, write_end = os.pipe()
        try:
            waiter.fds[read_end] = "psi"
            waiter.triggers[read_end] = (Trigger(state), key)  # type: ignore[assignment]
            waiter.poller.register(read_end, select.POLLIN)
            os.write(write_end, b"x")
            return waiter.wait(1.0)
        finally:
            waiter.fds.pop(read_end, None)
            waiter.triggers.pop(read_end, None)
            waiter.close()
            with contextlib.suppress(OSError):  # a removed group's trigger is closed by the Waiter
                os.close(read_end)
            os.close(write_end)

    wake = one_wait("fired", (WAKE, "/system.slice/walker.service"))
    assert (wake.stalled, wake.kernel, wake.psi) == (True, False, frozenset())  # type: ignore[attr-defined]
    wake = one_wait("fired", ("machine", None))
    assert (wake.stalled, wake.kernel, wake.psi) == (False, True, {("machine", None)})  # type: ignore[attr-defined]
    wake = one_wait("gone", (WAKE, "/system.slice/walker.service"))
    assert (wake.stalled, wake.kernel) == (False, True)  # type: ignore[attr-defined]


def test_no_fast_path_while_something_is_uncovered_or_hot(tmp_path: Path) -> None:
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.04))
    g, _, _ = guardian_for(root, POLICY)
    covered(g)
    assert g.tick().started  # acts: a cooldown runs
    assert g.calm is None
    g2, _, _ = guardian_for(machine(tmp_path / "calm", available_kb=12 * GiB_KB), POLICY)
    g2.tick()  # uncovered (the default) means every wake is a full tick
    assert g2.calm is None
    covered(g2)  # the same calm machine, its wake-ups covering it: now there is a fast path
    g2.tick()
    assert g2.calm is not None


def test_pending_sigkill_is_seen(tmp_path: Path) -> None:
    """A victim with SIGKILL already pending (ShdPnd bit 9: the kernel's OOM killer got there
    first) is not claimed as guardian's kill (actions.Killer.open_victim raises AlreadyDying)."""
    from guardian.actions import _sigkill_pending

    root = machine(tmp_path, available_kb=8 * GiB_KB)
    status = root / "proc/320/status"
    assert _sigkill_pending(Host(root), 320) is False
    status.write_text(status.read_text().replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100"))
    assert _sigkill_pending(Host(root), 320) is True


def test_a_tick_that_raises_is_reported_and_the_loop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OOM daemon that exits mid-episode leaves the machine unguarded until systemd restarts
    it: a tick that raises is reported (message and traceback) and the next one runs; only
    MAX_TICK_FAILURES in a row end the loop."""
    from guardian.daemon.service import MAX_TICK_FAILURES, Service
    from guardian.notify import Notifier

    g, sink, _ = guardian_for(
        machine(tmp_path, available_kb=12 * GiB_KB), "[poll]\nmin_interval_s = 0.01\nmax_interval_s = 0.01\n"
    )
    real_tick = g.tick
    calls = []

    def flaky_tick(now_us: Optional[int] = None) -> TickResult:
        calls.append(1)
        if len(calls) <= 2:
            raise OSError(errno.ENODEV, "No such device")
        return real_tick(now_us)

    monkeypatch.setattr(g, "tick", flaky_tick)
    assert Service(g, None, False, Notifier({})).run(ticks=5) == 0
    failed = [e for e in sink.events if e["MESSAGE"].startswith("a tick failed")]
    assert [e["MESSAGE"] for e in failed] == [
        "a tick failed (1 in a row): OSError: [Errno 19] No such device",
        "a tick failed (2 in a row): OSError: [Errno 19] No such device",
    ]
    assert "flaky_tick" in failed[0]["GUARDIAN_TRACEBACK"] and failed[0]["PRIORITY"] == "3"
    assert len(calls) >= 3  # the loop went on after the failures

    def broken_tick(now_us: Optional[int] = None) -> TickResult:
        raise ValueError("a bug")

    monkeypatch.setattr(g, "tick", broken_tick)
    with pytest.raises(ValueError, match="a bug"):
        Service(g, None, False, Notifier({})).run()
    assert f"a tick failed ({MAX_TICK_FAILURES} in a row): ValueError: a bug" in [
        e["MESSAGE"] for e in sink.events
    ]


@pytest.mark.parametrize("watchdog_s", [None, 10.0, 3.0])
@pytest.mark.parametrize("early_s", [0.0, 0.009])
def test_a_calm_loop_wakes_once_per_look_with_its_pings_and_history_on_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchdog_s: Optional[float], early_s: float
) -> None:
    """A calm machine far from its lines (shipped poll settings, a scorer that keeps the usage
    history, the unit's watchdog) wakes once per look: the history, the watchdog's ping and a
    reading due a few milliseconds after another ride on the same wake-up. ``early_s``: a wait
    that ends a little before its interval (poll() counts whole milliseconds), which used to
    leave the history due a few milliseconds later: a wake-up of its own every 10 s."""
    from guardian.daemon import service as service_module
    from guardian.daemon.service import Service
    from guardian.daemon.wakeups import Wake
    from guardian.notify import Notifier

    g, _, clock = guardian_for(
        machine(tmp_path, available_kb=12 * GiB_KB),
        "dry_run = true\n[machine]\nmem_available = { term = '10%' }\n",
    )
    assert g.keeps_history and g.policy.poll.max_interval_s == 5
    seconds = lambda: clock.monotonic_us() / 1e6  # noqa: E731
    monkeypatch.setattr(service_module, "time", type("T", (), {"monotonic": staticmethod(seconds)}))
    pings: list[float] = []

    class Dog(Notifier):
        def send(self, **state: str) -> bool:
            if "WATCHDOG" in state:
                pings.append(seconds())
            return True

    env = {} if watchdog_s is None else {"WATCHDOG_USEC": str(int(watchdog_s * 1e6))}
    service = Service(g, None, False, Dog(env))
    waits: list[float] = []
    recorded: set[Optional[int]] = set()
    end = 300.0

    def wait(interval_s: float) -> Wake:
        waits.append(interval_s)
        clock.advance(max(0.0, interval_s - early_s))
        recorded.add(g.history.cgroups.recorded_us)
        service.stop = seconds() >= end
        return Wake()

    monkeypatch.setattr(service, "wait", wait)
    monkeypatch.setattr(service, "rearm", lambda: covered(g))
    assert service.run() == 0
    looks = 5.0 if watchdog_s is None else min(5.0, watchdog_s / 2)
    assert len(waits) <= end / (looks - early_s) + 1, waits
    assert min(waits[1:]) >= looks - 0.05, waits  # no wake-up for something due a moment later
    assert len(recorded) >= end / 10 - 1  # the history went on, every 10 s or so
    if watchdog_s is not None:
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) <= watchdog_s / 2 + 0.01 and len(pings) >= end / (watchdog_s / 2) - 1


def test_the_fast_path_never_raises(tmp_path: Path) -> None:
    """The fast path runs outside the tick's guard: an unreadable meminfo sends the loop to a
    full tick (which reports what is wrong) instead of out of the loop."""
    root = machine(tmp_path, available_kb=12 * GiB_KB)
    g, _, clock = guardian_for(root, "[machine]\nmem_available = { term = '10%' }\n")
    covered(g)
    g.tick()
    assert g.calm is not None
    (root / "proc/meminfo").unlink()
    assert g.quick(clock.monotonic_us()) is None


@pytest.mark.parametrize(("pct", "level", "line"), [(8.0, "TERM", "10%"), (4.0, "KILL", "5%")])
def test_the_reason_quotes_the_line_of_the_level_acted_on(
    tmp_path: Path, pct: float, level: str, line: str
) -> None:
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * pct / 100))
    g, sink, _ = guardian_for(root, POLICY)
    act = acted(g.tick())
    assert act is not None and act.trigger.level == level
    assert act.trigger.reason.endswith(f"at or below {line}")
    (event,) = sink.events
    assert event["GUARDIAN_REASON"].endswith(f"at or below {line}") and event["GUARDIAN_LEVEL"] == level


def test_the_recheck_reports_the_reading_that_showed_the_level(tmp_path: Path) -> None:
    """Assessed at TERM, KILL by the re-check right before the kill: the report says KILL and
    quotes the KILL line with the fresh reading, not the TERM line with the old one."""
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.08))
    g, _, _ = guardian_for(root, POLICY)
    real = g.loaded.selector.rank

    def rank_then_drop(*args: object, **kwargs: object) -> object:
        ranking = real(*args, **kwargs)  # type: ignore[arg-type]
        set_available(root, 3)  # memory falls while the victim is chosen
        return ranking

    g.loaded.selector.rank = rank_then_drop  # type: ignore[method-assign]
    act = acted(g.tick())
    assert act is not None and act.trigger.level == "KILL" and act.action == "kill"
    assert act.trigger.reason.startswith("MemAvailable 491.5 MiB (3.0%)")
    assert act.trigger.reason.endswith("at or below 5%")
    assert act.trigger.values["mem_available_pct"] == 3.0


def test_a_dry_run_keeps_its_cooldown_at_the_kill_level(tmp_path: Path) -> None:
    """A dry run frees nothing, so memory stays at the KILL level: without a cooldown at both
    levels it reported the same "would kill" every second."""
    root = machine(tmp_path, available_kb=int(16 * GiB_KB * 0.03))
    g, sink, clock = guardian_for(
        root, "dry_run = true\ncooldown_s = 10\n" + POLICY.replace("cooldown_s = 10\n", "")
    )
    assert victim_comm(g.tick()) is not None
    for _ in range(8):  # 9.6 s at the KILL level
        clock.advance(1.2)
        assert not g.tick().started
    clock.advance(1.0)
    assert victim_comm(g.tick()) is not None  # the cooldown is over: decided again
    assert len([e for e in sink.events if e["MESSAGE_ID"] == MSG_DRY_RUN]) == 2


def test_a_watched_group_costs_the_files_its_conditions_need(tmp_path: Path) -> None:
    """A tick judging a group's headroom and events reads memory.current, memory.max and
    memory.events: not the nine files of its whole memory state, for every watched service on
    every look (most of a full look's CPU in the VM's profile before)."""
    from guardian.policy import PolicyState, assess
    from guardian.sample import Sample

    root = walker_root(tmp_path, current_mib=100)
    policy = parse_policy(
        "[machine]\nenabled = false\n[[cgroup]]\nmatch = 'system.slice/*.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\nevents = { oom_per_s = 0 }\n",
        "p.toml",
    )
    sample = Sample(Host(root), 1_000_000)
    assess(sample, policy, PolicyState(), 1_000_000, ["/system.slice/walker.service"])
    assert sample.reads == [
        "cgroup:/system.slice/walker.service:usage",
        "cgroup:/system.slice/walker.service:memory.events",
    ]
    group = sample.cgroup("/system.slice/walker.service")
    assert (group.usage.current_bytes, group.usage.max_bytes) == (100 * MiB, 250 * MiB)
    assert group.memory.high_bytes is None and group.usage is group.memory  # read whole once asked


def test_a_pattern_remembers_its_answers_within_a_bound() -> None:
    from guardian.rules import FULLMATCH_KEPT, Pattern

    pattern = Pattern("system\\.slice/[^/]*\\.service")
    for i in range(FULLMATCH_KEPT + 10):
        assert pattern.fullmatch(f"system.slice/s{i}.service")
        assert not pattern.fullmatch(f"user.slice/s{i}.service")
    assert len(pattern._full) <= FULLMATCH_KEPT


def test_a_v1_group_is_read_on_the_fast_path_beside_its_threshold(tmp_path: Path) -> None:
    """v1's usage threshold can come late (the kernel checks a group's thresholds once every so
    many pages charged), so a v1 group's usage is read on the fast path too, like cgroup2's
    memory.current: a group gone past its line with no event at all is seen at the next look.
    (Under --root nothing is armed: the reads alone cover the group, and the loop stays calm.)"""
    from support.machine import GROUPS, WEB, small_machine

    from guardian.daemon.wakeups import plan
    from guardian.sample import Sample

    root = tmp_path / "root"
    small_machine(root, "hybrid")
    g, _, clock = guardian_for(
        root,
        "[machine]\nenabled = false\n[[cgroup]]\nmatch = 'system.slice/web.service'\n"
        "min_headroom = { term = '10%', kill = '4%' }\n",
    )
    now = clock.monotonic_us()
    g.rescan(Sample(g.host, now), now, force=True)
    assert g.watched == [WEB]
    wake_plan = plan(g.host, g.policy, g.watched, Sample(g.host, now))
    usage = root / f"sys/fs/cgroup/memory{WEB}/memory.usage_in_bytes"
    limit = GROUPS[WEB][0]
    assert [(t[1], t[2]) for t in wake_plan.thresholds] == [(limit - limit // 10, WEB)]
    assert [(u.path, u.line_bytes, u.cgroup) for u in wake_plan.usage_lines] == [
        (str(usage), limit - limit // 10, WEB)
    ]
    assert "headroom" in wake_plan.covered[WEB]
    waiter = Waiter()
    try:
        g.use_wakeups(wake_plan, waiter.arm(wake_plan))
        assert not g.uncovered
        g.tick()
        assert g.calm is not None
        interval = g.quick(clock.monotonic_us())
        assert interval is not None  # far from the line: calm, its next read planned
        usage.write_text(f"{limit - limit // 20}\n")  # 5 % of headroom left, and no event came
        clock.advance(interval)
        assert g.quick(clock.monotonic_us()) is None  # the planned read saw it: a full look
        result = g.tick()
        assert result.started and result.started[0].trigger.scope == WEB
    finally:
        waiter.close()
