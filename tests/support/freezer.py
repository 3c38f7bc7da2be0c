"""A cgroup v1 freezer group that a test creates and removes.

A task frozen there does not run, not even to die of a SIGKILL, until it is thawed: what only a
dying process that has not exited allows (process_mrelease) can then be tested without racing
the victim's own exit. (The cgroup2 freezer lets SIGKILL through, so it cannot do this.)
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import pytest

from guardian.host import Host


class Freezer:
    def __init__(self, host: Host) -> None:
        top = host.path("/sys/fs/cgroup/freezer")
        if not os.path.ismount(top):
            pytest.skip("no cgroup v1 freezer hierarchy to hold a SIGKILLed victim")
        self.dir = f"{top}/guardian-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.mkdir(self.dir)
        self.pids: list[int] = []

    def _state(self, state: str) -> None:
        Path(self.dir, "freezer.state").write_text(state)
        for _ in range(250):
            if Path(self.dir, "freezer.state").read_text().strip() == state:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.dir} did not reach {state}")

    def freeze(self, pid: int) -> None:
        Path(self.dir, "cgroup.procs").write_text(str(pid))
        self.pids.append(pid)
        self._state("FROZEN")

    def thaw(self) -> None:
        self._state("THAWED")

    def cleanup(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.thaw()
        for _ in range(100):
            try:
                os.rmdir(self.dir)
                return
            except FileNotFoundError:
                return
            except OSError:  # its tasks are still leaving
                time.sleep(0.05)
