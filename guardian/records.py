"""Immutable records of what guardian reads from the kernel. Units are in the names.

Sizes are bytes (``*_bytes``), times microseconds (``*_us``) or clock ticks (``*_ticks``),
percentages 0..100 (``*_pct``). ``None`` means "not reported by this kernel" or, for limits,
"no limit" (the kernel prints ``max``).

Mapping fields are read-only (``types.MappingProxyType`` over a private copy): records reach
plugins, and a plugin that changed one would change what every later scorer and ranking sees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Any, Optional, TypeVar

from guardian.frozen import frozen

K = TypeVar("K")
V = TypeVar("V")


def frozen_mapping(values: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only copy of ``values`` (the copy detaches it from whoever built it)."""
    return MappingProxyType(dict(values))


def frozen_value(value: Any) -> Any:
    """A TOML value read-only all the way down: tables as read-only mappings, arrays as tuples
    (strings, numbers, booleans and dates are immutable already)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: frozen_value(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen_value(item) for item in value)
    return value


def _freeze(record: object, name: str) -> None:
    # frozen dataclasses allow only object.__setattr__, in __post_init__. A read-only mapping
    # is taken as it is: the parsers hand over a proxy of a dict nobody else holds.
    value = getattr(record, name)
    if not isinstance(value, MappingProxyType):
        object.__setattr__(record, name, frozen_mapping(value))


# --- PSI ---------------------------------------------------------------------------------------


@frozen
class PsiLine:
    """One line of a pressure file: ``some avg10=0.00 avg60=0.00 avg300=0.00 total=0``."""

    avg10_pct: float
    avg60_pct: float
    avg300_pct: float
    total_us: int


@frozen
class Pressure:
    """A whole pressure file. ``full`` is None where the kernel prints no full line."""

    some: PsiLine
    full: Optional[PsiLine]


@frozen
class StallRate:
    """Stall over a window, computed from two ``total`` readings (not the kernel's lagging avg10)."""

    window_us: int  # the time actually between the two readings
    some_pct: float
    full_pct: Optional[float]


# --- machine-wide memory -------------------------------------------------------------------


@frozen
class MemInfo:
    """The meminfo file in bytes; ``fields`` holds every line (kB lines in bytes, counts as is)."""

    total_bytes: int
    free_bytes: int
    available_bytes: int
    buffers_bytes: int
    cached_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    commit_limit_bytes: int
    committed_as_bytes: int
    anon_pages_bytes: int
    shmem_bytes: int
    inactive_file_bytes: int
    page_tables_bytes: int
    available_estimated: bool  # MemAvailable missing (pre-3.14): estimated as earlyoom does
    text: str = field(repr=False, compare=False, default="")
    # the parser of every line, given by the reader that made this record (records know no
    # file format): most ticks need a dozen keys, not all ~55 lines
    parse_fields: Callable[[str], Mapping[str, int]] = field(
        repr=False, compare=False, default=lambda _text: MappingProxyType({})
    )

    @property
    def fields(self) -> Mapping[str, int]:
        """Every line, parsed on demand (kB lines in bytes, HugePages_* as counts)."""
        return self.parse_fields(self.text)

    @property
    def swap_used_bytes(self) -> int:
        return self.swap_total_bytes - self.swap_free_bytes

    @property
    def available_pct(self) -> float:
        return 100.0 * self.available_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def swap_free_pct(self) -> Optional[float]:
        """SwapFree as a percentage of SwapTotal; None without swap."""
        if not self.swap_total_bytes:
            return None
        return 100.0 * self.swap_free_bytes / self.swap_total_bytes


@frozen
class ZramDevice:
    """A zram device: ``disksize`` and the leading columns of ``mm_stat`` (bytes)."""

    name: str
    disksize_bytes: int
    orig_data_bytes: int
    compr_data_bytes: int
    mem_used_total_bytes: int
    mem_limit_bytes: int
    mem_used_max_bytes: int

    @property
    def initialized(self) -> bool:
        return self.disksize_bytes > 0


@frozen
class VmStat:
    """The vmstat counters. The properties sum the per-reclaimer counters the way the kernel
    splits them (``pgscan_kswapd + pgscan_direct + ...``); ``pgscan_anon``/``pgscan_file`` are
    the same scans split by LRU type and are not added again."""

    counters: Mapping[str, int] = field(repr=False)

    def __post_init__(self) -> None:
        _freeze(self, "counters")

    def _sum(self, prefix: str, parts: tuple[str, ...]) -> int:
        return sum(self.counters.get(f"{prefix}_{p}", 0) for p in parts)

    @property
    def pgscan(self) -> int:
        return self._sum("pgscan", ("kswapd", "direct", "khugepaged", "proactive"))

    @property
    def pgsteal(self) -> int:
        return self._sum("pgsteal", ("kswapd", "direct", "khugepaged", "proactive"))

    @property
    def workingset_refault(self) -> int:
        if "workingset_refault" in self.counters:  # before 5.9 one counter
            return self.counters["workingset_refault"]
        return self._sum("workingset_refault", ("anon", "file"))

    @property
    def oom_kill(self) -> int:
        return self.counters.get("oom_kill", 0)


@frozen
class VmSysctl:
    """The vm sysctls that decide whether the kernel kills, refuses or panics."""

    overcommit_memory: int  # 0 heuristic, 1 always, 2 never (strict accounting)
    overcommit_ratio: int
    panic_on_oom: int  # 0 kill, 1 panic on global OOM, 2 always panic
    oom_kill_allocating_task: int
    # sysctl name -> why its file could not be read (the field then holds the kernel default)
    unreadable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _freeze(self, "unreadable")

    def warnings(self) -> list[str]:
        """Sentences for an operator when the kernel would not simply OOM-kill."""
        out = []
        if self.panic_on_oom == 1:
            out.append(
                "vm.panic_on_oom=1: a machine-wide OOM panics the kernel instead of killing a "
                "process; guardian must act before that"
            )
        elif self.panic_on_oom == 2:
            out.append(
                "vm.panic_on_oom=2: any OOM, even inside a limited cgroup, panics the kernel "
                "instead of killing a process"
            )
        if self.overcommit_memory == 2:
            out.append(
                "vm.overcommit_memory=2: overcommit is disabled, allocations beyond CommitLimit "
                "fail with ENOMEM instead of reaching the OOM killer"
            )
        if self.oom_kill_allocating_task:
            out.append(
                "vm.oom_kill_allocating_task=1: the kernel kills whichever task allocates, not "
                "the largest one"
            )
        return out


# --- processes ---------------------------------------------------------------------------------


PF_KTHREAD = 0x00200000  # include/linux/sched.h


@frozen
class ProcStat:
    """The fields of /proc/PID/stat guardian uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    starttime_ticks: int

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


@frozen
class ProcStatus:
    """The fields of /proc/PID/status guardian uses. Kernel threads have no Vm*/Rss* lines:
    their sizes read 0 and ``has_mm`` is False."""

    name: str
    tgid: int
    uid_real: int
    uid_effective: int
    rss_anon_bytes: int
    rss_file_bytes: int
    rss_shmem_bytes: int
    swap_bytes: int
    pte_bytes: int
    has_mm: bool
    kthread: Optional[bool]  # the ``Kthread:`` line (6.4+); None on older kernels
    nstgid: tuple[int, ...]  # pid in each pid namespace, outermost first
    threads: int = 1  # live threads of the group (``Threads:``)
    sigkill_pending: bool = False  # SIGKILL queued for the group (``ShdPnd:`` bit 9)

    @property
    def rss_bytes(self) -> int:
        return self.rss_anon_bytes + self.rss_file_bytes + self.rss_shmem_bytes


@frozen
class ProcCgroups:
    """The cgroup file of a process: the cgroup2 path (``0::``) and the v1 path per controller."""

    v2: Optional[str]
    v1: Mapping[str, str]

    def __post_init__(self) -> None:
        _freeze(self, "v1")

    @property
    def v1_memory(self) -> Optional[str]:
        return self.v1.get("memory")


@frozen
class Process:
    """Everything guardian knows about one process at one moment."""

    pid: int
    ppid: int
    comm: str
    state: str
    starttime_ticks: int
    is_kernel_thread: bool
    uid: int
    rss_anon_bytes: int
    rss_file_bytes: int
    rss_shmem_bytes: int
    swap_bytes: int
    pte_bytes: int
    oom_score_adj: int
    cgroup: ProcCgroups
    oom_score: Optional[int] = None  # the kernel's own verdict, read only when asked for
    cmdline: Optional[tuple[str, ...]] = None  # read only when asked for
    sigkill_pending: bool = False  # someone else's SIGKILL is queued: it is already dying

    @property
    def rss_bytes(self) -> int:
        return self.rss_anon_bytes + self.rss_file_bytes + self.rss_shmem_bytes

    @property
    def is_global_init(self) -> bool:
        """pid 1. The kernel exempts only the initial namespace's init, but /proc shows pids
        of the reader's namespace, where pid 1 is the init guardian's world depends on."""
        return self.pid == 1

    @property
    def is_zombie(self) -> bool:
        return self.state in ("Z", "X")


# --- cgroups -----------------------------------------------------------------------------------


@frozen
class CgroupMemory:
    """The memory state of one cgroup, from whichever hierarchy accounts memory here.

    ``source`` is ``v2`` (memory.current/.max/.events...) or ``v1`` (memory.usage_in_bytes,
    memory.limit_in_bytes, memory.oom_control, memory.failcnt). For v1 the ``events`` carry
    the v1 counters under their v2 meaning: ``max`` = memory.failcnt (charges that hit the
    limit), ``oom_kill`` = memory.oom_control's oom_kill, ``under_oom`` = 0/1.
    """

    source: str
    current_bytes: Optional[int]
    max_bytes: Optional[int]
    high_bytes: Optional[int] = None
    low_bytes: Optional[int] = None
    min_bytes: Optional[int] = None
    swap_current_bytes: Optional[int] = None
    swap_max_bytes: Optional[int] = None
    events: Mapping[str, int] = field(default_factory=dict)
    oom_group: Optional[bool] = None

    def __post_init__(self) -> None:
        _freeze(self, "events")

    @property
    def headroom_bytes(self) -> Optional[int]:
        if self.max_bytes is None or self.current_bytes is None:
            return None
        return self.max_bytes - self.current_bytes

    @property
    def usage_pct(self) -> Optional[float]:
        """memory.current as a percentage of memory.max (0..100, above 100 briefly after a
        limit is lowered); None without a limit."""
        if self.max_bytes is None or self.current_bytes is None or self.max_bytes <= 0:
            return None
        return 100.0 * self.current_bytes / self.max_bytes


# --- the kernel log ------------------------------------------------------------------------------


@frozen
class KmsgRecord:
    """One record of the kernel log as /dev/kmsg hands it out:
    ``PRI,SEQ,TS_USEC,FLAGS[,...];MESSAGE`` and optional `` KEY=VALUE`` lines.

    ``text`` is the message with the kernel's ``\\xNN`` escapes undone and the bytes decoded as
    file names are (surrogate escapes for what is not UTF-8): a comm or a cgroup path in it
    names the real process or directory, and must pass through ``shown()`` before display.
    """

    facility: int  # 0 (LOG_KERN) for the kernel's own records; userspace writers cannot use 0
    level: int  # 0 (emerg) .. 7 (debug)
    seq: int  # 64-bit sequence number; a gap means records were overwritten before being read
    time_us: int  # printk clock (local_clock()): microseconds since boot, suspend not counted
    flags: str  # "-" for a whole record; "c" and "+" mark line fragments on older kernels
    text: str
    fields: Mapping[str, str] = field(default_factory=dict)  # SUBSYSTEM=, DEVICE=, ...

    def __post_init__(self) -> None:
        _freeze(self, "fields")


# oom_constraint_text[] in mm/oom_kill.c, the order of enum oom_constraint
OOM_CONSTRAINTS = ("CONSTRAINT_NONE", "CONSTRAINT_CPUSET", "CONSTRAINT_MEMORY_POLICY", "CONSTRAINT_MEMCG")


@frozen
class KernelOomKill:
    """A process the kernel's OOM killer killed, from its report in the kernel log.

    The report is two lines of mm/oom_kill.c: the summary (``oom-kill:constraint=...``, printed
    by dump_header(), so missing when the kernel rate-limits it or before 5.0) and the
    ``Killed process`` line (always). Fields the summary carries are None without it. Sizes
    are as the kernel printed them at the kill, in bytes.
    """

    pid: int
    comm: str  # as the kernel printed it (may be any bytes: pass it through shown())
    context: str  # "Out of memory", "Memory cgroup out of memory", ...; "" on kernels before 5.1
    kernel_time_us: int  # the Killed line's timestamp on the printk clock
    seq: int  # the Killed line's record number
    total_vm_bytes: int
    anon_rss_bytes: int
    file_rss_bytes: int
    shmem_rss_bytes: Optional[int]  # None before 4.5
    uid: Optional[int] = None  # the Killed line (2019 on) or the summary
    pgtables_bytes: Optional[int] = None  # 5.4 on (5.4.0 printed bytes where it says kB)
    oom_score_adj: Optional[int] = None  # 5.4 on
    constraint: Optional[str] = None  # one of OOM_CONSTRAINTS, from the summary
    oom_memcg: Optional[str] = None  # the memory cgroup whose limit was hit (memcg OOMs)
    task_memcg: Optional[str] = None  # the victim's memory cgroup
    cpuset: Optional[str] = None  # the allocating task's cpuset (its name, not its path)
    # memory.oom.group: the group killed whole; set on the other members' records, which the
    # kernel prints after the victim's without a summary of their own
    oom_group_memcg: Optional[str] = None

    @property
    def memcg_oom(self) -> bool:
        """True when a memory cgroup's limit, not the machine, ran out."""
        if self.constraint is not None:
            return self.constraint == "CONSTRAINT_MEMCG"
        return self.context.startswith("Memory cgroup")
