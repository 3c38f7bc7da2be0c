"""The watched groups' files held open (Host.hold_open): one pread per read; a group removed and
made again under its name is read fresh; a group no longer held, or removed, keeps no file of
guardian's open; the number of open files is bounded. On this machine's memory hierarchy, with
empty groups the test makes (no task, nothing charged) and removes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

import guardian.host as host_module
from guardian.host import Host
from guardian.sources.cgroups import read_cgroup_usage


def open_files_under(directory: str) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory + "/"):
            found.append(target)
    return found


@pytest.fixture
def groups() -> Iterator[tuple[Host, str, list[str]]]:
    host = Host("/")
    layout = host.cgroup_layout()
    if layout.memory_controller is None:
        pytest.skip("no memory cgroup hierarchy")
    name = f"guardian-hot-{uuid.uuid4().hex[:8]}"
    paths = [f"/{name}", f"/{name}/a", f"/{name}/b"]
    made = []
    try:
        for path in paths:
            directory = memory_dir(host, path)
            os.mkdir(directory)
            made.append(directory)
        yield host, memory_dir(host, paths[0]), paths
    finally:
        host.hold_open([])
        for directory in reversed(made):
            if os.path.isdir(directory):
                os.rmdir(directory)


def memory_dir(host: Host, cgroup: str) -> str:
    if host.cgroup_layout().memory_controller == "v1":
        return host.cgroup_v1_memory_dir(cgroup)
    return host.cgroup_v2_dir(cgroup)


def test_held_groups_are_read_through_open_files_and_let_go(groups: tuple[Host, str, list[str]]) -> None:
    host, top, (_, a, b) = groups
    host.hold_open([a, b])
    assert read_cgroup_usage(host, a).current_bytes == 0
    assert read_cgroup_usage(host, b).current_bytes == 0
    held = open_files_under(top)
    assert held and all(f.startswith((memory_dir(host, a) + "/", memory_dir(host, b) + "/")) for f in held)
    read_cgroup_usage(host, a)
    assert open_files_under(top) == held  # read again through the same files

    host.hold_open([a])  # b is no longer watched: none of its files stays open
    assert not [f for f in open_files_under(top) if f.startswith(memory_dir(host, b) + "/")]

    os.rmdir(memory_dir(host, b))
    os.rmdir(memory_dir(host, a))  # removed while held: the next read finds it gone
    with pytest.raises(Exception, match="memory"):
        read_cgroup_usage(host, a)
    assert open_files_under(top) == []
    os.mkdir(memory_dir(host, a))  # the same name again, a new group: read fresh
    assert read_cgroup_usage(host, a).current_bytes == 0
    os.mkdir(memory_dir(host, b))  # for the fixture's clean-up


def test_open_files_are_bounded(groups: tuple[Host, str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    host, top, (_, a, b) = groups
    monkeypatch.setattr(host_module, "HOT_MAX", len(host._hot) + 1)
    host.hold_open([a, b])
    read_cgroup_usage(host, a)
    read_cgroup_usage(host, b)
    assert len(open_files_under(top)) == 1  # the rest were read and closed
    assert read_cgroup_usage(host, b).current_bytes == 0


def test_a_fake_root_holds_nothing_open(tmp_path: object) -> None:
    from pathlib import Path

    from fixtures.builder import FakeRoot

    root = FakeRoot(Path(str(tmp_path)) / "root")
    root.mounts("unified")
    root.meminfo(total_kb=1 << 24, available_kb=1 << 23)
    root.cgroup_v2("/system.slice/a.service", current=1 << 20, max=1 << 30)
    root.finish()
    host = Host(root.root)
    host.hold_open(["/system.slice/a.service"])
    assert read_cgroup_usage(host, "/system.slice/a.service").max_bytes == 1 << 30
    assert host._hot == {}


def test_the_daemon_holds_the_groups_it_watches(groups: tuple[Host, str, list[str]]) -> None:
    """A tick reads the watched groups through held files; a group that leaves the rules'
    reach (removed, then the rescan) leaves none open."""
    from support.sinks import MemorySink

    from guardian.config import parse_policy
    from guardian.daemon.engine import Engine
    from guardian.loaded import Loaded
    from guardian.plugins import make_plugin_manager
    from guardian.report import Reporter
    from guardian.sample import Sample
    from guardian.selection import Selector

    host, top, (parent, a, b) = groups
    policy = parse_policy(
        f'dry_run = true\n[[cgroup]]\nmatch = "{parent.strip("/")}/*"\n'
        'min_headroom = { term = "10%" }\nevents = { oom_per_s = 0 }\n',
        "test.toml",
    )
    plugins = make_plugin_manager(None, entry_points=False)
    engine = Engine(host, Loaded(policy, plugins, Selector(policy, plugins)), Reporter(MemorySink()))
    now = engine.clock.monotonic_us()
    engine.rescan(Sample(host, now), now, force=True)
    assert engine.watched == [a, b]
    engine.tick()
    assert {os.path.dirname(f) for f in open_files_under(top)} == {memory_dir(host, a), memory_dir(host, b)}
    os.rmdir(memory_dir(host, b))
    now = engine.clock.monotonic_us()
    engine.rescan(Sample(host, now), now, force=True)
    engine.tick()
    assert {os.path.dirname(f) for f in open_files_under(top)} == {memory_dir(host, a)}
    os.mkdir(memory_dir(host, b))  # for the fixture's clean-up
