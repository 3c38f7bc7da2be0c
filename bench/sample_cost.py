"""What sensing costs on this machine: one full sample per tick, and every process.

Prints microseconds, each beside a floor: a bare ``open().read()`` of exactly the same files,
which no Python reader can beat. Also prints psutil reading the same process facts, the
measurement behind "direct reads on the hot path" in guardian/sources/processes.py.

    .venv/bin/python bench/sample_cost.py [--repeat N] [--root DIR]

Each figure is the median of ``--repeat`` rounds (default 200 for ticks, 20 for processes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from guardian.errors import GuardianError
from guardian.host import Host
from guardian.sample import Sample
from guardian.sources.processes import read_process


def median_us(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches (dentries, imports) once
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def bare_read(paths: list[str]) -> None:
    for p in paths:
        try:
            with open(p, "rb") as f:
                f.read()
        except OSError:
            pass


def full_tick(host: Host, now: int) -> Sample:
    """Everything a machine-wide policy can look at in one tick: meminfo, memory PSI, vmstat,
    and every cgroup's memory state and memory.pressure."""
    sample = Sample(host, now)
    sample.meminfo  # noqa: B018 - the read is the point
    sample.pressure_or_none("memory")
    sample.vmstat  # noqa: B018
    for path in sample.cgroup_paths:
        group = sample.cgroup(path)
        for attr in ("memory", "pressure"):
            try:
                getattr(group, attr)
            except GuardianError:
                pass
    return sample


def tick_files(host: Host) -> list[str]:
    """The files full_tick opens, for the floor."""
    files = [host.meminfo_path(), host.pressure_path("memory"), host.vmstat_path()]
    layout = host.cgroup_layout()
    for path in host.v2_cgroups():
        files.append(f"{host.cgroup_v2_dir(path)}/memory.pressure")
        if layout.v2_memory:
            d = host.cgroup_v2_dir(path)
            files += [f"{d}/memory.{n}" for n in ("current", "max", "high", "low", "min")]
            files += [f"{d}/memory.swap.current", f"{d}/memory.swap.max", f"{d}/memory.events"]
            files.append(f"{d}/memory.oom.group")
    if layout.memory_controller == "v1":
        for path in host.v1_memory_cgroups():
            d = host.cgroup_v1_memory_dir(path)
            files += [
                f"{d}/memory.usage_in_bytes",
                f"{d}/memory.limit_in_bytes",
                f"{d}/memory.oom_control",
                f"{d}/memory.failcnt",
            ]
    return files


PROCESS_FILES = ("stat", "status", "oom_score_adj", "cgroup")
KERNEL_THREAD_FILES = ("stat", "oom_score_adj", "cgroup")  # a kernel thread's: no status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--root", default="/")
    args = parser.parse_args()
    host = Host(args.root)
    layout = host.cgroup_layout()
    pids = host.pids()
    n_cgroups = len(set(host.v2_cgroups()) | set(host.v1_memory_cgroups()))

    print(
        f"machine: {os.uname().release}, {os.cpu_count()} CPUs, cgroups {layout.mode} "
        f"({n_cgroups} groups), {len(pids)} processes, Python {sys.version.split()[0]}"
    )
    print()

    # --- one tick -----------------------------------------------------------------------
    files = tick_files(host)
    rows = [
        ("meminfo only (a MemAvailable-only policy)", lambda: Sample(host, 0).meminfo, [host.meminfo_path()]),
        (
            "meminfo + memory PSI",
            lambda: (Sample(host, 0).meminfo, Sample(host, 0).pressure_or_none("memory")),
            [host.meminfo_path(), host.pressure_path("memory")],
        ),
        (f"full sample (meminfo, PSI, vmstat, {n_cgroups} cgroups)", lambda: full_tick(host, 0), files),
    ]
    print(f"{'one tick':58} {'guardian':>12} {'floor':>12} {'ratio':>7}")
    for label, fn, floor_files in rows:
        ours = median_us(fn, args.repeat)
        floor = median_us(lambda fl=floor_files: bare_read(fl), args.repeat)
        print(f"{label:58} {ours:>9.1f} us {floor:>9.1f} us {ours / floor:>6.1f}x")
    print()

    # --- every process --------------------------------------------------------------------
    rounds = max(5, args.repeat // 10)

    def ours_all() -> None:
        for pid in host.pids():
            try:
                read_process(host, pid)
            except GuardianError:
                pass

    def floor_all() -> None:
        for pid in host.pids():
            bare_read([host.pid_path(pid, name) for name in PROCESS_FILES])

    # read_process leaves a kernel thread's status unread (PF_KTHREAD in its stat settles it):
    # the floor of what it reads is the same files without those, the kernel threads known
    # beforehand
    kernel_threads = set()
    for pid in host.pids():
        try:
            if read_process(host, pid).is_kernel_thread:
                kernel_threads.add(pid)
        except GuardianError:
            pass

    def floor_read() -> None:
        for pid in host.pids():
            names = PROCESS_FILES if pid not in kernel_threads else KERNEL_THREAD_FILES
            bare_read([host.pid_path(pid, name) for name in names])

    def psutil_all() -> None:
        # the same facts through psutil; cgroup and oom_score_adj psutil does not offer,
        # so they are read directly as guardian does
        for proc in psutil.process_iter():
            try:
                with proc.oneshot():
                    proc.ppid()
                    proc.status()
                    proc.uids()
                    proc.memory_info()
                    proc.create_time()
                    proc.name()
                bare_read([host.pid_path(proc.pid, "oom_score_adj"), host.pid_path(proc.pid, "cgroup")])
            except psutil.Error:
                pass

    def enumerate_ours() -> None:
        host.pids()

    def enumerate_psutil() -> None:
        psutil.pids()

    n = len(host.pids())
    heading = f"every process ({n}, {len(kernel_threads)} kernel threads)"
    print(f"{heading:58} {'total':>12} {'per process':>14}")
    for label, fn in (
        ("guardian read_process (stat, status, oom_score_adj, cgroup)", ours_all),
        ("floor: bare open().read() of the files it reads", floor_read),
        ("floor: bare open().read() of all 4 files of each", floor_all),
        ("psutil oneshot (ppid, status, uids, memory_info, ...)", psutil_all),
    ):
        total = median_us(fn, rounds)
        print(f"{label:58} {total:>9.0f} us {total / n:>11.1f} us")
    print()
    print(f"{'enumerating pids':58} {'':>12}")
    print(f"{'guardian Host.pids() (os.listdir)':58} {median_us(enumerate_ours, args.repeat):>9.1f} us")
    print(f"{'psutil.pids()':58} {median_us(enumerate_psutil, args.repeat):>9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
