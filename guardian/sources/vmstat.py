"""The vmstat counters and the vm sysctls that govern the OOM killer."""

from __future__ import annotations

from guardian.errors import ParseError
from guardian.host import Host
from guardian.records import VmStat, VmSysctl


def parse_flat_keyed(text: str, what: str) -> dict[str, int]:
    """``key value`` lines (vmstat, memory.stat, memory.events, cgroup.events). Unknown keys
    are kept: the kernel adds and reorders keys, so files are parsed by name."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            if parts:
                raise ParseError(what, f"expected 'key value', got {line!r}")
            continue
        try:
            values[parts[0]] = int(parts[1])
        except ValueError:
            raise ParseError(what, f"non-numeric value in {line!r}") from None
    return values


def parse_vmstat(text: str) -> VmStat:
    return VmStat(counters=parse_flat_keyed(text, "vmstat"))


def read_vmstat(host: Host) -> VmStat:
    return parse_vmstat(host.read_feature(host.vmstat_path(), "vmstat"))


SYSCTLS = ("overcommit_memory", "overcommit_ratio", "panic_on_oom", "oom_kill_allocating_task")
# The kernel's defaults, used when a file is missing (a fake root, or a kernel without it).
SYSCTL_DEFAULTS = {
    "overcommit_memory": 0,
    "overcommit_ratio": 50,
    "panic_on_oom": 0,
    "oom_kill_allocating_task": 0,
}


def parse_sysctl_value(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ParseError(f"vm.{name}", f"expected an integer, got {text.strip()!r}") from None


def read_sysctl(host: Host, name: str, default: int) -> int:
    """One integer vm sysctl; ``default`` (the kernel's) where the file is missing."""
    try:
        return parse_sysctl_value(host.read_text(host.vm_sysctl_path(name)), name)
    except FileNotFoundError:
        return default


def read_vm_sysctl(host: Host) -> VmSysctl:
    return VmSysctl(**{name: read_sysctl(host, name, SYSCTL_DEFAULTS[name]) for name in SYSCTLS})
