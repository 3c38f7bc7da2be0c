"""Time, passed in (tests pass a clock that they advance instead of sleeping)."""

from __future__ import annotations

import time


class Clock:
    """The real monotonic clock."""

    def monotonic_us(self) -> int:
        return time.monotonic_ns() // 1000

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
