"""What ranking costs: per 1000 processes, with 1000 and 5000 idle processes on the machine.

The idle processes (``sleep``) are started inside a confined cgroup of the benchmark's own
(tests/support/arena.py: a memory limit of 4 GiB, removed afterwards). For each population it prints,
per 1000 processes:

  floor      a bare open().read() of the 4 files guardian reads per process (as sample_cost.py)
  read       guardian reading every process (stat, status, oom_score_adj, cgroup)
  rank       a whole ranking: read, candidates and exclusions, then the scorers, for
             (a) the default policy (kernel_badness, rules) and (b) all built-in scorers;
             with --policy FILE, that policy's rules (protect, ignore, prefer, avoid) and
             scorers instead of the built-in defaults (b: its rules with all 4 scorers)

    .venv/bin/python bench/rank_cost.py [--sizes 1000 5000] [--repeat 5] [--policy FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.arena import Arena

from guardian.config import Policy, load_policy
from guardian.errors import GuardianError
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.sources.processes import read_processes

PROCESS_FILES = ("stat", "status", "oom_score_adj", "cgroup")
ALL_SCORERS = {"kernel_badness": 1.0, "cgroup_largest": 1.0, "kubelet_qos": 1.0, "rules": 1.0}


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def floor(host: Host) -> None:
    for pid in host.pids():
        for name in PROCESS_FILES:
            try:
                with open(host.pid_path(pid, name), "rb") as f:
                    f.read()
            except OSError:
                pass


def populate(arena: Arena, count: int) -> None:
    """A launcher inside the arena forks ``count`` sleepers (they inherit its cgroups)."""
    child = arena.spawn(
        "import subprocess, sys, time\n"
        f"procs = [subprocess.Popen(['sleep', '3600']) for _ in range({count})]\n"
        "print('ready', flush=True)\n"
        "time.sleep(3600)\n"
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != b"ready\n":
        raise SystemExit(f"launcher failed to start {count} sleepers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--policy", metavar="FILE", help="rank with this policy (e.g. etc/guardian.toml)")
    args = parser.parse_args()
    host = Host("/")
    if os.geteuid() != 0 or host.cgroup_layout().memory_controller is None:
        print("needs root and a memory cgroup controller to confine the idle processes")
        return 1
    plugins = make_plugin_manager(None, entry_points=False)
    policy = load_policy(args.policy) if args.policy else Policy()
    default = Selector(policy, plugins)
    everything = Selector(replace(policy, scorers=ALL_SCORERS), plugins)

    print(f"machine: {os.uname().release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("per 1000 processes, ms")
    print(f"{'processes':>10} {'floor':>10} {'read':>10} {'rank (default)':>15} {'rank (all 4)':>13}")
    for size in args.sizes:
        arena = Arena(host, limit_bytes=4 << 30, prefix="guardian-bench")
        try:
            populate(arena, size)
            n = len(host.pids())
            per_k = 1000 / n
            f = median_ms(lambda: floor(host), args.repeat) * per_k
            r = median_ms(lambda: read_processes(host), args.repeat) * per_k
            d = median_ms(lambda: default.rank(Sample(host, 0)), args.repeat) * per_k
            a = median_ms(lambda: everything.rank(Sample(host, 0)), args.repeat) * per_k
            print(f"{n:>10} {f:>10.1f} {r:>10.1f} {d:>15.1f} {a:>13.1f}")
            ranking = everything.rank(Sample(host, 0))
            if ranking.failures:
                print(f"{'':>10} plugin failures: {[x.describe() for x in ranking.failures]}")
        finally:
            with contextlib.suppress(GuardianError, OSError):
                arena.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
