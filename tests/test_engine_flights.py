"""The engine's kills in flight, on built roots with a killer that records instead of signalling
(tests/support/fakekill.py): what happens in the other scopes while a victim is in its grace
period (review findings: a bystander killed at the machine's KILL level while the chosen hog sat
in its grace period; two kills in nested scopes in one tick; a reload to a dry run that went on
signalling; an already-dying victim chosen every tick)."""

from __future__ import annotations

from pathlib import Path

from fixtures.builder import FakeRoot, set_meminfo_kb
from support.clock import FakeClock
from support.fakekill import RecordingKiller
from support.sinks import MemorySink

from guardian.config import parse_policy
from guardian.daemon.engine import Engine
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.plugins import make_plugin_manager
from guardian.report import MSG_KILL, Reporter
from guardian.selection import Selector

GiB_KB = 1024 * 1024
MiB = 1 << 20
HOG = "/system.slice/hog.service"
LIMIT = 8 << 30
POLICY = """
grace_s = 30
[scorers]
kernel_badness = 1.0
[machine]
mem_available = { term = "10%", kill = "5%" }
[[cgroup]]
match = "system.slice/*.service"
min_headroom = { term = "10%", kill = "4%" }
"""


def build(tmp_path: Path, hog_headroom_pct: float = 8, available_pct: float = 50) -> Path:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=64 * GiB_KB, available_kb=int(64 * GiB_KB * available_pct / 100))
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(500, "hog", rss_anon_kb=6 * GiB_KB, cgroup_v2=HOG)
    root.process(600, "bystander", rss_anon_kb=GiB_KB, cgroup_v2="/system.slice/bystander.service")
    root.cgroup_v2(HOG, max=LIMIT, current=int(LIMIT * (1 - hog_headroom_pct / 100)))
    root.cgroup_v2("/system.slice/bystander.service")
    root.finish()
    return tmp_path / "root"


def set_available(root: Path, pct: float) -> None:
    set_meminfo_kb(root, "MemAvailable", int(64 * GiB_KB * pct / 100))


def engine_for(root: Path, text: str = POLICY) -> tuple[Engine, RecordingKiller, MemorySink, FakeClock]:
    policy = parse_policy(text, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    sink, clock = MemorySink(), FakeClock()
    engine = Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), clock)
    killer = RecordingKiller(engine.killer)
    engine.killer = killer
    return engine, killer, sink, clock


def test_the_machine_at_kill_escalates_the_victim_in_flight_instead_of_a_bystander(tmp_path: Path) -> None:
    root = build(tmp_path)
    engine, killer, _, clock = engine_for(root)
    engine.tick()
    assert killer.log == [("start", 500, "SIGTERM")]  # the hog's service at its TERM line
    set_available(root, 3)  # now the machine is at its KILL level
    clock.advance(0.1)
    engine.tick()
    assert killer.log == [("start", 500, "SIGTERM"), ("escalate", 500, "SIGKILL")]
    clock.advance(0.5)  # SIGKILL went out half a second ago: memory has not shown it yet
    engine.tick()
    assert [entry for entry in killer.log if entry[1] == 600] == []


def test_never_two_kills_in_nested_scopes_in_one_tick(tmp_path: Path) -> None:
    root = build(tmp_path, hog_headroom_pct=2, available_pct=3)  # both at KILL at once
    engine, killer, _, _ = engine_for(root)
    result = engine.tick()
    assert len(result.started) == 1
    assert killer.log == [("start", 500, "SIGKILL")]


def test_disjoint_scopes_each_get_their_kill(tmp_path: Path) -> None:
    """The other side of the rule: scopes that share no memory are acted on in the same tick."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=64 * GiB_KB, available_kb=32 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    for pid, name in ((500, "a"), (600, "b")):
        root.process(pid, name, rss_anon_kb=GiB_KB, cgroup_v2=f"/system.slice/{name}.service")
        root.cgroup_v2(f"/system.slice/{name}.service", max=LIMIT, current=int(LIMIT * 0.93))
    root.finish()
    engine, killer, _, _ = engine_for(tmp_path / "root")
    engine.tick()
    assert sorted(killer.log) == [("start", 500, "SIGTERM"), ("start", 600, "SIGTERM")]


def test_a_reload_to_a_dry_run_sends_nothing_more(tmp_path: Path) -> None:
    root = build(tmp_path)
    engine, killer, sink, clock = engine_for(root)
    engine.tick()
    assert killer.log == [("start", 500, "SIGTERM")]
    dry = parse_policy("dry_run = true\n" + POLICY, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    engine.replace_policy(Loaded(dry, plugins, Selector(dry, plugins)))
    assert engine.flights == {}
    (event,) = [e for e in sink.events if e.get("GUARDIAN_OUTCOME") == "abandoned"]
    assert event["MESSAGE_ID"] == MSG_KILL and event["GUARDIAN_SIGNALS"] == "SIGTERM"
    assert "dry run" in event["GUARDIAN_DETAIL"]
    set_available(root, 3)
    clock.advance(31)  # past the grace period, at the KILL level: still nothing sent
    engine.tick()
    assert killer.log == [("start", 500, "SIGTERM")]


def test_stopping_reports_the_kills_in_flight(tmp_path: Path) -> None:
    engine, _, sink, _ = engine_for(build(tmp_path))
    engine.tick()
    engine.close()
    assert [e["GUARDIAN_OUTCOME"] for e in sink.events] == ["abandoned"]
    assert "stopped" in sink.events[0]["GUARDIAN_DETAIL"]


def test_an_already_dying_process_is_not_chosen(tmp_path: Path) -> None:
    """Someone else's SIGKILL is pending for the hog (it is frozen, say): choosing it again every
    tick claimed that kill and made no progress; the next candidate is chosen instead."""
    root = build(tmp_path, hog_headroom_pct=50, available_pct=3)
    status = root / "proc/500/status"
    status.write_text(status.read_text().replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100"))
    engine, killer, _, _ = engine_for(root)
    result = engine.tick()
    assert killer.log == [("start", 600, "SIGKILL")]
    (act,) = result.started
    assert act.victim is not None and act.victim.candidate.process is not None
    assert act.victim.candidate.process.pid == 600
