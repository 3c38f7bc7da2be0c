"""memory.events read only when the kernel said they changed: a watched group whose memory.events
notification is armed is read once after arming and then only when its file fired; an event
reported wakes the condition as before; a group removed and made again under its name is a new
group, whose wake-ups are armed anew."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.sinks import MemorySink

import guardian.sample
from guardian.config import parse_policy
from guardian.daemon.engine import Engine
from guardian.daemon.wakeups import Armed, Wake, WakePlan
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.plugins import make_plugin_manager
from guardian.report import Reporter
from guardian.selection import Selector
from guardian.sources import cgroups as cg

GiB_KB = 1024 * 1024
A = "/system.slice/a.service"
B = "/system.slice/b.service"
POLICY = """dry_run = true
[machine]
enabled = false
[[cgroup]]
match = "system.slice/*.service"
events = { oom_per_s = 0 }
"""


def build(tmp_path: Path, oom_kills: int = 0) -> FakeRoot:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=8 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(400, "a", ppid=1, rss_anon_kb=GiB_KB, cgroup_v2=A)
    root.process(500, "b", ppid=1, rss_anon_kb=GiB_KB, cgroup_v2=B)
    root.cgroup_v2(A, max=4 << 30, events={"oom": oom_kills})
    root.cgroup_v2(B, max=4 << 30)
    root.finish()
    return root


def engine_on(root: FakeRoot) -> Engine:
    policy = parse_policy(POLICY, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    selector = Selector(policy, plugins)
    return Engine(Host(root.root), Loaded(policy, plugins, selector), Reporter(MemorySink()), FakeClock())


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, FakeRoot, list[str]]:
    root = build(tmp_path)
    g = engine_on(root)
    reads: list[str] = []
    real = cg.read_cgroup_events

    def spy(host: Host, cgroup: str) -> dict[str, int]:
        reads.append(cgroup)
        return real(host, cgroup)

    monkeypatch.setattr(guardian.sample.cg, "read_cgroup_events", spy)
    now = g.clock.monotonic_us()
    g.rescan(guardian.sample.Sample(g.host, now), now, force=True)
    assert g.watched == [A, B]
    g.use_wakeups(WakePlan(), Armed(events=frozenset({A, B})))
    return g, root, reads


def look(g: Engine) -> list[str]:
    assert isinstance(g.clock, FakeClock)
    g.clock.advance(1.0)
    return [t.scope or "" for t in g.tick().assessment.triggers]


def test_events_are_read_once_then_only_when_reported(engine: tuple[Engine, FakeRoot, list[str]]) -> None:
    g, _, reads = engine
    look(g)
    assert sorted(reads) == [A, B]  # armed: each read once
    reads.clear()
    look(g)
    look(g)
    assert reads == []  # nothing reported, nothing read
    g.woke(Wake(events=frozenset({B}), kernel=True), g.clock.monotonic_us())
    look(g)
    assert reads == [B]


def test_a_reported_event_fires_the_condition(engine: tuple[Engine, FakeRoot, list[str]]) -> None:
    g, root, _ = engine
    assert look(g) == []
    root.cgroup_v2(A, max=4 << 30, events={"oom": 1})
    root.finish()
    assert look(g) == []  # not reported yet: as read before (the kernel reports every change)
    g.woke(Wake(events=frozenset({A}), kernel=True), g.clock.monotonic_us())
    assert look(g) == [A]


def test_an_unread_group_stays_unread_until_it_reads(engine: tuple[Engine, FakeRoot, list[str]]) -> None:
    """A memory.events that cannot be read when reported is read again on the next look."""
    g, root, reads = engine
    look(g)
    events_file = Path(root.root) / "sys/fs/cgroup/system.slice/a.service/memory.events"
    good = events_file.read_text()
    events_file.write_text("oom lots\n")
    g.woke(Wake(events=frozenset({A}), kernel=True), g.clock.monotonic_us())
    reads.clear()
    look(g)
    look(g)
    assert reads == [A, A]
    events_file.write_text(good)
    look(g)
    reads.clear()
    look(g)
    assert reads == []


def test_a_group_made_again_under_its_name_is_armed_anew(tmp_path: Path) -> None:
    root = build(tmp_path)
    g = engine_on(root)
    now = g.clock.monotonic_us()
    assert g.rescan(guardian.sample.Sample(g.host, now), now, force=True)
    assert not g.rescan(guardian.sample.Sample(g.host, now), now, force=True)  # nothing changed
    directory = Path(root.root) / "sys/fs/cgroup/system.slice/a.service"
    moved = directory.with_name("a.service.old")
    os.rename(directory, moved)
    os.mkdir(directory)  # same name, a new directory (another inode)
    for child in moved.iterdir():
        os.rename(child, directory / child.name)
    moved.rmdir()
    assert g.rescan(guardian.sample.Sample(g.host, now), now, force=True)
