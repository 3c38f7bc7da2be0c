"""How soon to look again: the gap to each line, and how fast that gap was measured closing.

Each quantity a line is drawn on (the machine's MemAvailable and SwapFree, each watched cgroup's
headroom) is a Gauge fed with its own readings, from the full ticks and from the idle fast
path alike. Its rate is the fastest closing speed measured lately: a peak, measured over at
least MIN_SPAN_S between two readings (shorter spans are mostly noise in MemAvailable), that
halves every DECAY_S without a faster reading, so a hog that pauses and resumes is still
planned for.

The next look comes when the gap could have closed at SAFETY times that rate, or when a burst
at the policy's ``fill_rate`` from a standing start could have reached the KILL line, whichever
is sooner. The rate follows the measurements: a hog that speeds up is seen at the next look
and the interval shrinks with it: from a gap G to the TERM line closing at a steady rate R the
looks come after G/2R, G/4R, ... so the line is never crossed unseen by more than
``min_interval_s`` of growth, and reaching it costs a few looks per halving of the gap. The
floor is for what was not measured (a quantity seen still, or not read long enough to
measure): it is planned against the KILL line, not the TERM one, so a group standing still just
under its TERM line is looked at when a ``fill_rate`` burst could reach KILL (25 MiB under TERM,
with KILL 21 MiB further: every 0.18 s at 256 MiB/s instead of every 0.1 s). Such a burst is
then seen at the latest at KILL, where guardian acts with SIGKILL, still before the kernel's
limit; one that is measured growing is seen at TERM, as before. Bursts faster than the floor
from a standing start are the kernel's to report: the PSI wake-ups (a burst means direct
reclaim, and reclaim is a memory stall), memory.events and the cgroup v1 usage thresholds
(daemon/wakeups.py).

Pure: readings in, seconds out.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Optional

SAFETY = 2.0  # plan for twice the fastest closing speed measured lately
MIN_SPAN_S = 0.25  # a speed is measured over at least this long
DECAY_S = 10.0  # a measured peak halves every this many seconds


@dataclass
class Gauge:
    """One quantity's readings: the last one a speed was measured from, and the peak speed."""

    anchor_us: int
    anchor_bytes: int
    peak_bytes_per_s: float = 0.0
    peak_us: int = 0

    def read(self, now_us: int, value: int) -> None:
        span_us = now_us - self.anchor_us
        if span_us < MIN_SPAN_S * 1e6:
            if span_us < 0:  # a clock that went back (tests): start again
                self.anchor_us, self.anchor_bytes = now_us, value
            return
        closing = (self.anchor_bytes - value) / (span_us / 1e6)
        decayed = self.rate(now_us)
        if closing >= decayed:
            self.peak_bytes_per_s, self.peak_us = closing, now_us
        self.anchor_us, self.anchor_bytes = now_us, value

    def rate(self, now_us: int) -> float:
        """The peak closing speed, decayed to now (bytes per second; 0 when only growing)."""
        if self.peak_bytes_per_s <= 0:
            return 0.0
        age_s = max(0.0, (now_us - self.peak_us) / 1e6)
        return float(self.peak_bytes_per_s * 0.5 ** (age_s / DECAY_S))


class Pace:
    """The gauges of every quantity a line is drawn on, by key (("memory",), ("swap",), a cgroup
    path): fed by whoever reads the quantity, asked by whoever plans the next look."""

    def __init__(self) -> None:
        self.gauges: dict[Hashable, Gauge] = {}

    def read(self, key: Hashable, now_us: int, value: int) -> None:
        gauge = self.gauges.get(key)
        if gauge is None:
            self.gauges[key] = Gauge(now_us, value)
        else:
            gauge.read(now_us, value)

    def rate(self, key: Hashable, now_us: int) -> float:
        gauge = self.gauges.get(key)
        return 0.0 if gauge is None else gauge.rate(now_us)

    def seconds(
        self,
        key: Hashable,
        gap_bytes: int,
        now_us: int,
        floor_bytes_per_s: int,
        floor_gap_bytes: Optional[int] = None,
    ) -> float:
        """How long until the line could be reached (0 when it is): the gap at SAFETY times the
        speed measured closing it, or ``floor_gap_bytes`` (the gap to the KILL line, never less
        than ``gap_bytes``; ``gap_bytes`` itself where there is no other) at the floor speed,
        whichever is sooner."""
        if gap_bytes <= 0:
            return 0.0
        floor_gap = gap_bytes if floor_gap_bytes is None else max(gap_bytes, floor_gap_bytes)
        seconds = floor_gap / float(floor_bytes_per_s)
        rate = self.rate(key, now_us)
        if rate > 0:
            seconds = min(seconds, gap_bytes / (SAFETY * rate))
        return seconds

    def keep(self, keys: Iterable[Hashable]) -> None:
        """Forget every gauge but these (cgroups that are gone or no longer watched)."""
        wanted = set(keys)
        for key in [k for k in self.gauges if k not in wanted]:
            del self.gauges[key]


Lines = tuple[Optional[int], Optional[int]]  # (MemAvailable, SwapFree) lines: policy.machine_lines


def machine_seconds(
    pace: Pace,
    now_us: int,
    floor_bytes_per_s: int,
    available: int,
    swap_free: Optional[int],
    lines: Lines,
    kill_lines: Lines,
) -> Optional[float]:
    """How long until the machine's memory condition could hold: it needs MemAvailable AND
    SwapFree (where swap is judged: its line and its reading both given) at or below ``lines``,
    so the later of the two; ``kill_lines`` are the KILL lines the floor plans for
    (``Pace.seconds``). 0 when the condition holds; None when memory is not watched."""
    line, swap_line = lines
    if line is None:
        return None
    kill_line, kill_swap_line = kill_lines
    seconds = pace.seconds(MEMORY, available - line, now_us, floor_bytes_per_s, _gap(available, kill_line))
    if swap_line is not None and swap_free is not None:
        swap_seconds = pace.seconds(
            SWAP, swap_free - swap_line, now_us, floor_bytes_per_s, _gap(swap_free, kill_swap_line)
        )
        seconds = max(seconds, swap_seconds)
    return seconds


def _gap(amount: int, line: Optional[int]) -> Optional[int]:
    return None if line is None else amount - line


def bounded_wait(waits: Iterable[float], shortest_s: float, longest_s: float) -> float:
    """The soonest of the waits, within the policy's bounds (the longest when there is none)."""
    return max(shortest_s, min(longest_s, *waits, longest_s))


MEMORY = ("memory",)
SWAP = ("swap",)
