"""Latency probe, run in the guest by guest.sh's bench_begin: sleep 10 ms in a loop and record
how much longer than 10 ms each sleep took (its oversleep). A process that only sleeps and wakes
is what an interactive program or a heartbeat looks like to the kernel: its oversleep is the stall
a user would feel, whether it comes from reclaim, a thrashing page cache or a hung OOM path.

Usage: python3 probe.py OUT_JSON
Every second, and on SIGTERM, OUT_JSON is replaced with: the number of sleeps, the worst
oversleep, a histogram, and every oversleep of 20 ms or more with its CLOCK_BOOTTIME time (the
clock of /proc/uptime), so the host can take the worst within any window. If the probe is killed
(by a daemon or the kernel), the last second's file stays.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

PERIOD_S = 0.010
NOTE_MS = 20.0  # oversleeps at least this long are kept with their time
MAX_NOTED = 20000
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Record:
    def __init__(self) -> None:
        self.started = now()
        self.sleeps = 0
        self.worst_ms = 0.0
        self.worst_at = 0.0
        self.histogram = [0] * (len(BUCKETS_MS) + 1)  # <=1, <=2, ... , >5000 ms
        self.noted: list[tuple[float, float]] = []

    def add(self, at: float, late_ms: float) -> None:
        self.sleeps += 1
        if late_ms > self.worst_ms:
            self.worst_ms, self.worst_at = late_ms, at
        for i, edge in enumerate(BUCKETS_MS):
            if late_ms <= edge:
                self.histogram[i] += 1
                break
        else:
            self.histogram[-1] += 1
        if late_ms >= NOTE_MS and len(self.noted) < MAX_NOTED:
            self.noted.append((round(at, 4), round(late_ms, 2)))

    def dump(self, path: str) -> None:
        data = {
            "period_ms": PERIOD_S * 1000,
            "started": self.started,
            "ended": now(),
            "sleeps": self.sleeps,
            "worst_ms": round(self.worst_ms, 2),
            "worst_at": self.worst_at,
            "buckets_ms": list(BUCKETS_MS),
            "histogram": self.histogram,
            "noted": self.noted,
        }
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)


def main() -> int:
    out = sys.argv[1]
    record = Record()

    def stop(signum: int, frame: object) -> None:
        record.dump(out)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    next_dump = now() + 1.0
    while True:
        before = now()
        time.sleep(PERIOD_S)
        after = now()
        record.add(after, max(0.0, (after - before - PERIOD_S) * 1000))
        if after >= next_dump:
            record.dump(out)
            next_dump = after + 1.0


if __name__ == "__main__":
    raise SystemExit(main())
