"""Sample: one immutable snapshot of the machine per tick, read lazily.

Nothing is read when a Sample is made. Each attribute reads its file(s) on first access and
returns the same answer for the rest of the tick, so a policy that only looks at MemAvailable
costs one read of /proc/meminfo, and two rules that look at the same cgroup share one read.
``reads`` records what was read, in order (the laziness tests use it; so can a debug log).

A missing kernel feature is remembered too: the first access raises Unavailable and so does
every later one, without touching the file again.

What a Sample hands out cannot be changed by whoever receives it (tuples and read-only
mappings): scorer plugins see the same Sample, and a plugin that emptied ``processes`` would
otherwise change what every later scorer saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional, TypeVar

from guardian.errors import GuardianError, Malformed, NoSuchProcess, Unavailable
from guardian.host import Host
from guardian.records import (
    CgroupMemory,
    MemInfo,
    Pressure,
    Process,
    VmStat,
    VmSysctl,
    ZramDevice,
    frozen_mapping,
)
from guardian.sources import cgroups as cg
from guardian.sources.meminfo import read_meminfo, read_zram
from guardian.sources.processes import read_cmdline, read_processes
from guardian.sources.psi import read_cgroup_pressure, read_pressure
from guardian.sources.smaps import read_freed_shmem
from guardian.sources.vmstat import read_vm_sysctl, read_vmstat

T = TypeVar("T")


class _Lazy:
    """A memo of values and of the errors that stood for them; frozen to the outside."""

    __slots__ = ("_host", "_memo", "reads")
    _host: Host
    _memo: dict[str, object]
    reads: list[str]

    def __init__(self, host: Host) -> None:
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_memo", {})
        object.__setattr__(self, "reads", [])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _get(self, key: str, read: Callable[[], T]) -> T:
        memo = self._memo
        if key not in memo:
            self.reads.append(key)
            try:
                memo[key] = read()
            except GuardianError as exc:
                memo[key] = exc
        value = memo[key]
        if isinstance(value, GuardianError):
            raise value
        return value  # type: ignore[return-value]

    def _peek(self, key: str) -> Optional[object]:
        """What was read under ``key`` so far, without reading (None: not read, or failed)."""
        value = self._memo.get(key)
        return None if isinstance(value, GuardianError) else value


class CgroupSample(_Lazy):
    """One cgroup within a Sample. Memory state comes from the hierarchy that accounts memory
    (v2, or v1 on hybrid and legacy hosts); pressure, procs and cgroup.kill from cgroup2."""

    __slots__ = ("path",)
    path: str

    def __init__(self, host: Host, path: str, reads: list[str]) -> None:
        super().__init__(host)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "reads", reads)  # share the Sample's log

    def _key(self, what: str) -> str:
        return f"cgroup:{self.path}:{what}"

    @property
    def memory(self) -> CgroupMemory:
        return self._get(self._key("memory"), lambda: cg.read_cgroup_memory(self._host, self.path))

    def _read_memory(self) -> Optional[CgroupMemory]:
        """The whole memory state when it was read already (or None): what the lighter views
        below give then, without reading again."""
        memory = self._memo.get(self._key("memory"))
        return memory if isinstance(memory, CgroupMemory) else None

    @property
    def usage(self) -> CgroupMemory:
        """memory.current and memory.max alone (the rest of the record left empty): what a
        headroom needs. Everything, where ``memory`` was read already."""
        memory = self._read_memory()
        if memory is not None:
            return memory
        return self._get(self._key("usage"), lambda: cg.read_cgroup_usage(self._host, self.path))

    @property
    def events(self) -> Mapping[str, int]:
        """The memory event counters alone (memory.events, or the v1 counters)."""
        memory = self._read_memory()
        if memory is not None:
            return memory.events
        return self._get(
            self._key("memory.events"), lambda: frozen_mapping(cg.read_cgroup_events(self._host, self.path))
        )

    @property
    def oom_kills(self) -> Optional[int]:
        """The oom_kill counter alone (None where the kernel keeps none), from the counters
        when they were read already: kernel OOM kills in the group (kernel_kills.py)."""
        memory = self._read_memory()
        if memory is not None:
            return memory.events.get("oom_kill")
        events = self._memo.get(self._key("memory.events"))
        if isinstance(events, Mapping):
            return events.get("oom_kill")
        return self._get(self._key("oom_kill"), lambda: cg.read_cgroup_oom_kills(self._host, self.path))

    @property
    def pressure(self) -> Pressure:
        return self._get(self._key("memory.pressure"), lambda: read_cgroup_pressure(self._host, self.path))

    def usage_if_read(self) -> Optional[CgroupMemory]:
        """memory.current and memory.max as this Sample read them already; None where it did
        not (the metrics show what the loop read, and read nothing for themselves)."""
        memory = self._read_memory()
        if memory is not None:
            return memory
        usage = self._peek(self._key("usage"))
        return usage if isinstance(usage, CgroupMemory) else None

    def pressure_if_read(self) -> Optional[Pressure]:
        """memory.pressure as this Sample read it already, or None."""
        pressure = self._peek(self._key("memory.pressure"))
        return pressure if isinstance(pressure, Pressure) else None

    @property
    def events_local(self) -> Mapping[str, int]:
        return self._get(
            self._key("memory.events.local"),
            lambda: frozen_mapping(cg.read_v2_keyed(self._host, self.path, "memory.events.local")),
        )

    @property
    def stat(self) -> Mapping[str, int]:
        def read() -> Mapping[str, int]:
            if self._host.cgroup_layout().memory_controller == "v1":
                return frozen_mapping(cg.read_v1_keyed(self._host, self.path, "memory.stat"))
            return frozen_mapping(cg.read_v2_keyed(self._host, self.path, "memory.stat"))

        return self._get(self._key("memory.stat"), read)

    @property
    def procs(self) -> tuple[int, ...]:
        return self._get(
            self._key("cgroup.procs"), lambda: tuple(cg.read_cgroup_procs(self._host, self.path))
        )

    @property
    def memory_procs(self) -> tuple[int, ...]:
        """The processes directly in this group of the hierarchy that accounts memory: the v1
        memory controller's tree where memory is v1 (its groups need not mirror cgroup2's),
        else cgroup2's (``procs``)."""
        if self._host.cgroup_layout().memory_controller != "v1":
            return self.procs
        return self._get(
            self._key("v1 cgroup.procs"), lambda: tuple(cg.read_cgroup_procs(self._host, self.path, "v1"))
        )

    @property
    def populated(self) -> bool:
        return self._get(self._key("cgroup.events"), lambda: cg.read_cgroup_populated(self._host, self.path))

    @property
    def kill_supported(self) -> bool:
        return self._get(self._key("cgroup.kill"), lambda: cg.cgroup_kill_supported(self._host, self.path))


class Listing:
    """Every cgroup's path, kept across Samples: walked again only when the tree's stamp
    (cgroups.read_tree_stamp: the counts of groups made and dying) has moved, when no stamp can
    be read, or at least every ``max_age_s``. Walking every directory of both hierarchies is
    most of what a usage-history recording costs; reading two counters is not."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_us = int(max_age_s * 1e6)
        self.walks = 0  # how often the tree was walked (tests, and what a listing saved)
        self._stamp: Optional[tuple[int, ...]] = None
        self._paths: tuple[str, ...] = ()
        self._walked_us: Optional[int] = None

    def paths(self, host: Host, now_us: int) -> tuple[str, ...]:
        # the stamp first, then the walk: a group made during the walk moves the next stamp
        stamp = cg.read_tree_stamp(host)
        walked = self._walked_us
        fresh = walked is not None and 0 <= now_us - walked < self.max_age_us
        if fresh and stamp is not None and stamp == self._stamp:
            return self._paths
        self._paths = walk_cgroup_paths(host)
        self._stamp, self._walked_us = stamp, now_us
        self.walks += 1
        return self._paths


def walk_cgroup_paths(host: Host) -> tuple[str, ...]:
    """Every non-root cgroup in the cgroup2 tree and in the v1 memory tree, merged by path."""
    return tuple(sorted(set(host.v2_cgroups()) | set(host.v1_memory_cgroups())))


class Sample(_Lazy):
    """What the machine looked like at ``time_us`` (monotonic), as far as anyone asked.
    ``listing``: where the cgroup paths come from when they are asked for (the daemon keeps one
    across ticks); without one, the tree is walked."""

    __slots__ = ("_cgroups", "_listing", "time_us")
    time_us: int
    _cgroups: dict[str, CgroupSample]
    _listing: Optional[Listing]

    def __init__(self, host: Host, time_us: int, listing: Optional[Listing] = None) -> None:
        super().__init__(host)
        object.__setattr__(self, "time_us", time_us)
        object.__setattr__(self, "_cgroups", {})
        object.__setattr__(self, "_listing", listing)

    @property
    def host(self) -> Host:
        return self._host

    @property
    def meminfo(self) -> MemInfo:
        return self._get("meminfo", lambda: read_meminfo(self._host))

    @property
    def vmstat(self) -> VmStat:
        return self._get("vmstat", lambda: read_vmstat(self._host))

    @property
    def vm_sysctl(self) -> VmSysctl:
        return self._get("vm_sysctl", lambda: read_vm_sysctl(self._host))

    @property
    def zram(self) -> tuple[ZramDevice, ...]:
        return self._get("zram", lambda: tuple(read_zram(self._host)))

    def pressure(self, resource: str = "memory") -> Pressure:
        """System-wide PSI; raises Unavailable without PSI."""
        return self._get(f"psi:{resource}", lambda: read_pressure(self._host, resource))

    def meminfo_if_read(self) -> Optional[MemInfo]:
        """meminfo as this Sample read it already, or None (not read, or unreadable)."""
        meminfo = self._peek("meminfo")
        return meminfo if isinstance(meminfo, MemInfo) else None

    def pressure_if_read(self, resource: str = "memory") -> Optional[Pressure]:
        """System-wide PSI as this Sample read it already, or None."""
        pressure = self._peek(f"psi:{resource}")
        return pressure if isinstance(pressure, Pressure) else None

    def cgroup_if_read(self, path: str) -> Optional[CgroupSample]:
        """The cgroup's view when this Sample has made one (something asked about it)."""
        return self._cgroups.get(path)

    def pressure_or_none(self, resource: str = "memory") -> Optional[Pressure]:
        try:
            return self.pressure(resource)
        except Unavailable:
            return None

    @property
    def processes(self) -> tuple[Process, ...]:
        return self._get("processes", lambda: tuple(read_processes(self._host)))

    def processes_in(self, scope: Optional[str]) -> tuple[Process, ...]:
        """The processes a ranking in ``scope`` has to look at. For the machine, or once every
        process was read anyway, that is every process. For a cgroup, only the pids listed in
        the scope's subtree (cgroup.procs of it and of each group below, in the hierarchy that
        accounts memory: cgroup2, or the v1 memory controller's own tree, which need not mirror
        cgroup2's) are read: a service at its MemoryMax= is judged from its own few processes
        instead of all of /proc, which is most of the time to a kill (callers still filter by
        each process's own memory cgroup, so a process that moves is not mistaken). Without a
        memory controller every process is read."""
        if scope is None or scope.strip("/") == "" or "processes" in self._memo:
            return self.processes
        if self._host.cgroup_layout().memory_controller is None:
            return self.processes

        def read() -> tuple[Process, ...]:
            pids: set[int] = set()
            for path in (scope, *self._host.cgroups_below(scope, None)):
                try:
                    pids.update(self.cgroup(path).memory_procs)
                except Malformed:
                    # a cgroup.procs that does not parse hides processes that may be the
                    # victim: read every process instead (callers filter by cgroup)
                    return self.processes
                except (Unavailable, OSError):
                    continue  # removed since the walk
            return tuple(read_processes(self._host, sorted(pids)))

        return self._get(f"processes_in:{scope}", read)

    def cmdline(self, pid: int) -> Optional[str]:
        """The process's arguments joined by spaces, read on first use; None if unreadable.
        Raises Stalled (every time, for this Sample) when the read did not return in time: it
        takes the process's memory lock, which the process can hold (Host.slow_call)."""

        def read() -> Optional[str]:
            try:
                args = self._host.slow_call(
                    pid, f"reading /proc/{pid}/cmdline", lambda: read_cmdline(self._host, pid)
                )
            except (NoSuchProcess, OSError):
                return None
            return " ".join(args)

        return self._get(f"cmdline:{pid}", read)

    def freed_shmem(self, pid: int) -> Optional[int]:
        """Bytes of the process's shared memory that its death would free (sources/smaps.py),
        read on first use, off the loop like cmdline; None when it is gone, unreadable, or the
        read did not return in time."""

        def read() -> Optional[int]:
            try:
                return self._host.slow_call(
                    pid, f"reading /proc/{pid}/smaps", lambda: read_freed_shmem(self._host, pid)
                )
            except (GuardianError, OSError):
                return None

        return self._get(f"smaps:{pid}", read)

    def cgroup_current(self, path: str) -> int:
        """The group's memory use alone (one file; Unavailable when it cannot be read), or
        what the group's whole memory state gave, where that was read already."""
        memory = self.cgroup(path)._read_memory()
        if memory is not None and memory.current_bytes is not None:
            return memory.current_bytes
        return self._get(
            f"cgroup:{path}:current", lambda: _required(cg.read_cgroup_current(self._host, path), path)
        )

    def cgroup_usage(self) -> tuple[dict[str, int], list[str]]:
        """Every cgroup's memory use (cgroup_current()), and the groups walked but unreadable
        (vanished since the walk, or a bad file): what the usage history records."""
        usage: dict[str, int] = {}
        unreadable: list[str] = []
        for path in self.cgroup_paths:
            try:
                usage[path] = self.cgroup_current(path)
            except GuardianError:
                unreadable.append(path)
        return usage, unreadable

    def exe(self, pid: int) -> Optional[str]:
        """The /proc/PID/exe link, read on first use; None where hidden or gone."""

        def read() -> Optional[str]:
            try:
                return self._host.read_pid_link(pid, "exe")
            except NoSuchProcess:
                return None

        return self._get(f"exe:{pid}", read)

    def cgroup(self, path: str) -> CgroupSample:
        """The cgroup at ``path`` (as /proc/PID/cgroup prints it); made once per Sample."""
        groups = self._cgroups
        if path not in groups:
            groups[path] = CgroupSample(self._host, path, self.reads)
        return groups[path]

    @property
    def cgroup_paths(self) -> tuple[str, ...]:
        """Every non-root cgroup in the cgroup2 tree and in the v1 memory tree, merged by path."""

        def read() -> tuple[str, ...]:
            listing = self._listing
            if listing is None:
                return walk_cgroup_paths(self._host)
            return listing.paths(self._host, self.time_us)

        return self._get("cgroup_paths", read)


def _required(value: Optional[int], path: str) -> int:
    if value is None:  # "max" where a number belongs
        raise Malformed("memory cgroup", f"{path}: memory use reads as 'max'")
    return value
