"""The vmstat counters and the vm sysctls that govern the OOM killer."""

from __future__ import annotations

from typing import Optional

from guardian.errors import ParseError
from guardian.host import Host
from guardian.records import VmStat, VmSysctl
from guardian.text import shown


def parse_int(text: str) -> int:
    """A decimal integer as the kernel prints one (``-?[0-9]+``). Python's int() also takes
    "1_000", "+5", " 7 " and digits of other scripts ("\\u0661"); none of those is kernel output, so
    none is read as a number. Raises ValueError."""
    if text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        return int(text)
    raise ValueError(f"not a decimal integer: {text[:40]!r}")


def parse_flat_keyed(text: str, what: str, *, strict: bool = True) -> dict[str, int]:
    """``key value`` lines (vmstat, memory.stat, memory.events, cgroup.events). Unknown keys
    are kept: the kernel adds and reorders keys, so files are parsed by name.

    ``strict``: a line that is not ``key integer`` raises ParseError (a counter file with one
    bad line cannot be trusted for any counter). Otherwise such lines are skipped."""
    values: dict[str, int] = {}
    for line in text.split("\n"):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 2:
                raise ValueError("expected 'key value'")
            values[parts[0]] = parse_int(parts[1])
        except ValueError:
            if strict:
                raise ParseError(what, f"expected 'key integer', got {line!r}") from None
    return values


def parse_vmstat(text: str) -> VmStat:
    """Parse /proc/vmstat. Machine-wide, so a line that does not parse costs that counter only."""
    return VmStat(counters=parse_flat_keyed(text, "vmstat", strict=False))


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
        return parse_int(text.strip())
    except ValueError:
        raise ParseError(f"vm.{name}", f"expected an integer, got {text.strip()!r}") from None


def read_sysctl_noting(host: Host, name: str, default: int) -> tuple[int, Optional[str]]:
    """One integer vm sysctl, and None; or ``default`` (the kernel's) and why the value could
    not be read, for a file that is there but unreadable or not an integer. A missing file is
    no problem to report: a kernel without the sysctl behaves as its default."""
    path = host.vm_sysctl_path(name)
    try:
        return parse_sysctl_value(host.read_text(path), name), None
    except FileNotFoundError:
        return default, None
    except OSError as exc:
        return default, f"{shown(path)}: {exc.strerror or exc}; taken as the kernel default {default}"
    except ParseError as exc:
        return default, f"{shown(path)}: {exc.reason}; taken as the kernel default {default}"


def read_sysctl(host: Host, name: str, default: int) -> int:
    """One integer vm sysctl; ``default`` (the kernel's) where it is missing or unreadable."""
    return read_sysctl_noting(host, name, default)[0]


def read_vm_sysctl(host: Host) -> VmSysctl:
    values: dict[str, int] = {}
    unreadable: dict[str, str] = {}
    for name in SYSCTLS:
        value, why = read_sysctl_noting(host, name, SYSCTL_DEFAULTS[name])
        values[name] = value
        if why is not None:
            unreadable[name] = why
    return VmSysctl(**values, unreadable=unreadable)
