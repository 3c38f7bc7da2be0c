"""Driving a kill in flight to its end, as the daemon's loop does (for tests of actions.py)."""

from __future__ import annotations

import select
import time
from typing import Callable, Union

from guardian.actions import Kill, Outcome


def drive(
    started: Union[Outcome, Kill], escalate: Callable[[], bool] = lambda: False, limit_s: float = 60
) -> Outcome:
    """Poll the kill's descriptors and step it until it returns its Outcome (real time)."""
    if isinstance(started, Outcome):
        return started
    kill = started
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now_us = time.monotonic_ns() // 1000
        outcome = kill.step(now_us, escalate())
        if outcome is not None:
            return outcome
        poller = select.poll()
        for fd, events in kill.fds:
            poller.register(fd, events)
        wait_ms = max(0, min(50, (kill.next_look_us(now_us) - now_us) // 1000))
        poller.poll(wait_ms)
    kill.close()
    raise TimeoutError("the kill did not end")


def now_us() -> int:
    return time.monotonic_ns() // 1000


def allow(_process: object) -> None:
    """A guard that lets every process be signalled."""
    return
