"""State kept between ticks and rankings stays bounded when cgroups come and go.

PolicyState (stall meters, timers, crossed lines) and cgroup_largest's growth averages were keyed
by cgroup path and never forgot one: on a node where pods churn, about 2 KB per group ever seen,
for as long as the daemon runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import write

from guardian.candidates import Candidate
from guardian.config import Policy, parse_policy
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.policy import PolicyState, assess
from guardian.sample import Sample
from guardian.scorers import cgroup_largest
from guardian.scorers.cgroup_largest import CgroupLargest
from guardian.selection import Selector

MiB = 1 << 20
CHURN = 1000
AT_ONCE = 10

POLICY = parse_policy(
    """
[machine]
enabled = false
[[cgroup]]
match = "churn.slice/*"
min_headroom = { term = "50%" }
psi = { kind = "some", stall_pct = 10, duration_s = 60 }
events = { oom_per_s = 0 }
""",
    "churn.toml",
)


def machine(root: Path) -> None:
    write(root, "proc/meminfo", "MemTotal: 8388608 kB\nMemFree: 4194304 kB\nMemAvailable: 4194304 kB\n")
    write(root, "proc/vmstat", "pgscan_kswapd 1\n")
    write(root, "proc/self/mountinfo", "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    write(root, "sys/fs/cgroup/cgroup.controllers", "memory\n")


def group(root: Path, path: str, stall_total_us: int) -> None:
    """A group at 90 % of its limit, with a stall that grows between ticks."""
    base = f"sys/fs/cgroup{path}"
    write(root, f"{base}/memory.current", f"{90 * MiB}\n")
    write(root, f"{base}/memory.max", f"{100 * MiB}\n")
    write(root, f"{base}/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    write(
        root,
        f"{base}/memory.pressure",
        f"some avg10=50.00 avg60=10.00 avg300=1.00 total={stall_total_us}\n"
        f"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )


def test_policy_state_forgets_groups_that_are_gone(tmp_path: Path) -> None:
    machine(tmp_path)
    host = Host(tmp_path)
    state = PolicyState()
    now = 1_000_000
    sizes = []
    for start in range(0, CHURN, AT_ONCE):
        paths = [f"/churn.slice/pod{i}.scope" for i in range(start, start + AT_ONCE)]
        for tick in range(2):  # two readings: a meter, a stall being timed, a crossed line
            for path in paths:
                group(tmp_path, path, stall_total_us=tick * 900_000)
            now += 1_000_000
            assess(Sample(host, now), POLICY, state, now, paths)
        assert {k[1] for k in state.on} == set(paths)  # what is watched is remembered
        assert {k[1] for k in state.stalled_since_us} == set(paths)
        shutil.rmtree(tmp_path / "sys/fs/cgroup/churn.slice")
        sizes.append(len(state.on) + len(state.meters) + len(state.stalled_since_us) + len(state.events))
    assert max(sizes) <= 4 * AT_ONCE  # 1000 groups came and went; only the last ten are known
    # and with the groups gone, the next assessment forgets them too
    assess(Sample(host, now + 1), POLICY, state, now + 1, [])
    assert not state.on and not state.meters and not state.stalled_since_us and not state.events


def test_machine_entries_stay(tmp_path: Path) -> None:
    machine(tmp_path)
    write(tmp_path, "proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
    policy = parse_policy(
        '[machine]\nmem_available = { term = "60%" }\npsi = { kind = "some", stall_pct = 10, duration_s = 5 }\n',
        "m.toml",
    )
    state = PolicyState()
    for now in (1_000_000, 2_000_000):
        assess(Sample(Host(tmp_path), now), policy, state, now, [])
    assert ("machine", None, "memory") in state.on
    assert ("machine", None) in state.meters


def test_growth_averages_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An LRU: the groups ranked least recently are forgotten first (MAX_AVERAGES)."""
    monkeypatch.setattr(cgroup_largest, "MAX_AVERAGES", 64)
    machine(tmp_path)
    paths = [f"/churn.slice/pod{i}.scope" for i in range(CHURN)]
    for path in paths:
        write(tmp_path, f"sys/fs/cgroup{path}/memory.current", f"{MiB}\n")
    policy = Policy(scorers={"cgroup_largest": 1.0})
    selector = Selector(policy, make_plugin_manager(None, entry_points=False))
    scorer = CgroupLargest()
    sizes = []
    for start in range(0, CHURN, AT_ONCE):
        context = selector.context(Sample(Host(tmp_path), start))
        scorer.prepare(context, [Candidate(kind="cgroup", cgroup=p) for p in paths[start : start + AT_ONCE]])
        sizes.append(len(scorer._avg))
    assert max(sizes) == 64
    assert list(scorer._avg)[-AT_ONCE:] == paths[-AT_ONCE:]  # the latest are kept
