"""Reaction time: from a hog crossing the TERM line to guardian's SIGTERM reaching it.

Runs in a confined arena (tests/support/arena.py: a 320 MiB limit, removed afterwards). guardian runs
with a cgroup rule for the arena (TERM at 64 MiB of headroom). Each run starts a hog at a
steady rate; the hog itself notes, on CLOCK_MONOTONIC, the moment its cgroup's usage reaches the
TERM line (it reads the usage after every 2 MiB step) and the moment SIGTERM arrives. The
difference is the reaction time, measured by the victim on one clock.

    .venv/bin/python bench/reaction.py [--runs 30] [--rates 50 100 200 400] [--busy N] [--nice N]

``--busy N`` starts N processes that spin on the CPU for the whole run, in a second confined
cgroup of their own (no rule watches it), so that guardian has to win a CPU from them; ``--nice N``
runs guardian at that niceness (the shipped unit says ``Nice=-10``; the default here is 0).

Prints p50/p99/max per rate and overall, the kernel's OOM kills in the arena (must be 0), and
which wake-up guardian used (the kernel's usage-threshold event on cgroup v1 here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.arena import Arena, GuardianProcess, hog_program

from guardian.host import Host

MiB = 1 << 20
LIMIT = 320 * MiB
TERM = 64 * MiB


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def one_run(arena: Arena, rate: int) -> tuple[float, str]:
    hog = arena.spawn(hog_program(rate, arena.usage_file, LIMIT - TERM))
    assert hog.stdout is not None
    lines = []
    for raw in hog.stdout:
        lines.append(raw.decode().strip())
        if lines[-1].startswith("term"):
            break
    hog.wait(timeout=30)
    hog.stdout.close()
    marks = dict(line.split() for line in lines if " " in line)
    if "term" not in marks:
        return float("nan"), f"not terminated by guardian (exit {hog.returncode})"
    if "cross" not in marks:
        # SIGTERM came between the hog's growing past the line and its own reading of the usage
        # (it reads after every 2 MiB): guardian was there first, counted as 0 ms
        return 0.0, "first"
    return (float(marks["term"]) - float(marks["cross"])) * 1000, "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per rate")
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 100, 200, 400], help="MB/s")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU meanwhile")
    parser.add_argument("--nice", type=int, default=0, help="guardian's niceness (the unit: -10)")
    args = parser.parse_args()
    host = Host("/")
    if os.geteuid() != 0 or host.cgroup_layout().memory_controller is None:
        print("needs root and a memory cgroup controller")
        return 1
    arena = Arena(host, LIMIT, prefix="guardian-bench")
    busy = Arena(host, 64 * MiB * max(1, args.busy), prefix="guardian-bench-busy")
    policy = f"""
cooldown_s = 0.5
[machine]
enabled = false
[[cgroup]]
match = "{arena.name.strip("/")}"
min_headroom = {{ term = "64M", kill = "16M" }}
[scorers]
kernel_badness = 1.0
"""
    results: dict[int, list[float]] = {}
    problems: list[str] = []
    first = 0  # runs where SIGTERM came before the hog had read its own crossing
    with tempfile.TemporaryDirectory() as work:
        g = GuardianProcess(work, policy, nice=args.nice)
        try:
            g.wait_for("READY=1")
            for _ in range(args.busy):
                busy.spawn("while True:\n    pass")
            for rate in args.rates:
                for _ in range(args.runs):
                    seen = len(g.events())
                    ms, status = one_run(arena, rate)
                    first += status == "first"
                    if status not in ("ok", "first"):
                        said = "; ".join(e.get("MESSAGE", "") for e in g.events()[seen:]) or "nothing"
                        problems.append(f"{rate} MB/s: {status}; guardian said: {said}")
                    else:
                        results.setdefault(rate, []).append(ms)
                    time.sleep(0.6)  # past guardian's cooldown
            kills = arena.oom_kills()
        finally:
            g.stop()
            busy.cleanup()
            arena.cleanup()
    layout = host.cgroup_layout()
    wake = "v1 usage-threshold eventfd" if layout.memory_controller == "v1" else "memory.events + polling"
    print(f"machine: {os.uname().release}, {os.cpu_count()} CPUs; cgroups {layout.mode}; wake-up: {wake}")
    print(
        f"arena limit {LIMIT // MiB} MiB, TERM line at {TERM // MiB} MiB of headroom; {args.runs} runs/rate; "
        f"guardian at nice {args.nice}; {args.busy} processes spinning meanwhile"
    )
    print(f"{'rate MB/s':>10} {'runs':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    every: list[float] = []
    for rate, values in results.items():
        every += values
        print(
            f"{rate:>10} {len(values):>5} {statistics.median(values):>8.1f} "
            f"{percentile(values, 99):>8.1f} {max(values):>8.1f}"
        )
    if every:
        print(
            f"{'all':>10} {len(every):>5} {statistics.median(every):>8.1f} "
            f"{percentile(every, 99):>8.1f} {max(every):>8.1f}"
        )
    if first:
        print(f"{first} runs: SIGTERM came before the hog had read its own crossing (counted as 0 ms)")
    print(f"kernel OOM kills in the arena: {kills}")
    for p in problems:
        print(f"problem: {p}")
    return 0 if kills == 0 and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
