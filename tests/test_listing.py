"""The cgroup listing the usage history walks (sample.Listing, cgroups.read_tree_stamp): walked
again when the tree's counts move, when they cannot be read, and at least every max_age_s; and
the calm daemon records its history on the fast path, without a full look."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from fixtures.builder import FakeRoot
from test_daemon import GiB_KB, covered, guardian_for, machine

from guardian.daemon.engine import HISTORY_IDLE_S, RESCAN_S
from guardian.errors import ParseError
from guardian.host import Host
from guardian.sample import Listing, Sample
from guardian.sources.cgroups import parse_proc_cgroups, read_tree_stamp

S = 1_000_000

PROC_CGROUPS = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
memory\t4\t{n}\t1
pids\t8\t1\t1
"""


def hybrid(tmp_path: Path, groups: int) -> FakeRoot:
    root = FakeRoot(tmp_path / "root")
    root.mounts("hybrid")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=8 * GiB_KB)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    for i in range(groups):
        root.cgroup_v1_memory(f"/system.slice/s{i}.service", usage=(i + 1) << 20)
    root.finish()
    root.write("/proc/cgroups", PROC_CGROUPS.format(n=groups + 3))
    return root


def test_proc_cgroups_parses_the_memory_count_and_rejects_garbage() -> None:
    assert parse_proc_cgroups(PROC_CGROUPS.format(n=102)) == 102
    with pytest.raises(ParseError):
        parse_proc_cgroups("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\n")
    with pytest.raises(ParseError):
        parse_proc_cgroups("memory\t4\t1e99\t1\n")


def test_a_listing_walks_again_only_when_the_counts_move_or_it_is_old(tmp_path: Path) -> None:
    root = hybrid(tmp_path, 3)
    host = Host(root.root)
    stamp = read_tree_stamp(host)
    assert stamp is not None and stamp[-1] == 6
    listing = Listing(max_age_s=30)
    first = listing.paths(host, 0)
    assert "/system.slice/s2.service" in first and listing.walks == 1
    assert listing.paths(host, 10 * S) == first and listing.walks == 1  # nothing moved
    # a group made: the v1 count moves, the next look walks and sees it
    root.cgroup_v1_memory("/system.slice/new.service", usage=1 << 20)
    root.finish()
    root.write("/proc/cgroups", PROC_CGROUPS.format(n=7))
    assert "/system.slice/new.service" in listing.paths(host, 11 * S) and listing.walks == 2
    # one made and one freed between two looks cancel out: seen once the listing is old
    root.cgroup_v1_memory("/system.slice/late.service", usage=1 << 20)
    root.finish()
    assert "/system.slice/late.service" not in listing.paths(host, 12 * S)
    assert "/system.slice/late.service" in listing.paths(host, 41 * S) and listing.walks == 3
    assert Sample(host, 42 * S, listing).cgroup_paths == listing.paths(host, 42 * S)


@pytest.mark.parametrize("content", [None, "memory\t4\tmany\t1\n", b"\xff\xfe"])
def test_without_a_readable_count_every_look_walks(tmp_path: Path, content: object) -> None:
    root = hybrid(tmp_path, 2)
    if content is None:
        root.remove("/proc/cgroups")
    else:
        root.write("/proc/cgroups", content)  # type: ignore[arg-type]
    host = Host(root.root)
    assert read_tree_stamp(host) is None
    listing = Listing(max_age_s=30)
    listing.paths(host, 0)
    listing.paths(host, S)
    assert listing.walks == 2


def test_a_calm_daemon_records_its_history_on_the_fast_path(tmp_path: Path) -> None:
    """The usage history every HISTORY_IDLE_S while calm, taken by the fast path: no full look
    until the rescan is due."""
    root = machine(tmp_path, available_kb=12 * GiB_KB)
    g, _, clock = guardian_for(root, "dry_run = true\n[machine]\nmem_available = { term = '10%' }\n")
    assert g.keeps_history
    covered(g)
    g.tick()  # the first look: calm from here on
    assert g.history.cgroups.recorded_us is not None
    recorded = [g.history.cgroups.recorded_us]
    looks = full = 0
    while clock.monotonic_us() < (RESCAN_S - 1) * S:
        looks += 1
        interval = g.quick(clock.monotonic_us())
        if interval is None:
            full += 1
            interval = g.tick().interval_s
        last = g.history.cgroups.recorded_us
        if last is not None and last != recorded[-1]:
            recorded.append(last)
        clock.advance(interval)
    assert full == 0
    steps = [(b - a) / S for a, b in zip(recorded, recorded[1:])]
    assert len(steps) >= 2 and all(step == pytest.approx(HISTORY_IDLE_S, abs=0.05) for step in steps)
    assert "/system.slice/critical.service" in g.history.cgroups._readings


def test_a_loop_that_wakes_late_still_records_the_history_every_idle_step(tmp_path: Path) -> None:
    """A real loop wakes a little after its plan (a few milliseconds), and the watchdog wakes it
    every few seconds anyway: the history is still recorded every HISTORY_IDLE_S, not at each
    wake-up that comes before it is due."""
    root = machine(tmp_path, available_kb=12 * GiB_KB)
    g, _, clock = guardian_for(root, "dry_run = true\n[machine]\nmem_available = { term = '10%' }\n")
    covered(g)
    g.tick()
    recorded = [g.history.cgroups.recorded_us]
    wakes = 0
    while clock.monotonic_us() < (RESCAN_S - 1) * S:
        wakes += 1
        interval = g.quick(clock.monotonic_us(), cap_s=HISTORY_IDLE_S / 2)  # the watchdog's pings
        assert interval is not None
        last = g.history.cgroups.recorded_us
        if last != recorded[-1]:
            recorded.append(last)
        clock.advance(interval + 0.004)
    steps = [(b - a) / S for a, b in zip(recorded, recorded[1:])]
    assert wakes >= 5 and len(steps) >= 2
    assert all(HISTORY_IDLE_S - 0.05 <= step <= HISTORY_IDLE_S + 0.05 for step in steps), steps


def test_the_live_counts_move_when_a_cgroup_is_made(tmp_path: Path) -> None:
    """On this machine: the stamp reads, and making an empty group in the memory hierarchy (no
    task in it, no memory charged) moves it."""
    host = Host("/")
    before = read_tree_stamp(host)
    if before is None:
        pytest.skip("this kernel has neither a cgroup2 cgroup.stat nor /proc/cgroups")
    layout = host.cgroup_layout()
    mount = layout.v1_memory_mount or layout.v2_mount
    assert mount is not None
    directory = os.path.join(mount.mount_point, f"guardian-listing-{uuid.uuid4().hex[:8]}")
    os.mkdir(directory)
    try:
        assert read_tree_stamp(host) != before
    finally:
        os.rmdir(directory)
