"""cgroup reads: cgroup2 memory files and core files, and the v1 memory controller.

Paths are cgroup paths as /proc/PID/cgroup prints them (``/system.slice/foo.service``); the Host
maps them to directories. Each reader reads one file, so a tick reads only what it uses.
Sizes are bytes; a limit of ``max`` (v2) or the v1 "unlimited" value reads as None.

What a file that does not parse costs (the kernel never writes one, but a fake root, a
half-written tmpfs copy or a new kernel format can):

* the files a decision rests on, ``memory.current`` and ``memory.max`` (v1: usage and limit)
  and the counters ``memory.events`` (v1: ``memory.oom_control``, ``memory.failcnt``): the
  group's memory is unavailable (``Malformed``, an ``Unavailable`` naming the file), so every
  caller skips the group for this tick exactly as it skips one removed while being read. A
  counter file read as empty instead would make its next good reading look like a burst of
  events since boot;
* the optional values, ``memory.high/.low/.min/.swap.current/.swap.max/.oom.group``: read as
  absent (None), as on a kernel without them. Ignoring a bad protection or swap limit changes a
  score a little; losing the whole group would take its headroom out of view;
* ``cgroup.procs``, ``cgroup.events``, ``memory.stat``, ``memory.events.local``: ``Malformed``.

Parsers (``parse_*``) raise ParseError; readers (``read_*``) raise Unavailable, never ParseError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal, Optional, TypeVar

from guardian.errors import Malformed, ParseError, Unavailable
from guardian.host import Host
from guardian.records import CgroupMemory
from guardian.sources.vmstat import parse_flat_keyed, parse_int
from guardian.text import shown

T = TypeVar("T")

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
        number = parse_int(value)
    except ValueError:
        raise ParseError(what, f"expected bytes or 'max', got {value[:40]!r}") from None
    if number < 0:
        raise ParseError(what, f"expected bytes or 'max', got {value[:40]!r}")
    return None if number >= _V1_UNLIMITED else number


def parse_cgroup_procs(text: str, what: str = "cgroup.procs") -> list[int]:
    """One pid per line (cgroup.procs, tasks)."""
    pids = []
    for word in text.split():
        if not (word.isascii() and word.isdigit()) or int(word) <= 0:
            raise ParseError(what, f"expected a pid per line, got {word[:40]!r}")
        pids.append(int(word))
    return pids


def parse_oom_control(text: str) -> dict[str, int]:
    """v1 memory.oom_control: ``oom_kill_disable 0``, ``under_oom 0``, ``oom_kill N`` (4.13+)."""
    return parse_flat_keyed(text, "memory.oom_control")


def _parsed(feature: str, parse: Callable[[], T]) -> T:
    """``parse()``, with a ParseError turned into the Unavailable that readers raise."""
    try:
        return parse()
    except ParseError as exc:
        raise Malformed.of(feature, exc) from None


def _memory_value(feature: str, text: str, path: str) -> Optional[int]:
    """parse_memory_value() of a file's text; the file is named (printably) only when it does
    not parse."""
    try:
        return parse_memory_value(text)
    except ParseError:
        return _parsed(feature, lambda: parse_memory_value(text, shown(path)))


# --- cgroup2 -----------------------------------------------------------------------------------


def v2_file(host: Host, cgroup: str, name: str) -> str:
    return f"{host.cgroup_v2_dir(cgroup)}/{name}"


def read_v2_value(host: Host, cgroup: str, name: str) -> Optional[int]:
    """One of V2_MEMORY_FILES. Missing file: Unavailable (controller off, or the root cgroup);
    a value that does not parse: Malformed."""
    path = v2_file(host, cgroup, name)
    feature = f"cgroup2 {name}"
    return _memory_value(feature, host.read_feature(path, feature), path)


def read_v2_keyed(host: Host, cgroup: str, name: str) -> dict[str, int]:
    """A flat-keyed file: memory.events, memory.events.local, memory.stat, cgroup.events,
    memory.swap.events. Missing: Unavailable; a line that does not parse: Malformed."""
    path = v2_file(host, cgroup, name)
    feature = f"cgroup2 {name}"
    text = host.read_feature(path, feature)
    return _parsed(feature, lambda: parse_flat_keyed(text, shown(path)))


def read_v2_oom_group(host: Host, cgroup: str) -> bool:
    path = v2_file(host, cgroup, "memory.oom.group")
    feature = "cgroup2 memory.oom.group"
    value = host.read_feature(path, feature).strip()
    if value not in ("0", "1"):
        raise Malformed(feature, f"cannot parse {shown(path)}: expected 0 or 1, got {value[:40]!r}")
    return value == "1"


def read_cgroup_procs(host: Host, cgroup: str, hierarchy: Literal["v2", "v1"] = "v2") -> list[int]:
    """Processes directly in a group (not its descendants): of cgroup2, or with ``hierarchy``
    "v1" of the v1 memory controller's tree."""
    if hierarchy == "v1":
        path, feature = v1_file(host, cgroup, "cgroup.procs"), "cgroup v1 cgroup.procs"
        text = host.read_feature(path, feature)
    else:
        path, feature = v2_file(host, cgroup, "cgroup.procs"), "cgroup2 cgroup.procs"
        text = host.read_feature(path, "cgroup2")
    return _parsed(feature, lambda: parse_cgroup_procs(text, shown(path)))


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
    """An optional value: None when missing, and when it does not parse (module docstring)."""
    try:
        return read_v2_value(host, cgroup, name)
    except Unavailable:
        return None


def _if_present(read: Callable[[], T], absent: T) -> T:
    """``read()``, or ``absent`` when its file is missing; a Malformed file still raises."""
    try:
        return read()
    except Malformed:
        raise
    except Unavailable:
        return absent


def _v2_limit(host: Host, cgroup: str) -> Optional[int]:
    """memory.max alone (optional: None where the file is missing, as for no limit)."""
    return _if_present(lambda: read_v2_value(host, cgroup, "memory.max"), None)


def _v2_usage(host: Host, cgroup: str) -> CgroupMemory:
    """memory.current (required) and memory.max (optional) alone."""
    current = read_v2_value(host, cgroup, "memory.current")
    return CgroupMemory(source="v2", current_bytes=current, max_bytes=_v2_limit(host, cgroup))


def _v2_events(host: Host, cgroup: str) -> dict[str, int]:
    """memory.events ({} where it is missing)."""
    return _if_present(lambda: read_v2_keyed(host, cgroup, "memory.events"), {})


def read_v2_memory(host: Host, cgroup: str) -> CgroupMemory:
    """memory.current/.max/.high/.low/.min/.swap.*/.events/.oom.group of one group.

    memory.current is required; the others are optional (swap files vanish without swap
    accounting, and some kernels lack memory.oom.group). What a malformed file costs: the
    module docstring.
    """
    usage = _v2_usage(host, cgroup)
    events = _v2_events(host, cgroup)
    try:
        oom_group: Optional[bool] = read_v2_oom_group(host, cgroup)
    except Unavailable:
        oom_group = None
    return CgroupMemory(
        source="v2",
        current_bytes=usage.current_bytes,
        max_bytes=usage.max_bytes,
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
    feature = f"cgroup v1 {name}"
    return _memory_value(feature, host.read_feature(path, feature), path)


def read_v1_keyed(host: Host, cgroup: str, name: str) -> dict[str, int]:
    """memory.stat or memory.oom_control."""
    path = v1_file(host, cgroup, name)
    feature = f"cgroup v1 {name}"
    text = host.read_feature(path, feature)
    return _parsed(feature, lambda: parse_flat_keyed(text, shown(path)))


def read_v1_memory(host: Host, cgroup: str) -> CgroupMemory:
    """The v1 memory controller's view, with v1 counters mapped to v2 event names (records.py).
    Usage and limit are required; the counters are optional, but a malformed one makes the
    group unavailable as a malformed memory.events does (module docstring)."""
    usage = _v1_usage(host, cgroup)
    return replace(usage, events=_v1_events(host, cgroup))


def _v1_limit(host: Host, cgroup: str) -> Optional[int]:
    """memory.limit_in_bytes alone (required)."""
    return read_v1_value(host, cgroup, "memory.limit_in_bytes")


def _v1_usage(host: Host, cgroup: str) -> CgroupMemory:
    """memory.usage_in_bytes and memory.limit_in_bytes alone (both required)."""
    usage = read_v1_value(host, cgroup, "memory.usage_in_bytes")
    return CgroupMemory(source="v1", current_bytes=usage, max_bytes=_v1_limit(host, cgroup))


def _v1_events(host: Host, cgroup: str) -> dict[str, int]:
    """The v1 counters under their v2 names (records.py): oom_kill and under_oom from
    memory.oom_control, max from memory.failcnt; each optional, a malformed one raises."""
    events: dict[str, int] = {}
    oom = _if_present(lambda: read_v1_keyed(host, cgroup, "memory.oom_control"), None)
    if oom is not None:
        events["oom_kill"] = oom.get("oom_kill", 0)
        events["under_oom"] = oom.get("under_oom", 0)
    failcnt = _if_present(lambda: read_v1_value(host, cgroup, "memory.failcnt"), None)
    if failcnt is not None:
        events["max"] = failcnt
    return events


def read_cgroup_memory(host: Host, cgroup: str) -> CgroupMemory:
    """Memory state from whichever hierarchy accounts memory on this host."""
    return _by_controller(host, cgroup, read_v2_memory, read_v1_memory)


def read_cgroup_usage(host: Host, cgroup: str) -> CgroupMemory:
    """memory.current and memory.max alone (v1: usage and limit), the two files a headroom
    needs, in a CgroupMemory whose other fields are left empty: a tick that judges a watched
    group's headroom reads two files, not the nine read_cgroup_memory() reads."""
    return _by_controller(host, cgroup, _v2_usage, _v1_usage)


def read_cgroup_limit(host: Host, cgroup: str) -> Optional[int]:
    """The memory limit alone, as read_cgroup_usage() gives it (None: no limit)."""
    return _by_controller(host, cgroup, _v2_limit, _v1_limit)


def _by_controller(host: Host, cgroup: str, v2: Callable[[Host, str], T], v1: Callable[[Host, str], T]) -> T:
    """``v2`` or ``v1`` of the group, from whichever hierarchy accounts memory on this host."""
    controller = host.cgroup_layout().memory_controller
    if controller == "v2":
        return v2(host, cgroup)
    if controller == "v1":
        return v1(host, cgroup)
    raise Unavailable("memory cgroup", "no hierarchy has the memory controller")


def read_cgroup_events(host: Host, cgroup: str) -> dict[str, int]:
    """The memory event counters alone: memory.events ({} where it is missing), or the v1
    counters under their v2 names, as read_cgroup_memory() gives them."""
    return _by_controller(host, cgroup, _v2_events, _v1_events)


def read_cgroup_oom_kills(host: Host, cgroup: str) -> Optional[int]:
    """The group's oom_kill counter alone (memory.events, or v1 memory.oom_control without
    memory.failcnt): None where the kernel keeps none (v1 before 4.13)."""

    def v1(h: Host, c: str) -> dict[str, int]:
        return _if_present(lambda: read_v1_keyed(h, c, "memory.oom_control"), {})

    return _by_controller(host, cgroup, _v2_events, v1).get("oom_kill")


def read_cgroup_current(host: Host, cgroup: str) -> Optional[int]:
    """The group's memory use alone (memory.current, or v1 memory.usage_in_bytes): the one file
    the usage history needs per group, without the other files read_cgroup_memory() reads."""
    return _by_controller(
        host,
        cgroup,
        lambda h, c: read_v2_value(h, c, "memory.current"),
        lambda h, c: read_v1_value(h, c, "memory.usage_in_bytes"),
    )


# --- the tree as a whole -------------------------------------------------------------------------


def parse_proc_cgroups(text: str, controller: str = "memory") -> int:
    """num_cgroups of ``controller`` in the proc cgroups file (``#subsys_name hierarchy num_cgroups
    enabled``, one line per controller)."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == controller:
            try:
                return parse_int(words[2])
            except ValueError:
                count = words[2][:40]
                raise ParseError("cgroups", f"{controller}: expected a count, got {count!r}") from None
    raise ParseError("cgroups", f"no line for the {controller} controller")


def read_tree_stamp(host: Host) -> Optional[tuple[int, ...]]:
    """Numbers that move whenever a cgroup is made or removed in the hierarchies that hold
    memory: the cgroup2 root's nr_descendants and nr_dying_descendants, and the v1 memory
    controller's num_cgroups (dying groups included). Equal stamps mean the tree very likely
    has the same groups (a group made and one fully freed between two readings cancel out,
    which is why a listing is also walked again after a while); None when a file is missing
    or does not parse (a fake root, an old kernel): then nothing can be told from it."""
    stamp: list[int] = []
    for path, kind in host.cgroup_count_files():
        try:
            text = host.read_hot(path, kind)
            if kind == "cgroup.stat":
                fields = parse_flat_keyed(text, kind)
                stamp += (fields["nr_descendants"], fields["nr_dying_descendants"])
            else:
                stamp.append(parse_proc_cgroups(text))
        except (Unavailable, ParseError, KeyError):
            return None
    return tuple(stamp) if stamp else None
