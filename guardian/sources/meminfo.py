"""Machine-wide memory: /proc/meminfo and zram devices."""

from __future__ import annotations

import os
import re
from typing import Optional

from guardian.errors import Malformed, ParseError
from guardian.host import Host
from guardian.records import MemInfo, ZramDevice
from guardian.sources.vmstat import parse_int
from guardian.text import shown

# The keys guardian uses, found by one regular-expression pass in C: parsing all ~55 lines in
# Python cost twice as much, and this runs on every tick (bench/sample_cost.py).
_USED = re.compile(
    r"^(MemTotal|MemFree|MemAvailable|Buffers|Cached|SwapTotal|SwapFree|CommitLimit|Committed_AS"
    r"|AnonPages|Shmem|Inactive\(file\)|PageTables):[ \t]+([0-9]+)",
    re.MULTILINE,
)


def parse_meminfo_fields(text: str) -> dict[str, int]:
    """Every line of /proc/meminfo: ``kB`` lines in bytes, unitless lines (HugePages_*) as counts."""
    fields: dict[str, int] = {}
    for line in text.split("\n"):
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = parse_int(parts[0])
        except ValueError:
            raise ParseError("meminfo", f"non-numeric value in {line!r}") from None
        if len(parts) > 1 and parts[1] == "kB":
            value *= 1024
        fields[key] = value
    return fields


def parse_meminfo(text: str) -> MemInfo:
    """Parse /proc/meminfo (every value guardian uses is a ``kB`` line: bytes here).

    MemAvailable exists since 3.14; without it the estimate earlyoom uses is taken
    (MemFree + Cached + Buffers - Shmem, earlyoom meminfo.c) and ``available_estimated`` is set.
    Only MemTotal and MemFree are required (ParseError without them); a line guardian does not
    use may hold anything.
    """
    found = {key: int(value) * 1024 for key, value in _USED.findall(text)}
    try:
        total = found["MemTotal"]
        free = found["MemFree"]
    except KeyError as exc:
        if ":" in text and not _USED.search(text):
            parse_meminfo_fields(text)  # raises a precise error for a malformed line
        raise ParseError("meminfo", f"no {exc.args[0]} line") from None
    estimated = "MemAvailable" not in found
    if estimated:
        available = free + found.get("Cached", 0) + found.get("Buffers", 0) - found.get("Shmem", 0)
    else:
        available = found["MemAvailable"]
    return MemInfo(
        total_bytes=total,
        free_bytes=free,
        available_bytes=available,
        buffers_bytes=found.get("Buffers", 0),
        cached_bytes=found.get("Cached", 0),
        swap_total_bytes=found.get("SwapTotal", 0),
        swap_free_bytes=found.get("SwapFree", 0),
        commit_limit_bytes=found.get("CommitLimit", 0),
        committed_as_bytes=found.get("Committed_AS", 0),
        anon_pages_bytes=found.get("AnonPages", 0),
        shmem_bytes=found.get("Shmem", 0),
        inactive_file_bytes=found.get("Inactive(file)", 0),
        page_tables_bytes=found.get("PageTables", 0),
        available_estimated=estimated,
        text=text,
        parse_fields=parse_meminfo_fields,
    )


def quick_field(text: str, name: str) -> Optional[int]:
    """One kB line of meminfo in bytes ("MemAvailable", "SwapFree") by two find() calls, for the
    daemon's idle fast path; None when the line is missing (old kernels: the full parse
    estimates MemAvailable)."""
    key = f"{name}:"
    if text.startswith(key):
        start = 0
    else:
        start = text.find(f"\n{key}") + 1
        if start == 0:
            return None
    end = text.find(" kB", start)
    if end < 0:
        return None
    try:
        return parse_int(text[start + len(name) + 1 : end].strip()) * 1024
    except ValueError:
        return None


def read_meminfo(host: Host) -> MemInfo:
    """Read /proc/meminfo: Unavailable when it is missing, unreadable or has no MemTotal/MemFree
    (nothing machine-wide can be judged without them)."""
    path = host.meminfo_path()
    text = host.read_hot(path, "meminfo")
    try:
        return parse_meminfo(text)
    except ParseError as exc:
        raise Malformed("meminfo", f"cannot parse {shown(path)}: {exc.reason}") from None


def parse_zram_mm_stat(name: str, disksize_text: str, mm_stat_text: str) -> ZramDevice:
    """``mm_stat`` columns (Documentation/admin-guide/blockdev/zram.rst): orig_data_size
    compr_data_size mem_used_total mem_limit mem_used_max same_pages pages_compacted
    huge_pages [huge_pages_since]; newer kernels append columns, so parse by position."""
    cols = mm_stat_text.split()
    if len(cols) < 5:
        raise ParseError(f"{name}/mm_stat", f"expected at least 5 columns, got {len(cols)}")
    try:
        values = [parse_int(c) for c in cols[:5]]
        disksize = parse_int(disksize_text.strip() or "0")
    except ValueError:
        raise ParseError(f"{name}/mm_stat", "non-numeric column") from None
    return ZramDevice(name, disksize, *values)


def read_zram(host: Host) -> list[ZramDevice]:
    """Every zram device; an uninitialised one reads disksize 0. Devices that vanish, or whose
    files do not parse, are skipped: zram is reported, never decided on."""
    devices = []
    for directory in host.zram_devices():
        try:
            mm_stat = host.read_text(f"{directory}/mm_stat")
            disksize = host.read_text(f"{directory}/disksize")
            devices.append(parse_zram_mm_stat(os.path.basename(directory), disksize, mm_stat))
        except OSError:
            continue  # hot-unplugged, or an old kernel without mm_stat
        except ParseError:
            continue
    return devices
