"""How each cgroup's memory use moved: the readings the cause-aware ranking takes growth from.

The daemon records every cgroup's memory use (``memory.current``, or v1
``memory.usage_in_bytes``) now and then (guardian/daemon/engine.py); ``guardian rank`` records
twice, ``--interval`` apart. A ranking then asks for a group's growth: the rate between its
memory use now and a reading at least ``RATE_SPAN_S`` old (the newest such one, so a group that
grew long ago and has been steady since counts as steady), or, when every reading is younger,
the oldest one.

A group that appears between two recordings did not exist at the first: it is recorded as
holding nothing then, so a service that started and grew between two readings shows that
growth rather than none.

Bounded: readings older than ``KEEP_S`` are dropped, at most ``PER_GROUP`` are kept per group,
a group absent from a recording is forgotten, and at most ``MAX_GROUPS`` groups are kept.
Pure: no file is read here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

RATE_SPAN_S = 5.0  # growth is measured over at least this long where the readings allow
KEEP_S = 60.0
PER_GROUP = 32
MAX_GROUPS = 8192


@dataclass(frozen=True)
class Growth:
    """A group's memory use changing at ``bytes_per_s`` (negative: shrinking), measured over
    ``span_s`` seconds."""

    bytes_per_s: float
    span_s: float


class UsageHistory:
    def __init__(self) -> None:
        self._readings: dict[str, deque[tuple[int, int]]] = {}
        self.recorded_us: Optional[int] = None

    def __len__(self) -> int:
        return len(self._readings)

    def record(self, now_us: int, usage: Mapping[str, int], walked: Iterable[str] = ()) -> None:
        """One recording: ``usage`` by cgroup path, read at ``now_us``. ``walked`` names groups
        that exist but could not be read this time (kept, not forgotten)."""
        previous_us = self.recorded_us
        keep = set(usage) | set(walked)
        for path in [p for p in self._readings if p not in keep]:
            del self._readings[path]
        oldest = now_us - int(KEEP_S * 1e6)
        for path, used in usage.items():
            readings = self._readings.get(path)
            if readings is None:
                if len(self._readings) >= MAX_GROUPS:
                    continue
                readings = self._readings[path] = deque(maxlen=PER_GROUP)
                if previous_us is not None and previous_us < now_us:
                    readings.append((previous_us, 0))  # it did not exist at the last recording
            if readings and readings[-1][0] >= now_us:
                continue  # one reading per instant, and time only moves forward
            readings.append((now_us, used))
            while readings and readings[0][0] < oldest:
                readings.popleft()
        self.recorded_us = now_us

    def growth(self, path: str, now_us: int, current_bytes: int) -> Optional[Growth]:
        """The group's growth up to ``current_bytes`` at ``now_us``; None without an earlier
        reading."""
        readings = self._readings.get(path)
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
