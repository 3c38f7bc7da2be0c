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
from typing import Any, Optional

from guardian.host import CgroupLayout, Host


def skip_without_arena(host: Host) -> None:
    """Skip the calling test where no Arena with a kill-able cgroup2 side can be made: not root,
    no memory controller, or no cgroup2 mount."""
    import pytest

    layout = host.cgroup_layout()
    if os.geteuid() != 0 or layout.memory_controller is None or layout.v2_mount is None:
        pytest.skip("needs root, a memory controller and cgroup2")


class Arena:
    """A pair of confined cgroups (v1 memory + cgroup2) named ``name`` on the live host.
    ``limit_bytes`` None makes the groups without a limit: nothing may enter them until
    ``set_limit`` has given them one."""

    def __init__(
        self,
        host: Host,
        limit_bytes: Optional[int],
        prefix: str = "guardian-arena",
        name: Optional[str] = None,
    ) -> None:
        self.host = host
        self.name = name or f"/{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        layout = host.cgroup_layout()
        self.v2_dir: Optional[str] = None
        self.v1_dir: Optional[str] = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.limited = False
        try:
            self._create(layout, limit_bytes)
        except BaseException:
            self.cleanup()
            raise

    def _create(self, layout: CgroupLayout, limit_bytes: Optional[int]) -> None:
        host = self.host
        if layout.v2_mount is not None:
            self.v2_dir = host.cgroup_v2_dir(self.name)
            os.mkdir(self.v2_dir)
        if layout.v1_memory_mount is not None:
            self.v1_dir = host.cgroup_v1_memory_dir(self.name)
            os.mkdir(self.v1_dir)
        if limit_bytes is not None:
            self.set_limit(limit_bytes)

    def set_limit(self, limit_bytes: int) -> None:
        """Write the memory limit (v1 memory.limit_in_bytes, or cgroup2 memory.max)."""
        if self.v1_dir is not None:
            Path(self.v1_dir, "memory.limit_in_bytes").write_text(str(limit_bytes))
        elif self.host.cgroup_layout().v2_memory and self.v2_dir is not None:
            Path(self.v2_dir, "memory.max").write_text(str(limit_bytes))
        else:
            raise RuntimeError("no memory controller to limit the arena with")
        self.limited = True

    def spawn(self, code: str) -> subprocess.Popen[bytes]:
        """Start ``python -c code`` stopped at a pipe read, move it into the arena, let it go.

        The child's stdout is a pipe: code that prints a line when ready lets the test wait
        for it with ``child.stdout.readline()`` instead of sleeping.
        """
        if not self.limited:
            raise RuntimeError("the arena has no memory limit yet: nothing may run in it")
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

    @property
    def usage_file(self) -> str:
        """The file holding the arena's memory usage (v1 usage_in_bytes, or v2 memory.current)."""
        if self.v1_dir is not None:
            return f"{self.v1_dir}/memory.usage_in_bytes"
        return f"{self.v2_dir}/memory.current"

    def oom_kills(self) -> int:
        """The kernel's own OOM kills in the arena (v1 memory.oom_control, or v2 memory.events)."""
        if self.v1_dir is not None:
            fields = Path(self.v1_dir, "memory.oom_control").read_text().split()
            return int(fields[fields.index("oom_kill") + 1])
        return self._v2_event("oom_kill")

    def limit_hits(self) -> int:
        """How often usage reached the limit (v1 memory.failcnt, or v2 memory.events ``max``)."""
        if self.v1_dir is not None:
            return int(Path(self.v1_dir, "memory.failcnt").read_text())
        return self._v2_event("max")

    def _v2_event(self, key: str) -> int:
        for line in Path(f"{self.v2_dir}/memory.events").read_text().splitlines():
            if line.startswith(f"{key} "):
                return int(line.split()[1])
        # not 0: "the kernel killed nothing" must not be what a missing counter reads as
        raise RuntimeError(f"{self.v2_dir}/memory.events has no {key} counter")

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


def hog_program(
    rate_mb_s: float,
    usage_file: str = "",
    threshold_bytes: int = 0,
    stop_at_bytes: int = 0,
    ignore_term: bool = False,
) -> str:
    """Python code for a hog that grows at a steady ``rate_mb_s`` in 2 MiB steps (every page
    touched), until killed, or until it holds ``stop_at_bytes`` if given (then it sleeps).

    It prints ``ready`` once it runs; ``cross <t>`` (CLOCK_MONOTONIC seconds) the first time the
    cgroup's ``usage_file`` reaches ``threshold_bytes``; and, on SIGTERM, ``term <t>`` before
    exiting (or, with ``ignore_term``, before going on as if nothing happened).
    Reaction time = term - cross, measured on one clock by the victim itself.
    """
    return f"""
import os, signal, sys, time
def on_term(signum, frame):
    sys.stdout.write("term %.6f\\n" % time.monotonic()); sys.stdout.flush()
    if not {ignore_term}:
        os._exit(143)
signal.signal(signal.SIGTERM, on_term)
rate = {rate_mb_s} * 1e6
usage_file, threshold, stop_at = {usage_file!r}, {threshold_bytes}, {stop_at_bytes}
chunks, held, crossed = [], 0, False
print("ready", flush=True)
start = time.monotonic()
while True:
    if stop_at and held >= stop_at:
        time.sleep(3600)
    chunk = bytearray(2 << 20)
    chunk[::4096] = b"x" * len(chunk[::4096])
    chunks.append(chunk)
    held += len(chunk)
    if usage_file and not crossed:
        with open(usage_file) as f:
            if int(f.read()) >= threshold:
                crossed = True
                sys.stdout.write("cross %.6f\\n" % time.monotonic()); sys.stdout.flush()
    delay = start + held / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


class GuardianProcess:
    """``guardian run`` as a child process for live tests and benchmarks.

    Readiness comes through a real NOTIFY_SOCKET (so sd_notify is exercised too); decisions are
    read back from stderr as JSON lines (GUARDIAN_LOG_FORMAT=json).
    """

    def __init__(
        self,
        workdir: str,
        policy_text: str,
        dry_run: bool = False,
        extra_env: Optional[dict[str, str]] = None,
        nice: int = 0,
    ) -> None:
        """``nice``: the niceness guardian runs at (the unit's ``Nice=``; below 0 needs root)."""
        import socket

        self.policy_path = f"{workdir}/policy.toml"
        Path(self.policy_path).write_text(policy_text)
        self.notify_path = f"{workdir}/notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(30)
        self.stderr_path = f"{workdir}/guardian.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        env = {
            **os.environ,
            "NOTIFY_SOCKET": self.notify_path,
            "GUARDIAN_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        args = [sys.executable, "-m", "guardian.cli", "run", "--policy", self.policy_path]
        if dry_run:
            args.append("--dry-run")
        self.proc = subprocess.Popen(
            args,
            env=env,
            stderr=self._stderr,
            stdout=subprocess.DEVNULL,
            # set in the child before exec, so every thread guardian starts has it too
            preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)) if nice else None,  # noqa: PLW1509
        )
        self.notifications: list[str] = []

    def wait_for(self, key: str, timeout_s: float = 30) -> str:
        """Wait for an sd_notify message containing ``key`` (``READY=1``) and return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"guardian exited with {self.proc.returncode}: {self.events()}")
            self.notify.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.notify.recv(4096).decode()
            except OSError:
                continue
            self.notifications.append(message)
            if key in message.split("\n"):
                return message
        raise TimeoutError(f"no {key} from guardian within {timeout_s}s")

    def events(self) -> list[dict[str, Any]]:
        import json

        out = []
        for line in Path(self.stderr_path).read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def signal(self, sig: signal.Signals) -> None:
        fd = os.pidfd_open(self.proc.pid)
        try:
            signal.pidfd_send_signal(fd, sig)
        finally:
            os.close(fd)

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.notify.close()
        with contextlib.suppress(OSError):
            os.unlink(self.notify_path)
        self._stderr.close()
        return self.proc.returncode
