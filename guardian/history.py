"""How each cgroup's (and process's) memory use moved: the readings the cause-aware ranking
takes growth from.

The daemon records every cgroup's memory use (``memory.current``, or v1
``memory.usage_in_bytes``) now and then (guardian/daemon/engine.py); ``guardian rank`` records
twice, ``--interval`` apart. A ranking then asks for a group's growth: the rate between its
memory use now and a reading at least ``RATE_SPAN_S`` old (the newest such one, so a group that
grew long ago and has been steady since counts as steady), or, when every reading is younger,
the oldest one.

A group that appears between two recordings did not exist at the first: it is recorded as
holding nothing then, so a service that started and grew between two readings shows that
growth rather than none.

Processes are recorded by (pid, start time) and only some at a time (those of a scope, those a
ranking read): a partial recording forgets nobody and assumes nothing about newcomers.

Bounded: readings older than ``KEEP_S`` are dropped (and a key with none left), at most
``PER_GROUP`` are kept per key, a group absent from a complete recording is forgotten, and at
most ``MAX_GROUPS`` keys are kept. Pure: no file is read here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Optional, TypeVar

from guardian.frozen import frozen
from guardian.records import Process

K = TypeVar("K", bound=Hashable)

RATE_SPAN_S = 5.0  # growth is measured over at least this long where the readings allow
KEEP_S = 60.0
PER_GROUP = 32
MAX_GROUPS = 8192


@frozen
class Growth:
    """A group's memory use changing at ``bytes_per_s`` (negative: shrinking), measured over
    ``span_s`` seconds."""

    bytes_per_s: float
    span_s: float


class History(Generic[K]):
    def __init__(self) -> None:
        self._readings: dict[K, deque[tuple[int, int]]] = {}
        self.recorded_us: Optional[int] = None  # the last complete recording

    def __len__(self) -> int:
        return len(self._readings)

    def record(
        self, now_us: int, usage: Mapping[K, int], walked: Iterable[K] = (), complete: bool = True
    ) -> None:
        """One recording: ``usage`` by key, read at ``now_us``. A complete one covers every key
        there is (``walked``: those that exist but could not be read this time, kept): the others
        are forgotten, and a key new since the last complete recording held nothing then."""
        previous_us = self.recorded_us if complete else None
        oldest = now_us - int(KEEP_S * 1e6)
        if complete:
            keep = set(usage) | set(walked)
            for key in [k for k in self._readings if k not in keep]:
                del self._readings[key]
        for key in [k for k, r in self._readings.items() if r[-1][0] < oldest]:
            del self._readings[key]
        for key, used in usage.items():
            readings = self._readings.get(key)
            if readings is None:
                if len(self._readings) >= MAX_GROUPS:
                    continue
                readings = self._readings[key] = deque(maxlen=PER_GROUP)
                if previous_us is not None and previous_us < now_us:
                    readings.append((previous_us, 0))  # it did not exist at the last recording
            if readings and readings[-1][0] >= now_us:
                continue  # one reading per instant, and time only moves forward
            readings.append((now_us, used))
            while readings and readings[0][0] < oldest:
                readings.popleft()
        if complete:
            self.recorded_us = now_us

    def discount(self, keys: Iterable[K], freed_bytes: int, before_us: int) -> None:
        """Take ``freed_bytes`` out of the readings of ``keys`` taken before ``before_us``: a
        victim guardian killed held them, and its death is not the survivors shrinking (without
        this, the group that caused the shortage would look steady right after each kill, and
        a steady bystander would be next)."""
        for key in keys:
            readings = self._readings.get(key)
            if readings is None:
                continue
            for i, (t, used) in enumerate(readings):
                if t < before_us:
                    readings[i] = (t, max(0, used - freed_bytes))

    def growth(self, key: K, now_us: int, current_bytes: int) -> Optional[Growth]:
        """The growth of ``key`` up to ``current_bytes`` at ``now_us``; None without an earlier
        reading."""
        readings = self._readings.get(key)
        if not readings:
            return None
        span_us = int(RATE_SPAN_S * 1e6)
        then = None
        for t, used in reversed(readings):
            if now_us - t >= span_us:
                then = (t, used)
                break
        if then is None:
            t, used = readings[0]
            if t >= now_us:
                return None
            then = (t, used)
        seconds = (now_us - then[0]) / 1e6
        return Growth((current_bytes - then[1]) / seconds, seconds)


UsageHistory = History[str]  # cgroups, by path
ProcessKey = tuple[int, int]  # (pid, start time in clock ticks): a recycled pid is another key
ProcessHistory = History[ProcessKey]


def process_usage(process: Process) -> int:
    """What the process history follows: memory only the process holds as far as its status
    tells (anonymous, swap, page tables), the part of what a kill frees that needs no smaps."""
    return process.rss_anon_bytes + process.swap_bytes + process.pte_bytes


def process_key(process: Process) -> ProcessKey:
    return (process.pid, process.starttime_ticks)


@dataclass
class Histories:
    """The daemon's (or one ``rank --interval``'s) readings: cgroups and processes."""

    cgroups: UsageHistory = field(default_factory=UsageHistory)
    processes: ProcessHistory = field(default_factory=ProcessHistory)

    def record_processes(self, now_us: int, processes: Iterable[Process]) -> None:
        self.processes.record(
            now_us,
            {process_key(p): process_usage(p) for p in processes if not p.is_kernel_thread},
            complete=False,
        )
