"""Shared test fixtures.

``arena`` makes confined cgroups on this machine for live tests (ARENA.md): a v1 memory cgroup
with a limit where the v1 memory controller is mounted, and a cgroup2 group of the same name for
PSI, cgroup.procs and cgroup.kill. Only processes the test started go in; on teardown they are
killed by pidfd and both groups are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from guardian.host import CgroupLayout, Host

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_root(name: str) -> Path:
    return FIXTURES / name


class Arena:
    """A pair of confined cgroups (v1 memory + cgroup2) named ``name`` on the live host."""

    def __init__(self, host: Host, limit_bytes: int) -> None:
        self.host = host
        self.name = f"/guardian-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        layout = host.cgroup_layout()
        self.v2_dir: Optional[str] = None
        self.v1_dir: Optional[str] = None
        self.children: list[subprocess.Popen[bytes]] = []
        try:
            self._create(layout, limit_bytes)
        except BaseException:
            self.cleanup()
            raise

    def _create(self, layout: CgroupLayout, limit_bytes: int) -> None:
        host = self.host
        if layout.v2_mount is not None:
            self.v2_dir = host.cgroup_v2_dir(self.name)
            os.mkdir(self.v2_dir)
        if layout.v1_memory_mount is not None:
            self.v1_dir = host.cgroup_v1_memory_dir(self.name)
            os.mkdir(self.v1_dir)
            Path(self.v1_dir, "memory.limit_in_bytes").write_text(str(limit_bytes))
        elif layout.v2_memory and self.v2_dir is not None:
            Path(self.v2_dir, "memory.max").write_text(str(limit_bytes))

    def spawn(self, code: str) -> subprocess.Popen[bytes]:
        """Start ``python -c code`` stopped at a pipe read, move it into the arena, let it go.

        The child's stdout is a pipe: code that prints a line when ready lets the test wait
        for it with ``child.stdout.readline()`` instead of sleeping.
        """
        gate_r, gate_w = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.read({gate_r}, 1)\n{code}"],
            pass_fds=(gate_r,),
            stdout=subprocess.PIPE,
        )
        os.close(gate_r)
        self.children.append(child)
        self.enter(child.pid)
        os.write(gate_w, b"x")
        os.close(gate_w)
        return child

    def enter(self, pid: int) -> None:
        for directory in (self.v1_dir, self.v2_dir):
            if directory is not None:
                Path(directory, "cgroup.procs").write_text(str(pid))

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    fd = os.pidfd_open(child.pid)
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    finally:
                        os.close(fd)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()
        for directory in (self.v1_dir, self.v2_dir):
            if directory is None:
                continue
            for _ in range(50):  # a memcg may take a moment to go offline after its last task
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


@pytest.fixture
def live_host() -> Host:
    host = Host("/")
    if not os.path.exists(host.proc + "/self/status"):
        pytest.skip("no /proc")
    return host


@pytest.fixture
def arena(live_host: Host) -> Iterator[Arena]:
    layout = live_host.cgroup_layout()
    if os.geteuid() != 0 or layout.mode == "none":
        pytest.skip("needs root and a cgroup hierarchy")
    if layout.memory_controller is None:
        pytest.skip("no memory controller to confine a test")
    created = Arena(live_host, limit_bytes=256 * 1024 * 1024)
    try:
        yield created
    finally:
        created.cleanup()
