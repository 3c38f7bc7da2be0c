"""``guardian record``: the machine as the daemon reads it, frame by frame, into a trace.

Each frame reads, through a RecordingHost, what a full tick of the daemon reads and what a
policy other than the recording one would need to decide on the same machine:

- every frame: /proc/meminfo, /proc/vmstat, the vm sysctls, zram, PSI of memory, cpu and io,
  the cgroup tree (every directory, as a rule's glob may match any group), and each group's
  memory files (current, max, high, low, min, swap, events, oom.group) and memory.pressure;
  the groups the policy watches also their cgroup.procs, cgroup.events, memory.stat;
- process facts (every /proc/PID the ranking reads, and whatever the policy's scorers read for
  the candidates: cmdline, exe, smaps) every ``processes_every`` frames, and in every frame in
  which the policy is near a line: a condition holds, MemAvailable is within NEAR times its
  TERM line, or a watched group is past engine.WARM of its limit. A trigger that fires in a
  replay between two such frames is judged on the process facts of the last one (the replay
  says how old they are).

The cost of a frame and the bytes per minute on a development host: docs/trace.md, "Cost".
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from typing import IO, Callable, Optional

from guardian.clock import Clock
from guardian.daemon.engine import WARM, Engine
from guardian.errors import GuardianError
from guardian.loaded import Loaded
from guardian.policy import PolicyState, assess, machine_lines
from guardian.report import Reporter
from guardian.sample import Sample
from guardian.sources.cgroups import read_tree_stamp
from guardian.trace.fileformat import Header, TraceWriter
from guardian.trace.hosts import RecordingHost

NEAR = 2.0  # process facts are read while MemAvailable is under this many times the TERM line
PSI_RESOURCES = ("memory", "cpu", "io")


class _Discard:
    """The recorder decides nothing: its Engine (used for which groups the rules match) has
    nothing to report."""

    def send(self, message: str, fields: object) -> None:
        return None


@dataclass
class Recorded:
    frames: int = 0
    process_frames: int = 0
    raw_bytes: int = 0  # uncompressed JSON
    cpu_s: float = 0.0  # CPU time of the reads and the writing, all frames
    stopped: str = ""  # why the recording ended early ("" when its duration ran out)


def _touch(thing: object, *names: str) -> None:
    """Read attributes of a Sample for the trace; what cannot be read is in the trace as its
    error (the Sample remembers it, the RecordingHost noted it)."""
    for name in names:
        with contextlib.suppress(GuardianError, OSError):
            getattr(thing, name)


def _call(read: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(GuardianError, OSError):
        read(*args)


class Recorder:
    def __init__(self, host: RecordingHost, loaded: Loaded, clock: Clock, processes_every: int) -> None:
        self.host = host
        self.loaded = loaded
        self.clock = clock
        self.processes_every = processes_every
        # the daemon's own rescan says which groups the rules match
        self.engine = Engine(host, loaded, Reporter(_Discard()), clock)
        self.state = PolicyState()
        self.index = 0

    def read_frame(self, now_us: int) -> bool:
        """Read one frame's worth; True when the process facts were read."""
        host = self.host
        if self.index == 0:
            host.forget_layout()  # read mountinfo again, into the first frame
        sample = Sample(host, now_us)
        _call(host.cgroup_layout)
        _touch(sample, "meminfo", "vmstat", "vm_sysctl", "zram", "cgroup_paths")
        _call(read_tree_stamp, host)  # what tells the daemon's listing of the tree to walk again
        for resource in PSI_RESOURCES:
            _call(sample.pressure, resource)
        self.engine.rescan(sample, now_us, force=True)
        watched = self.engine.watched
        paths: tuple[str, ...] = ()
        with contextlib.suppress(GuardianError):
            paths = sample.cgroup_paths
        for path in paths:
            _touch(sample.cgroup(path), "memory", "pressure")
        for path in watched:
            _touch(sample.cgroup(path), "procs", "populated", "stat", "kill_supported")
        near = self._near(sample, now_us, watched)
        processes = bool(near) or self.index % self.processes_every == 0
        if processes:
            self._read_processes(sample, near)
        self.index += 1
        return processes

    def _near(self, sample: Sample, now_us: int, watched: list[str]) -> set[Optional[str]]:
        """The scopes near a line of the policy (None: the machine): a condition holds there,
        MemAvailable is under NEAR times its TERM line, a watched group is past WARM of its
        limit. Something that cannot be read counts as near: the facts may be what explains it."""
        policy = self.loaded.policy
        near: set[Optional[str]] = set()
        try:
            near.update(t.scope for t in assess(sample, policy, self.state, now_us, watched).triggers)
            line, _ = machine_lines(sample, policy)
            if line is not None and sample.meminfo.available_bytes <= NEAR * line:
                near.add(None)
        except GuardianError:
            near.add(None)
        for path in watched:
            try:
                usage = sample.cgroup(path).usage
            except GuardianError:
                continue
            if usage.max_bytes and (usage.current_bytes or 0) >= WARM * usage.max_bytes:
                near.add(path)
        return near

    def _read_processes(self, sample: Sample, near: set[Optional[str]]) -> None:
        """Every process, and what the rankings of the machine and of each group near a line
        read, scorers included (a group's ranking reads the same processes' files, and what its
        scorers read for its own candidates)."""
        selector = self.loaded.selector
        _call(selector.rank, sample, "process", None)
        for path in sorted(p for p in near if p is not None):
            if any(r.matches(path) and r.action == "group" for r in self.loaded.policy.cgroups):
                _call(selector.rank_group, sample, path)
            _call(selector.rank, sample, "process", path)


def header_for(
    host: RecordingHost, loaded: Loaded, clock: Clock, interval_s: float, processes_every: int
) -> Header:
    return Header(
        time_us=clock.monotonic_us(),
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        interval_s=interval_s,
        processes_every=processes_every,
        self_pid=host.self_pid(),
        root=host.root or "/",
        policy=loaded.policy.source,
        kernel=platform.release() if host.is_live else "",
    )


def record(
    host: RecordingHost,
    loaded: Loaded,
    out: IO[bytes],
    clock: Clock,
    *,
    interval_s: float,
    duration_s: Optional[float],
    processes_every: int,
    max_bytes: int,
    stopping: Callable[[], bool] = lambda: False,
) -> Recorded:
    """Record frames every ``interval_s`` for ``duration_s`` (None: until ``stopping()``), or
    until ``max_bytes`` of compressed trace have been written."""
    recorder = Recorder(host, loaded, clock, processes_every)
    writer = TraceWriter(out, header_for(host, loaded, clock, interval_s, processes_every))
    done = Recorded()
    start_us = clock.monotonic_us()
    end_us = None if duration_s is None else start_us + int(duration_s * 1e6)
    try:
        while not stopping():
            now_us = clock.monotonic_us()
            cpu0 = time.process_time()
            host.take()  # what was read between frames (the policy loading) is not a frame's
            processes = recorder.read_frame(now_us)
            done.raw_bytes += writer.frame(now_us, processes, host.take())
            done.cpu_s += time.process_time() - cpu0
            done.frames += 1
            done.process_frames += processes
            if out.tell() >= max_bytes:
                done.stopped = f"the trace reached its size limit of {max_bytes} bytes"
                break
            next_us = start_us + int(done.frames * interval_s * 1e6)
            if end_us is not None and next_us > end_us:
                break
            clock.sleep(max(0.0, (next_us - clock.monotonic_us()) / 1e6))
    finally:
        writer.close()
    return done


def default_out_mode() -> int:
    """Traces hold command lines and cgroup names: readable by their owner alone."""
    return 0o600


def open_out(path: str) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, default_out_mode())
    return os.fdopen(fd, "wb")
