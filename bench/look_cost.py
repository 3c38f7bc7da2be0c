"""What the daemon's looks cost on this machine, in process CPU time (no sleeping):

  full look    one full tick of the engine with N watched groups (empty memory cgroups this
               script makes under a parent of its own and removes afterwards; no task in them,
               nothing charged), with the groups' files held open as the daemon holds them
               and, for comparison, opened on every read
  calm hour    the loop a calm daemon runs for an hour, with the shipped policy on this
               machine, on a fake clock (each pass: the fast path, or a full tick when it says
               so; the interval it returns is skipped, not slept): passes, full ticks, CPU
  process      reading one process (stat, status, oom_score_adj, cgroup), per process

    .venv/bin/python bench/look_cost.py [--groups 20] [--looks 2000] [--policy etc/guardian.toml]

The poll() wake-up itself is not in these numbers (bench/idle_cost.py measures a real idle
daemon, wake-ups included, beside earlyoom).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.clock import FakeClock  # noqa: E402
from support.sinks import MemorySink  # noqa: E402

import guardian.host as host_module  # noqa: E402
from guardian.config import parse_policy  # noqa: E402
from guardian.daemon.engine import Engine  # noqa: E402
from guardian.daemon.wakeups import Waiter  # noqa: E402
from guardian.host import Host  # noqa: E402
from guardian.loaded import Loaded  # noqa: E402
from guardian.plugins import make_plugin_manager  # noqa: E402
from guardian.report import Reporter  # noqa: E402
from guardian.sample import Sample  # noqa: E402
from guardian.selection import Selector  # noqa: E402
from guardian.sources.processes import read_process  # noqa: E402

GROUPS_POLICY = """dry_run = true
[machine]
mem_available = {{ term = "10%", kill = "5%" }}
[[cgroup]]
match = "{parent}/*.service"
min_headroom = {{ term = "10%", kill = "4%" }}
events = {{ oom_per_s = 0 }}
[scorers]
cause = 1.0
"""


def engine_for(policy_text: str, clock: FakeClock | None = None) -> Engine:
    policy = parse_policy(policy_text, "bench.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    loaded = Loaded(policy, plugins, Selector(policy, plugins))
    engine = Engine(Host("/"), loaded, Reporter(MemorySink()), clock)
    now = engine.clock.monotonic_us()
    engine.rescan(Sample(engine.host, now), now, force=True)
    return engine


@contextlib.contextmanager
def empty_groups(count: int) -> Iterator[str]:
    """``count`` empty groups NAME/sN.service in the memory hierarchy, one in four with a limit;
    yields NAME and removes them all afterwards."""
    host = Host("/")
    layout = host.cgroup_layout()
    if layout.memory_controller is None:
        raise SystemExit("look_cost: no memory cgroup hierarchy on this machine")
    v1 = layout.memory_controller == "v1"
    directory = host.cgroup_v1_memory_dir if v1 else host.cgroup_v2_dir
    name = f"guardian-look-cost-{uuid.uuid4().hex[:8]}"
    made = [directory(f"/{name}")]
    os.mkdir(made[0])
    try:
        if not v1:
            Path(made[0], "cgroup.subtree_control").write_text("+memory")
        for i in range(count):
            made.append(directory(f"/{name}/s{i}.service"))
            os.mkdir(made[-1])
            if i % 4 == 0:
                Path(made[-1], "memory.limit_in_bytes" if v1 else "memory.max").write_text(str(512 << 20))
        yield name
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def full_look_us(engine: Engine, looks: int) -> float:
    engine.tick()
    started = time.process_time()
    for _ in range(looks):
        engine.history.cgroups.recorded_us = engine.clock.monotonic_us()  # the history apart
        engine.tick()
    return (time.process_time() - started) / looks * 1e6


def calm_hour(policy_text: str) -> tuple[int, int, float]:
    clock = FakeClock()
    engine = engine_for(policy_text, clock)
    waiter = Waiter()
    try:
        wake_plan = engine.wake_plan(Sample(engine.host, clock.monotonic_us()))
        engine.use_wakeups(wake_plan, waiter.arm(wake_plan))
        start = clock.monotonic_us()
        passes = full = 0
        started = time.process_time()
        while clock.monotonic_us() - start < 3600 * 1_000_000:
            passes += 1
            interval = engine.quick(clock.monotonic_us())
            if interval is None:
                full += 1
                interval = engine.tick().interval_s
            clock.advance(interval)
        return passes, full, time.process_time() - started
    finally:
        waiter.close()


def process_us(rounds: int = 10) -> tuple[float, int]:
    host = Host("/")
    pids = host.pids()
    best = []
    for _ in range(rounds):
        started = time.process_time()
        for pid in pids:
            with contextlib.suppress(Exception):
                read_process(host, pid)
        best.append((time.process_time() - started) / len(pids) * 1e6)
    return statistics.median(best), len(pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--looks", type=int, default=2000)
    parser.add_argument("--policy", type=Path, default=ROOT / "etc" / "guardian.toml")
    args = parser.parse_args()

    with empty_groups(args.groups) as parent:
        engine = engine_for(GROUPS_POLICY.format(parent=parent))
        assert len(engine.watched) == args.groups, engine.watched
        held = full_look_us(engine, args.looks)
        engine.host.hold_open([])
        kept = host_module.HOT_MAX
        host_module.HOT_MAX = 0  # every file opened, read and closed
        try:
            opened = full_look_us(engine_for(GROUPS_POLICY.format(parent=parent)), args.looks)
        finally:
            host_module.HOT_MAX = kept
    print(
        f"full look, {args.groups} watched groups: {held:.0f} us held open, {opened:.0f} us opened each time"
    )
    passes, full, cpu = calm_hour(args.policy.read_text())
    print(f"calm hour ({args.policy.name}): {passes} passes, {full} full ticks, {cpu * 1e3:.0f} ms of CPU")
    per_process, count = process_us()
    print(f"reading a process: {per_process:.1f} us per process ({count} processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
