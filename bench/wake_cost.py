"""What waking up costs on this machine: the same piece of Python work timed hot (run back to
back) and right after sleeping, in process CPU time.

An idle daemon's CPU is its wake-ups times what each costs, and what each costs depends on the
machine as much as on the daemon: after a sleep of seconds, the CPU's caches and TLB hold other
work's lines and a virtual CPU may have been descheduled, so the first microseconds of work
after a wake-up run many times slower than the same work run hot. A daemon that does more per
wake-up (guardian's interpreter, against earlyoom's C) pays that factor on more work. This
prints the factor for a few sleep lengths, so that an idle measurement (bench/idle_cost.py) can
be read against it.

    .venv/bin/python bench/wake_cost.py [--wakes 8] [--sleeps 0.01 0.5 2 5]
"""

from __future__ import annotations

import argparse
import statistics
import time


def work() -> int:
    """About 150 us of dict and integer work on the development machine, hot."""
    total = 0
    seen: dict[int, int] = {}
    for i in range(2000):
        seen[i % 50] = total
        total += i * 3 % 7
    return total


def hot_us(rounds: int = 200) -> float:
    start = time.process_time()
    for _ in range(rounds):
        work()
    return (time.process_time() - start) / rounds * 1e6


def after_sleep_us(sleep_s: float, wakes: int) -> list[float]:
    costs = []
    for _ in range(wakes):
        time.sleep(sleep_s)
        start = time.process_time()
        work()
        costs.append((time.process_time() - start) * 1e6)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wakes", type=int, default=8, help="wake-ups per sleep length (default 8)")
    parser.add_argument("--sleeps", type=float, nargs="+", default=[0.01, 0.5, 2.0, 5.0], metavar="S")
    args = parser.parse_args()
    hot = hot_us()
    print(f"hot: {hot:.0f} us per round (the mean of 200 back to back)")
    print(f"{'sleep before':>14} {'median':>10} {'max':>10} {'x hot':>7}")
    for sleep_s in args.sleeps:
        costs = after_sleep_us(sleep_s, args.wakes)
        median = statistics.median(costs)
        print(f"{sleep_s:>12g} s {median:>8.0f} us {max(costs):>7.0f} us {median / hot:>7.1f}")


if __name__ == "__main__":
    main()
