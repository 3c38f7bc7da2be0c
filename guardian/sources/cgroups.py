"""cgroup reads: cgroup2 memory files and core files, and the v1 memory controller.

Paths are cgroup paths as /proc/PID/cgroup prints them (``/system.slice/foo.service``); the Host
maps them to directories. Each reader reads one file, so a tick reads only what it uses.
Sizes are bytes; a limit of ``max`` (v2) or the v1 "unlimited" value reads as None.
"""

from __future__ import annotations

import contextlib
from typing import Optional

from guardian.errors import ParseError, Unavailable
from guardian.host import Host
from guardian.records import CgroupMemory
from guardian.sources.vmstat import parse_flat_keyed

# v1 prints PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712 on x86_64) for "no limit";
# anything at or above 2**62 is no real limit on any machine guardian runs on.
_V1_UNLIMITED = 1 << 62

V2_MEMORY_FILES = (
    "memory.current",
    "memory.max",
    "memory.high",
    "memory.low",
    "memory.min",
    "memory.swap.current",
    "memory.swap.max",
)


def parse_memory_value(text: str, what: str = "memory value") -> Optional[int]:
    """``max`` means no limit (None); otherwise bytes."""
    value = text.strip()
    if value == "max":
        return None
    try:
        number = int(value)
    except ValueError:
        raise ParseError(what, f"expected bytes or 'max', got {value!r}") from None
    return None if number >= _V1_UNLIMITED else number


def parse_cgroup_procs(text: str) -> list[int]:
    return [int(line) for line in text.split()]


def parse_oom_control(text: str) -> dict[str, int]:
    """v1 memory.oom_control: ``oom_kill_disable 0``, ``under_oom 0``, ``oom_kill N`` (4.13+)."""
    return parse_flat_keyed(text, "memory.oom_control")


# --- cgroup2 -----------------------------------------------------------------------------------


def v2_file(host: Host, cgroup: str, name: str) -> str:
    return f"{host.cgroup_v2_dir(cgroup)}/{name}"


def read_v2_value(host: Host, cgroup: str, name: str) -> Optional[int]:
    """One of V2_MEMORY_FILES. Missing file: Unavailable (controller off, or the root cgroup)."""
    path = v2_file(host, cgroup, name)
    return parse_memory_value(host.read_feature(path, f"cgroup2 {name}"), path)


def read_v2_keyed(host: Host, cgroup: str, name: str) -> dict[str, int]:
    """A flat-keyed file: memory.events, memory.events.local, memory.stat, cgroup.events,
    memory.swap.events."""
    path = v2_file(host, cgroup, name)
    return parse_flat_keyed(host.read_feature(path, f"cgroup2 {name}"), path)


def read_v2_oom_group(host: Host, cgroup: str) -> bool:
    path = v2_file(host, cgroup, "memory.oom.group")
    return host.read_feature(path, "cgroup2 memory.oom.group").strip() == "1"


def read_cgroup_procs(host: Host, cgroup: str) -> list[int]:
    """Processes directly in a cgroup2 group (not its descendants)."""
    path = v2_file(host, cgroup, "cgroup.procs")
    return parse_cgroup_procs(host.read_feature(path, "cgroup2"))


def read_cgroup_populated(host: Host, cgroup: str) -> bool:
    """cgroup.events ``populated``: live processes anywhere in the subtree."""
    return read_v2_keyed(host, cgroup, "cgroup.events").get("populated", 0) == 1


def cgroup_kill_supported(host: Host, cgroup: str) -> bool:
    """cgroup.kill exists (5.14+) on non-root cgroup2 groups."""
    try:
        return host.exists(v2_file(host, cgroup, "cgroup.kill"))
    except Unavailable:
        return False


def _optional(host: Host, cgroup: str, name: str) -> Optional[int]:
    try:
        return read_v2_value(host, cgroup, name)
    except Unavailable:
        return None


def read_v2_memory(host: Host, cgroup: str) -> CgroupMemory:
    """memory.current/.max/.high/.low/.min/.swap.*/.events/.oom.group of one group.

    memory.current is required; the others are optional (swap files vanish without swap
    accounting, and some kernels lack memory.oom.group).
    """
    current = read_v2_value(host, cgroup, "memory.current")
    try:
        events = read_v2_keyed(host, cgroup, "memory.events")
    except Unavailable:
        events = {}
    try:
        oom_group: Optional[bool] = read_v2_oom_group(host, cgroup)
    except Unavailable:
        oom_group = None
    return CgroupMemory(
        source="v2",
        current_bytes=current,
        max_bytes=_optional(host, cgroup, "memory.max"),
        high_bytes=_optional(host, cgroup, "memory.high"),
        low_bytes=_optional(host, cgroup, "memory.low"),
        min_bytes=_optional(host, cgroup, "memory.min"),
        swap_current_bytes=_optional(host, cgroup, "memory.swap.current"),
        swap_max_bytes=_optional(host, cgroup, "memory.swap.max"),
        events=events,
        oom_group=oom_group,
    )


# --- cgroup v1 memory controller ---------------------------------------------------------------


def v1_file(host: Host, cgroup: str, name: str) -> str:
    return f"{host.cgroup_v1_memory_dir(cgroup)}/{name}"


def read_v1_value(host: Host, cgroup: str, name: str) -> Optional[int]:
    """memory.usage_in_bytes, memory.limit_in_bytes, memory.failcnt, memory.memsw.*."""
    path = v1_file(host, cgroup, name)
    return parse_memory_value(host.read_feature(path, f"cgroup v1 {name}"), path)


def read_v1_keyed(host: Host, cgroup: str, name: str) -> dict[str, int]:
    """memory.stat or memory.oom_control."""
    path = v1_file(host, cgroup, name)
    return parse_flat_keyed(host.read_feature(path, f"cgroup v1 {name}"), path)


def read_v1_memory(host: Host, cgroup: str) -> CgroupMemory:
    """The v1 memory controller's view, with v1 counters mapped to v2 event names (records.py)."""
    usage = read_v1_value(host, cgroup, "memory.usage_in_bytes")
    limit = read_v1_value(host, cgroup, "memory.limit_in_bytes")
    events: dict[str, int] = {}
    with contextlib.suppress(Unavailable):
        oom = read_v1_keyed(host, cgroup, "memory.oom_control")
        events["oom_kill"] = oom.get("oom_kill", 0)
        events["under_oom"] = oom.get("under_oom", 0)
    with contextlib.suppress(Unavailable):
        events["max"] = read_v1_value(host, cgroup, "memory.failcnt") or 0
    return CgroupMemory(source="v1", current_bytes=usage, max_bytes=limit, events=events)


def read_cgroup_memory(host: Host, cgroup: str) -> CgroupMemory:
    """Memory state from whichever hierarchy accounts memory on this host."""
    controller = host.cgroup_layout().memory_controller
    if controller == "v2":
        return read_v2_memory(host, cgroup)
    if controller == "v1":
        return read_v1_memory(host, cgroup)
    raise Unavailable("memory cgroup", "no hierarchy has the memory controller")
