"""Per-process reads from /proc/PID: stat, status, oom_score(_adj), cgroup, comm, cmdline.

Every read goes straight to one small file with os.read: bench/sample_cost.py measured that
against psutil, which reads the same files but wraps each in Python objects and its own error
translation (numbers in README, "Cost of sensing"). psutil stays in the benchmarks and in the
live tests as an independent oracle for these parsers.

A process that exits while we read raises NoSuchProcess from the read that noticed; callers
enumerating /proc skip it. A process whose files do not parse (ParseError) is skipped the same
way: it is one process guardian cannot judge, never a reason to stop reading the others.

Text is decoded as file names are (``os.fsdecode``: bytes that are not UTF-8 become surrogate
escapes): a cgroup path from /proc/PID/cgroup still names the real directory, and comm and
cmdline keep their exact bytes for shown() to print.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from types import MappingProxyType
from typing import Optional

from guardian.errors import NoSuchProcess, ParseError
from guardian.host import Host, cgroup_path
from guardian.records import ProcCgroups, Process, ProcStat, ProcStatus
from guardian.sources.vmstat import parse_int

# /proc/PID/stat field numbers (proc(5)), counted from 1; fields after "(comm)" start at 3.
_STATE, _PPID, _FLAGS, _STARTTIME = 3, 4, 9, 22


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat. comm may hold spaces and parentheses: it ends at the LAST ')'."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ParseError("process stat", "no (comm) field")
    rest = text[close_paren + 2 :].split()
    if len(rest) < _STARTTIME - 2:
        raise ParseError("process stat", f"only {len(rest) + 2} fields")
    try:
        return ProcStat(
            pid=parse_int(text[:open_paren].strip()),
            comm=text[open_paren + 1 : close_paren],
            state=rest[_STATE - 3],
            ppid=parse_int(rest[_PPID - 3]),
            flags=parse_int(rest[_FLAGS - 3]),
            starttime_ticks=parse_int(rest[_STARTTIME - 3]),
        )
    except ValueError:
        raise ParseError("process stat", "non-numeric field") from None


def _kb(value: str) -> int:
    # "   1620 kB"
    return parse_int(value.split(None, 1)[0]) * 1024


SIGKILL_BIT = 1 << 8  # signal 9, bit 9 of the pending mask counted from 1


def _sigkill_in(mask: str) -> bool:
    """Whether a ``SigPnd``/``ShdPnd`` hex mask holds SIGKILL (False when it does not parse)."""
    mask = mask.strip()
    if not mask or any(c not in "0123456789abcdefABCDEF" for c in mask):
        return False
    return bool(int(mask, 16) & SIGKILL_BIT)


def _field(text: str, key: str) -> Optional[str]:
    """The value after ``key`` (``"Uid:"``) on its line of a status file; None without one. The
    Name: line comes first and the kernel escapes it (a newline in comm reads ``\\n``), so any
    other key is found right after a newline."""
    if text.startswith(key):
        start = len(key)
    else:
        at = text.find("\n" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def _kb_field(text: str, key: str) -> int:
    value = _field(text, key)
    return 0 if value is None else _kb(value)


def parse_status(text: str) -> ProcStatus:
    """Parse /proc/PID/status. Kernel threads and zombies have no Vm*/Rss* lines. Only the
    lines guardian uses are looked up (a dict of all ~60 lines was most of the cost of reading
    a process)."""
    try:
        uid = _field(text, "Uid:")
        tgid = _field(text, "Tgid:")
        if uid is None or tgid is None:
            raise ParseError("process status", f"missing field {'Uid' if uid is None else 'Tgid'!r}")
        uids = uid.split()
        kthread = _field(text, "Kthread:")
        nstgid = _field(text, "NStgid:")
        threads = _field(text, "Threads:")
        name = _field(text, "Name:")
        return ProcStatus(
            name="" if name is None else name.strip(),
            tgid=parse_int(tgid.strip()),
            uid_real=parse_int(uids[0]),
            uid_effective=parse_int(uids[1]),
            rss_anon_bytes=_kb_field(text, "RssAnon:"),
            rss_file_bytes=_kb_field(text, "RssFile:"),
            rss_shmem_bytes=_kb_field(text, "RssShmem:"),
            swap_bytes=_kb_field(text, "VmSwap:"),
            pte_bytes=_kb_field(text, "VmPTE:"),
            has_mm=_field(text, "VmRSS:") is not None,
            kthread=None if kthread is None else kthread.strip() == "1",
            nstgid=tuple(parse_int(p) for p in nstgid.split()) if nstgid else (),
            threads=1 if threads is None else parse_int(threads.strip()),
            sigkill_pending=_sigkill_in(_field(text, "ShdPnd:") or ""),
        )
    except IndexError as exc:
        raise ParseError("process status", f"missing field {exc}") from None
    except ValueError:
        raise ParseError("process status", "non-numeric field") from None


_PARSED_CGROUPS: dict[tuple[str, str], ProcCgroups] = {}
PARSED_CGROUPS_KEPT = 4096  # distinct cgroup files remembered (most processes share a few)


def parse_proc_cgroup(text: str, above: str = "") -> ProcCgroups:
    """parse_cgroup_file(), remembered by the file's text: the processes of one service print
    the same lines, and a ProcCgroups is immutable (bounded: forgotten wholesale when full)."""
    key = (above, text)
    parsed = _PARSED_CGROUPS.get(key)
    if parsed is None:
        parsed = parse_cgroup_file(text, above)
        if len(_PARSED_CGROUPS) >= PARSED_CGROUPS_KEPT:
            _PARSED_CGROUPS.clear()
        _PARSED_CGROUPS[key] = parsed
    return parsed


def parse_cgroup_file(text: str, above: str = "") -> ProcCgroups:
    """Parse /proc/PID/cgroup: ``0::/path`` is cgroup2; ``N:ctrl[,ctrl]:/path`` are v1
    hierarchies (named ones as ``name=systemd``). Hybrid hosts print both kinds.

    Paths come out in host.cgroup_path()'s form (``system.slice/x`` -> ``/system.slice/x``),
    so every walk up a path ends at the root. ``above`` (Host.cgroupns_above(): ``/../..``)
    is where the cgroup2 mount's root lies above guardian's cgroup namespace; a cgroup2 path
    that starts there is taken as the host names it (``/../../system.slice/x`` ->
    ``/system.slice/x``). A path that still names no cgroup guardian can reach (``/../other``:
    the process is outside guardian's cgroup namespace and outside the mount) is left out, as
    if that hierarchy were not listed."""
    v2 = None
    v1: dict[str, str] = {}
    # "\n" only: the kernel prints cgroup names unescaped, and str.splitlines() would also
    # break a name at \x0c, \x1c or U+2028
    for line in text.split("\n"):
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, raw = parts
        if raw.endswith(" (deleted)"):  # a zombie whose cgroup was removed
            raw = raw[: -len(" (deleted)")]
        if above and hier == "0" and (raw == above or raw.startswith(above + "/")):
            raw = raw[len(above) :] or "/"
        try:
            path = cgroup_path(raw)
        except ValueError:
            continue
        if hier == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = path
    return ProcCgroups(v2=v2, v1=MappingProxyType(v1))  # v1 is ours alone: no copy needed


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """NUL-separated arguments; empty for kernel threads and zombies."""
    if not raw:
        return ()
    return tuple(os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0"))


def parse_oom_score_adj(text: str) -> int:
    """Parse /proc/PID/oom_score_adj, an integer from -1000 to 1000 (OOM_SCORE_ADJ_MIN..MAX)."""
    try:
        value = parse_int(text.strip())
    except ValueError:
        raise ParseError("oom_score_adj", f"expected an integer, got {text.strip()[:40]!r}") from None
    if not -1000 <= value <= 1000:
        raise ParseError("oom_score_adj", f"{value} is outside -1000..1000")
    return value


def parse_oom_score(text: str) -> int:
    """Parse /proc/PID/oom_score, a non-negative integer (0..2000 on current kernels)."""
    try:
        value = parse_int(text.strip())
    except ValueError:
        raise ParseError("oom_score", f"expected an integer, got {text.strip()[:40]!r}") from None
    if value < 0:
        raise ParseError("oom_score", f"{value} is negative")
    return value


def read_oom_score_adj(host: Host, pid: int) -> int:
    return parse_oom_score_adj(os.fsdecode(host.read_pid_file(pid, "oom_score_adj")))


def read_oom_score(host: Host, pid: int) -> int:
    return parse_oom_score(os.fsdecode(host.read_pid_file(pid, "oom_score")))


def read_cmdline(host: Host, pid: int) -> tuple[str, ...]:
    return parse_cmdline(host.read_pid_file(pid, "cmdline"))


def read_comm(host: Host, pid: int) -> str:
    return os.fsdecode(host.read_pid_file(pid, "comm")).rstrip("\n")


# what read_process takes from a status for a kernel thread, whose status it does not read: no
# memory, uid 0, one thread, no signal pending (name, tgid and nstgid it never takes from status)
_KERNEL_THREAD = ProcStatus(
    name="",
    tgid=0,
    uid_real=0,
    uid_effective=0,
    rss_anon_bytes=0,
    rss_file_bytes=0,
    rss_shmem_bytes=0,
    swap_bytes=0,
    pte_bytes=0,
    has_mm=False,
    kthread=True,
    nstgid=(),
)


def read_process(host: Host, pid: int, *, oom_score: bool = False, cmdline: bool = False) -> Process:
    """One process from stat, status, oom_score_adj and cgroup (and oom_score, cmdline when
    asked). Raises NoSuchProcess if it exits during the reads, ParseError if a file does not
    parse.

    A kernel thread (PF_KTHREAD in stat's flags, which the kernel sets and nothing in user space
    can) has its status left unread: it has no memory of its own (no mm, no Vm*/Rss* lines),
    runs with the kernel's credentials (uid 0) and takes no signal, so the file says nothing
    more. Most of /proc on a many-CPU machine is kernel threads, and status is the costliest of
    a process's files to make and to parse: a ranking reads the others and skips this one."""
    stat = parse_stat(os.fsdecode(host.read_pid_file(pid, "stat")))
    if stat.is_kernel_thread:
        status = _KERNEL_THREAD
    else:
        status = parse_status(os.fsdecode(host.read_pid_file(pid, "status")))
    if stat.state in ("Z", "X") and status.threads > 1:
        stat, status = _through_a_live_thread(host, pid, stat, status)
    adj = read_oom_score_adj(host, pid)
    cgroups = parse_proc_cgroup(os.fsdecode(host.read_pid_file(pid, "cgroup")), host.cgroupns_above())
    kernel_thread = status.kthread if status.kthread is not None else stat.is_kernel_thread
    return Process(
        pid=pid,
        ppid=stat.ppid,
        comm=stat.comm,
        state=stat.state,
        starttime_ticks=stat.starttime_ticks,
        is_kernel_thread=kernel_thread,
        uid=status.uid_real,
        rss_anon_bytes=status.rss_anon_bytes,
        rss_file_bytes=status.rss_file_bytes,
        rss_shmem_bytes=status.rss_shmem_bytes,
        swap_bytes=status.swap_bytes,
        pte_bytes=status.pte_bytes,
        oom_score_adj=adj,
        cgroup=cgroups,
        oom_score=_oom_score_or_none(host, pid) if oom_score else None,
        cmdline=read_cmdline(host, pid) if cmdline else None,
        sigkill_pending=status.sigkill_pending,
    )


def _through_a_live_thread(
    host: Host, pid: int, stat: ProcStat, status: ProcStatus
) -> tuple[ProcStat, ProcStatus]:
    """A group whose main thread has exited while others run: /proc/PID shows the leader, a
    zombie without memory, but the group lives and holds its memory (the kernel's own
    find_lock_task_mm() looks for a thread that still has the mm, and oom_score is not 0). Its
    state and memory come from a live thread; its identity (pid, start time) stays the
    leader's. Unchanged when no thread is live."""
    for tid in host.task_ids(pid):
        if tid == pid:
            continue
        try:
            thread_stat = parse_stat(os.fsdecode(host.read_pid_file(pid, f"task/{tid}/stat")))
            if thread_stat.state in ("Z", "X"):
                continue
            thread_status = parse_status(os.fsdecode(host.read_pid_file(pid, f"task/{tid}/status")))
        except (NoSuchProcess, ParseError, OSError):
            continue  # that thread exited meanwhile
        if not thread_status.has_mm:
            continue
        return replace(stat, state=thread_stat.state), replace(
            thread_status, sigkill_pending=status.sigkill_pending, threads=status.threads
        )
    return stat, status


def process_state(host: Host, pid: int, stat: ProcStat) -> str:
    """The state of the process, not of its main thread alone: "Z" only when no thread lives."""
    if stat.state not in ("Z", "X"):
        return stat.state
    try:
        status = parse_status(os.fsdecode(host.read_pid_file(pid, "status")))
    except (NoSuchProcess, ParseError, OSError):
        return stat.state
    if status.threads <= 1:
        return stat.state
    return _through_a_live_thread(host, pid, stat, status)[0].state


def _oom_score_or_none(host: Host, pid: int) -> Optional[int]:
    # the kernel's verdict is shown beside guardian's, never decided on: a bad value is "unknown"
    try:
        return read_oom_score(host, pid)
    except ParseError:
        return None


def read_processes(
    host: Host,
    pids: Optional[Iterable[int]] = None,
    *,
    oom_score: bool = False,
    cmdline: bool = False,
) -> list[Process]:
    """Every readable process. Ones that vanish mid-read, whose files we may not read (hidepid,
    another user's process under a hardened /proc), or whose files do not parse, are skipped."""
    out = []
    for pid in host.pids() if pids is None else pids:
        try:
            out.append(read_process(host, pid, oom_score=oom_score, cmdline=cmdline))
        except (NoSuchProcess, PermissionError, ParseError):
            continue
        except OSError:
            continue  # EIO and friends on a task being torn down
    return out
