"""The smaps file of a process: how much of a process's shared memory its death would free.

``RssShmem`` (/proc/PID/status) counts every shmem page the process maps: a tmpfs file, a
memfd, SysV shared memory, a shared anonymous mapping. The kernel's oom_badness() counts it
all, but killing the process frees only what nothing else keeps: a tmpfs file that still has a
name stays in tmpfs, and a SysV segment stays until it is removed. What /proc can tell is
freed: the pages of shared mappings whose object has no name any more (a memfd, a shared
anonymous mapping, an unlinked file: the path ends in `` (deleted)``) and that no other process
maps (``Private_Clean`` + ``Private_Dirty``: the pages whose map count is one). A descriptor of
the object held by another process cannot be seen; SysV segments (``/SYSV...``) are taken as
kept, since whether one is marked for removal is not in smaps.
"""

from __future__ import annotations

from guardian.errors import Malformed
from guardian.host import Host

DELETED = " (deleted)"


def _shared(header: str) -> tuple[bool, str]:
    """(a shared mapping, its path) from a mapping's first line:
    ``7f..-7f.. rw-s 00000000 00:01 1234   /memfd:x (deleted)``."""
    parts = header.split(maxsplit=5)
    if len(parts) < 5 or "-" not in parts[0]:
        raise Malformed("smaps", f"not a mapping line: {header[:80]!r}")
    perms = parts[1]
    path = parts[5] if len(parts) > 5 else ""
    return len(perms) >= 4 and perms[3] == "s", path


def freed_by_death(path: str) -> bool:
    """A shared mapping of this object is freed when its last user dies."""
    if path.startswith("/SYSV"):
        return False
    return path.endswith(DELETED) or path.startswith("/memfd:")


def parse_freed_shmem(text: str) -> int:
    """Bytes of shared mappings of unnamed objects mapped by this process alone."""
    total = 0
    counting = False
    for line in text.splitlines():
        if not line:
            continue
        key, sep, rest = line.partition(":")
        if sep and " " not in key:  # "Rss:   4 kB"; a mapping's first line has spaces before any ":"
            if counting and key in ("Private_Clean", "Private_Dirty"):
                value = rest.split()
                if not value or not value[0].isdigit():
                    raise Malformed("smaps", f"bad {key} line: {line[:80]!r}")
                total += int(value[0]) * 1024
            continue
        shared, path = _shared(line)
        counting = shared and freed_by_death(path)
    return total


def read_freed_shmem(host: Host, pid: int) -> int:
    """parse_freed_shmem() of /proc/PID/smaps (NoSuchProcess when it is gone). The read takes
    the process's mmap_lock, like cmdline: callers make it through Host.slow_call."""
    return parse_freed_shmem(host.read_pid_file(pid, "smaps").decode("ascii", "replace"))
