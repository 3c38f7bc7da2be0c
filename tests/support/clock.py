"""A clock that moves only when told to: tests advance it instead of sleeping."""

from __future__ import annotations

from guardian.clock import Clock


class FakeClock(Clock):
    """A clock that moves only when told to (``advance`` or ``sleep``)."""

    def __init__(self, start_us: int = 1_000_000) -> None:
        self.now_us = start_us

    def monotonic_us(self) -> int:
        return self.now_us

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)
