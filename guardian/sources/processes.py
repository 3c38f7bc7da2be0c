"""Per-process reads from /proc/PID: stat, status, oom_score(_adj), cgroup, comm, cmdline.

Every read goes straight to one small file with os.read: bench/sample_cost.py measured that
against psutil, which reads the same files but wraps each in Python objects and its own error
translation (numbers in README, "Cost of sensing"). psutil stays in the benchmarks and in the
live tests as an independent oracle for these parsers.

A process that exits while we read raises NoSuchProcess from the read that noticed; callers
enumerating /proc skip it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from guardian.errors import NoSuchProcess, ParseError
from guardian.host import Host
from guardian.records import ProcCgroups, Process, ProcStat, ProcStatus

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
            pid=int(text[:open_paren]),
            comm=text[open_paren + 1 : close_paren],
            state=rest[_STATE - 3],
            ppid=int(rest[_PPID - 3]),
            flags=int(rest[_FLAGS - 3]),
            starttime_ticks=int(rest[_STARTTIME - 3]),
        )
    except ValueError:
        raise ParseError("process stat", "non-numeric field") from None


def _kb(value: str) -> int:
    # "   1620 kB"
    return int(value.split(None, 1)[0]) * 1024


def parse_status(text: str) -> ProcStatus:
    """Parse /proc/PID/status. Kernel threads and zombies have no Vm*/Rss* lines."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    try:
        uids = fields["Uid"].split()
        kthread = fields.get("Kthread")
        nstgid = fields.get("NStgid")
        return ProcStatus(
            name=fields.get("Name", "").strip(),
            tgid=int(fields["Tgid"]),
            uid_real=int(uids[0]),
            uid_effective=int(uids[1]),
            rss_anon_bytes=_kb(fields["RssAnon"]) if "RssAnon" in fields else 0,
            rss_file_bytes=_kb(fields["RssFile"]) if "RssFile" in fields else 0,
            rss_shmem_bytes=_kb(fields["RssShmem"]) if "RssShmem" in fields else 0,
            swap_bytes=_kb(fields["VmSwap"]) if "VmSwap" in fields else 0,
            pte_bytes=_kb(fields["VmPTE"]) if "VmPTE" in fields else 0,
            has_mm="VmRSS" in fields,
            kthread=None if kthread is None else kthread.strip() == "1",
            nstgid=tuple(int(p) for p in nstgid.split()) if nstgid else (),
        )
    except (KeyError, IndexError) as exc:
        raise ParseError("process status", f"missing field {exc}") from None
    except ValueError:
        raise ParseError("process status", "non-numeric field") from None


def parse_proc_cgroup(text: str) -> ProcCgroups:
    """Parse /proc/PID/cgroup: ``0::/path`` is cgroup2; ``N:ctrl[,ctrl]:/path`` are v1
    hierarchies (named ones as ``name=systemd``). Hybrid hosts print both kinds."""
    v2 = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if path.endswith(" (deleted)"):  # a zombie whose cgroup was removed
            path = path[: -len(" (deleted)")]
        if hier == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = path
    return ProcCgroups(v2=v2, v1=v1)


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """NUL-separated arguments; empty for kernel threads and zombies."""
    if not raw:
        return ()
    return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))


def read_oom_score_adj(host: Host, pid: int) -> int:
    return int(host.read_pid_file(pid, "oom_score_adj"))


def read_oom_score(host: Host, pid: int) -> int:
    return int(host.read_pid_file(pid, "oom_score"))


def read_cmdline(host: Host, pid: int) -> tuple[str, ...]:
    return parse_cmdline(host.read_pid_file(pid, "cmdline"))


def read_comm(host: Host, pid: int) -> str:
    return host.read_pid_file(pid, "comm").decode("utf-8", "replace").rstrip("\n")


def read_process(host: Host, pid: int, *, oom_score: bool = False, cmdline: bool = False) -> Process:
    """One process from stat, status, oom_score_adj and cgroup (and oom_score, cmdline when
    asked). Raises NoSuchProcess if it exits during the reads."""
    stat = parse_stat(host.read_pid_file(pid, "stat").decode("utf-8", "replace"))
    status = parse_status(host.read_pid_file(pid, "status").decode("utf-8", "replace"))
    adj = read_oom_score_adj(host, pid)
    cgroups = parse_proc_cgroup(host.read_pid_file(pid, "cgroup").decode("utf-8", "replace"))
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
        oom_score=read_oom_score(host, pid) if oom_score else None,
        cmdline=read_cmdline(host, pid) if cmdline else None,
    )


def read_processes(
    host: Host,
    pids: Optional[Iterable[int]] = None,
    *,
    oom_score: bool = False,
    cmdline: bool = False,
) -> list[Process]:
    """Every readable process. Ones that vanish mid-read, or whose files we may not read
    (hidepid, another user's process under a hardened /proc), are skipped."""
    out = []
    for pid in host.pids() if pids is None else pids:
        try:
            out.append(read_process(host, pid, oom_score=oom_score, cmdline=cmdline))
        except (NoSuchProcess, PermissionError, ParseError):
            continue
        except OSError:
            continue  # EIO and friends on a task being torn down
    return out
