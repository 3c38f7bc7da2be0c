"""Confined cgroups for live tests and benchmarks (shared/design/ARENA.md).

An Arena is a v1 memory cgroup with a limit where the v1 memory controller is mounted (hybrid
and legacy hosts), or a limited cgroup2 group where cgroup2 has the memory controller, plus a
cgroup2 group of the same name for PSI, cgroup.procs and cgroup.kill. Only processes the caller
starts go in; ``cleanup`` kills them by pidfd and removes both groups. Never drive the machine
itself towards OOM: everything that allocates does it in here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from guardian.host import CgroupLayout, Host


class Arena:
    """A pair of confined cgroups (v1 memory + cgroup2) named ``name`` on the live host."""

    def __init__(self, host: Host, limit_bytes: int, prefix: str = "guardian-arena") -> None:
        self.host = host
        self.name = f"/{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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

    def kill_all(self) -> None:
        """SIGKILL everything in the arena at once (cgroup.kill where the kernel has it)."""
        if self.v2_dir is not None and os.path.exists(f"{self.v2_dir}/cgroup.kill"):
            Path(self.v2_dir, "cgroup.kill").write_text("1")

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.kill_all()
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
