"""What one refresh of ``guardian top`` costs, beside what ``guardian status`` costs.

CPU time (user + system) of this process, median of ``--repeat`` runs, on the machine as it is
(or ``--root DIR``):

  status read    Sample + build_status(): what ``guardian status`` reads and computes
  status run     a whole ``guardian status --interval 0`` (a new process: start, read, print)
  rank run       a whole ``guardian rank --interval 0`` (a new process)
  top, ranking   one refresh of ``guardian top`` in a running view that ranks: status read +
                 the policy's ranking + the first three explained + the layout, not printed
  top, reusing   one refresh that shows the last ranking again (top.RANK_SHARE: a ranking is
                 made again once its CPU time is at most 5 % of the time since)

    .venv/bin/python bench/top_cost.py [--repeat 20] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guardian.clock import Clock
from guardian.config import builtin_policy
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.status import build_status
from guardian.top import Monitor, layout


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1000


def child_cpu_ms(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--root", default="/")
    args = parser.parse_args()
    host = Host(args.root)
    clock = Clock()
    plugins = make_plugin_manager(None, entry_points=False)
    monitor = Monitor(host, Selector(builtin_policy(), plugins), plugins.errors, clock, 1.0)
    guardian = [sys.executable, "-m", "guardian.cli"]
    processes = sum(1 for name in os.listdir(host.proc) if name.isdigit())
    print(f"{processes} processes, {len(Sample(host, 0).cgroup_paths)} cgroups, median of {args.repeat}")
    results = {
        "status read": cpu_ms(lambda: build_status(Sample(host, clock.monotonic_us())), args.repeat),
        "status run": child_cpu_ms(
            [*guardian, "status", "--interval", "0", "--root", args.root], args.repeat
        ),
        "rank run": child_cpu_ms([*guardian, "rank", "--interval", "0", "--root", args.root], args.repeat),
    }
    monitor.rank_share = 1e9  # every refresh ranks
    results["top, ranking"] = cpu_ms(lambda: layout(monitor.refresh("", "built-in"), 120, 50), args.repeat)
    monitor.rank_share = 1e-9  # no refresh ranks
    results["top, reusing"] = cpu_ms(lambda: layout(monitor.refresh("", "built-in"), 120, 50), args.repeat)
    for name, ms in results.items():
        print(f"{name:12} {ms:7.1f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
