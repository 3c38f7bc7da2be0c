"""The kernel log (/dev/kmsg) and the OOM-kill reports in it: the kills guardian did not prevent.

Four layers, each usable alone:

* ``parse_kmsg_record``: one record as a read() of /dev/kmsg returns it,
  ``PRI,SEQ,TS_USEC,FLAGS[,MORE];MESSAGE\\n`` then `` KEY=VALUE\\n`` lines
  (Documentation/ABI/testing/dev-kmsg; kernel/printk/printk.c writes every byte below 0x20,
  above 0x7e and the backslash as ``\\xNN``, so a record is ASCII; fields after FLAGS, such as
  ``caller=T123`` with CONFIG_PRINTK_CALLER, are skipped as the ABI asks).
* ``parse_oom_line``: the lines of mm/oom_kill.c and mm/memcontrol.c that make an OOM-kill
  report, as they read from 4.19 to 6.18 (tests/fixtures/kmsg/README lists where each recorded
  line comes from). Other lines are None.
* ``OomReports``: pairs those lines into ``KernelOomKill`` records.
* ``KmsgFollower``: reads /dev/kmsg without blocking, from its end at start.

The lines of one report, in the order the kernel prints them (oom_kill_process(), under the
global oom_lock, so reports never interleave; other subsystems' lines may come between):

    python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0  (dump_header)
    ... stack, meminfo, task list ...
    oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,
        task_memcg=/a/b,task=python,pid=29889,uid=0          (dump_oom_summary, one line, 5.0+)
    Memory cgroup out of memory: Killed process 29889 (python) total-vm:137100kB,
        anon-rss:127616kB, file-rss:6032kB, shmem-rss:0kB, UID:0 pgtables:316kB oom_score_adj:0
    Tasks in /a are going to be killed due to memory.oom.group set      (only with oom.group)
    Memory cgroup out of memory: Killed process 29890 (python) ...     (each other member)
    oom_reaper: reaped process 29889 (python), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB

dump_header() is rate-limited (10 reports in 5 s), so the summary can be missing; the Killed
line never is. Versions differ in the Killed line: 4.19 printed it without the reason prefix
(after "Out of memory: Kill process P (c) score N or sacrifice child"), 5.1 added the prefix,
a 2019 commit added ``UID:``, 5.4 ``pgtables:`` (in bytes until a 5.4.y fix) and
``oom_score_adj:``. The summary line has carried ``task_memcg=`` since it was added (5.0,
together with ``oom_memcg=``/``global_oom``); without CONFIG_CPUSETS it has no
``cpuset=``/``mems_allowed=``. It is printed with pr_cont(): a kernel before the 5.10 printk
rework may cut it into records flagged ``c``/``+``, which are joined here.

Only records of facility 0 are read: /dev/kmsg gives a userspace writer's records facility
LOG_USER at least (devkmsg_write() refuses LOG_KERN), so a process that can write the log
cannot forge a kernel OOM kill.

Parsing is total: whatever the bytes, the parsers return a result or raise ParseError; the
follower and OomReports count what does not parse and go on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable
from typing import Optional, Union

from guardian.errors import ParseError, Unavailable
from guardian.frozen import frozen
from guardian.host import Host
from guardian.records import KernelOomKill, KmsgRecord, frozen_mapping
from guardian.text import shown

# A record is at most a few KiB: 1024 bytes of text in printk's ring buffer (6.x), at most
# 8 KiB with escapes and dictionary before 5.10 (CONSOLE_EXT_LOG_MAX). A read() buffer too
# small for a record fails with EINVAL, so the buffer is generous; longer input is no record.
READ_SIZE = 16384
RECORD_MAX = 16384
MAX_DIGITS = 20  # the header's numbers are u64: pri, seq, timestamp
LOG_KERN = 0
# How long after the last line of an OOM report a later line still belongs to it. A report's
# lines come microseconds apart (they are printed in one go under oom_lock); a second report
# that dump_header()'s rate limit kept quiet must not be taken for a member of the first one.
EVENT_WINDOW_US = 1_000_000
# comm is TASK_COMM_LEN - 1 bytes at most (include/linux/sched.h)
COMM_MAX_BYTES = 15

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(raw: bytes) -> str:
    """Kernel log text: ``\\xNN`` escapes back to their bytes, then decoded as file names are."""
    if b"\\x" in raw:
        raw = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)
    return os.fsdecode(raw)


def _number(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > MAX_DIGITS:  # bytes.isdigit(): ASCII digits only
        raise ParseError(
            "kmsg record", f"{what}: expected a decimal number, got {shown(os.fsdecode(raw[:40]))!r}"
        )
    return int(raw)


def parse_kmsg_record(data: bytes) -> KmsgRecord:
    """One /dev/kmsg record (one read()). Raises ParseError for anything else."""
    if len(data) > RECORD_MAX:
        raise ParseError("kmsg record", f"{len(data)} bytes, more than a record holds")
    if data.endswith(b"\n"):
        data = data[:-1]
    head, _, rest = data.partition(b"\n")
    prefix, sep, message = head.partition(b";")
    if not sep:
        raise ParseError("kmsg record", "no ';' between header and message")
    parts = prefix.split(b",")
    if len(parts) < 4:
        raise ParseError("kmsg record", f"header has {len(parts)} fields, expected PRI,SEQ,TS,FLAGS")
    pri = _number(parts[0], "priority")
    seq = _number(parts[1], "sequence number")
    time_us = _number(parts[2], "timestamp")
    fields: dict[str, str] = {}
    if rest:
        for line in rest.split(b"\n"):
            if not line.startswith(b" "):
                raise ParseError("kmsg record", "a dictionary line that does not start with a space")
            key, equals, value = line[1:].partition(b"=")
            if equals:
                fields[_unescape(key)] = _unescape(value)
    return KmsgRecord(
        facility=pri >> 3,
        level=pri & 7,
        seq=seq,
        time_us=time_us,
        flags=_unescape(parts[3]),
        text=_unescape(message),
        fields=frozen_mapping(fields),
    )


def split_records(data: bytes) -> tuple[list[bytes], bytes]:
    """Records in a stream of them (a recorded file): each line that does not start with a
    space begins one. Returns the complete records and what is left of an unfinished line."""
    complete, newline, partial = data.rpartition(b"\n")
    records: list[bytes] = []
    if not newline:
        return records, partial
    for line in complete.split(b"\n"):
        if line.startswith(b" ") and records:
            records[-1] += b"\n" + line
        elif line:
            records.append(line)
    return records, partial


# --- the lines of an OOM-kill report -------------------------------------------------------------


@frozen
class OomKilled:
    """``[REASON: ]Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, ...`` (__oom_kill_process())."""

    context: str
    pid: int
    comm: str
    total_vm_bytes: int
    anon_rss_bytes: int
    file_rss_bytes: int
    shmem_rss_bytes: Optional[int]
    uid: Optional[int]
    pgtables_bytes: Optional[int]
    oom_score_adj: Optional[int]


@frozen
class OomSummary:
    """``oom-kill:constraint=...,task=COMM,pid=PID,uid=UID`` (dump_oom_summary()). ``body`` is
    the text after ``oom-kill:``, kept to split it again once the victim's comm is known."""

    body: str
    constraint: str
    nodemask: str
    cpuset: Optional[str]
    mems_allowed: Optional[str]
    global_oom: bool
    oom_memcg: Optional[str]
    task_memcg: Optional[str]
    comm: str
    pid: int
    uid: int


@frozen
class OomGroup:
    """``Tasks in PATH are going to be killed due to memory.oom.group set``."""

    memcg: str


@frozen
class OomSkipped:
    """``REASON: OOM victim PID (COMM) is already exiting. Skip killing the task``."""

    pid: int


@frozen
class OomChoice:
    """4.19 and 5.0: ``REASON: Kill process PID (COMM) score N or sacrifice child``; the Killed
    line that follows has no reason of its own, and may name a child instead."""

    context: str
    pid: int


@frozen
class OomInvoked:
    """``COMM invoked oom-killer: gfp_mask=...``: a report begins (dump_header())."""

    comm: str


@frozen
class OomReaped:
    """``oom_reaper: reaped process PID (COMM), now anon-rss:NkB, file-rss:NkB, shmem-rss:NkB``:
    what the reaper could not free. Recognised so it is never taken for a kill."""

    pid: int
    comm: str
    anon_rss_bytes: int
    file_rss_bytes: int
    shmem_rss_bytes: int


OomLine = Union[OomKilled, OomSummary, OomGroup, OomSkipped, OomChoice, OomInvoked, OomReaped]

_KILLED = "Killed process "
_SUMMARY = "oom-kill:"
_REAPED = "oom_reaper: reaped process "
_GROUP_HEAD = "Tasks in "
_GROUP_TAIL = " are going to be killed due to memory.oom.group set"
_SKIPPED = " is already exiting. Skip killing the task"
_INVOKED = " invoked oom-killer: "
_CHOICE = " or sacrifice child"


def _count(text: str, what: str, line: str) -> int:
    """A non-negative decimal as printk prints %d/%u/%lu (at most 20 digits)."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    raise ParseError("OOM report", f"{what}: expected a number in {shown(line[:120])!r}")


def _signed(text: str, what: str, line: str) -> int:
    return -_count(text[1:], what, line) if text.startswith("-") else _count(text, what, line)


def _kib(text: str, what: str, line: str) -> int:
    if not text.endswith("kB"):
        raise ParseError("OOM report", f"{what}: expected NkB in {shown(line[:120])!r}")
    return _count(text[:-2], what, line) * 1024


def _pid_and_comm(rest: str, close: str, line: str) -> tuple[int, str, str]:
    """``PID (COMM)CLOSE...``: the comm ends at the LAST ``CLOSE``, since what follows it is
    the kernel's own fixed text and numbers, while a comm is whatever a process set (it may
    hold ") total-vm:" itself)."""
    pid_text, sep, rest = rest.partition(" (")
    end = rest.rfind(close)
    if not sep or end < 0:
        raise ParseError("OOM report", f"expected 'PID (COMM){close}' in {shown(line[:120])!r}")
    return _count(pid_text, "pid", line), rest[:end], rest[end + len(close) :]


def _reason(line: str, at: int) -> Optional[str]:
    """The ``REASON: `` before position ``at``, "" when the line starts there, None when
    something else precedes it (not the kernel's line)."""
    if at == 0:
        return ""
    if line[at - 2 : at] == ": ":
        return line[: at - 2]
    return None


def _parse_killed(line: str, at: int) -> Optional[OomKilled]:
    context = _reason(line, at)
    # the reasons mm/oom_kill.c gives: "Out of memory", "Out of memory (oom_kill_allocating_task)",
    # "Memory cgroup out of memory"; none before 5.1. Another line that merely contains the
    # words is not a kill.
    if context is None or (context and "out of memory" not in context.lower()):
        return None
    rest = line[at + len(_KILLED) :]
    if rest.rfind(") total-vm:") >= 0:
        pid, comm, tail = _pid_and_comm(rest, ") ", line)
    else:  # RHEL 7's backport: "Killed process P (c), UID 0, total-vm:..."
        pid, comm, tail = _pid_and_comm(rest, "), ", line)
    values: dict[str, str] = {}
    tokens = tail.replace(",", " ").split()
    for i, token in enumerate(tokens):
        key, colon, value = token.partition(":")
        if colon:
            values[key] = value
        elif token == "UID" and i + 1 < len(tokens):  # the RHEL form
            values["UID"] = tokens[i + 1]
    try:
        total_vm, anon, file = values["total-vm"], values["anon-rss"], values["file-rss"]
    except KeyError as exc:
        raise ParseError("OOM report", f"no {exc.args[0]}: in {shown(line[:120])!r}") from None
    shmem = values.get("shmem-rss")
    uid = values.get("UID")
    pgtables = values.get("pgtables")
    adj = values.get("oom_score_adj")
    return OomKilled(
        context=context,
        pid=pid,
        comm=comm,
        total_vm_bytes=_kib(total_vm, "total-vm", line),
        anon_rss_bytes=_kib(anon, "anon-rss", line),
        file_rss_bytes=_kib(file, "file-rss", line),
        shmem_rss_bytes=None if shmem is None else _kib(shmem, "shmem-rss", line),
        uid=None if uid is None else _count(uid, "UID", line),
        pgtables_bytes=None if pgtables is None else _kib(pgtables, "pgtables", line),
        oom_score_adj=None if adj is None else _signed(adj, "oom_score_adj", line),
    )


def _nodelist(text: str) -> bool:
    """A node mask as %*pbl prints it ("0", "0-1,4") or "(null)"."""
    return text == "(null)" or all(c in "0123456789,-" for c in text)


def parse_oom_summary(body: str, comm: Optional[str] = None) -> OomSummary:
    """The text after ``oom-kill:``. The kernel escapes nothing in it, and three of its values
    are names a user may choose (the cpuset's name, the cgroup paths, the comm), so a comma
    or a key inside a name makes the line ambiguous. It is split on the structure the kernel
    prints: the numbers from the right; the victim's ``comm`` when the caller knows it (the
    Killed line says it unambiguously); the node lists, which hold only digits, ',' and '-';
    and the task's memory cgroup, which for a memcg OOM lies inside the OOM's cgroup."""
    line = _SUMMARY + body
    head, sep, uid_text = body.rpartition(",uid=")
    head, sep2, pid_text = head.rpartition(",pid=")
    if not (sep and sep2):
        raise ParseError("OOM report", f"no ',pid=...,uid=...' at the end of {shown(line[:120])!r}")
    uid = _signed(uid_text, "uid", line)  # from_kuid() of an unmapped uid prints -1
    pid = _count(pid_text, "pid", line)
    marker = ",task="
    if comm is not None and head.endswith(marker + comm):
        head, task = head[: -len(marker + comm)], comm
    else:
        head, sep, task = head.rpartition(marker)
        if not sep:
            raise ParseError("OOM report", f"no ',task=' in {shown(line[:120])!r}")
    if not head.startswith("constraint="):
        raise ParseError("OOM report", f"no 'constraint=' in {shown(line[:120])!r}")
    constraint, sep, rest = head[len("constraint=") :].partition(",nodemask=")
    if not sep or not (constraint.isascii() and constraint.replace("_", "").isalpha()):
        raise ParseError("OOM report", f"no 'CONSTRAINT_...,nodemask=' in {shown(line[:120])!r}")
    memcg_at = _memcg_marker(rest)
    if memcg_at < 0:
        raise ParseError("OOM report", f"no ',oom_memcg=' or ',global_oom' in {shown(line[:120])!r}")
    masks, memcgs = rest[:memcg_at], rest[memcg_at:]
    nodemask, sep, cpuset_part = masks.partition(",cpuset=")
    cpuset: Optional[str] = None
    mems: Optional[str] = None
    if sep:
        cpuset, _, mems = cpuset_part.rpartition(",mems_allowed=")
    global_oom = memcgs.startswith(",global_oom")
    oom_memcg: Optional[str] = None
    task_memcg: Optional[str] = None
    if global_oom:
        rest = memcgs[len(",global_oom") :]
        if rest.startswith(",task_memcg="):
            task_memcg = rest[len(",task_memcg=") :]
    else:
        oom_memcg, task_memcg = _split_memcgs(memcgs[len(",oom_memcg=") :])
    return OomSummary(
        body=body,
        constraint=constraint,
        nodemask=nodemask,
        cpuset=cpuset,
        mems_allowed=mems,
        global_oom=global_oom,
        oom_memcg=oom_memcg,
        task_memcg=task_memcg,
        comm=task,
        pid=pid,
        uid=uid,
    )


def _memcg_marker(rest: str) -> int:
    """Where ``,oom_memcg=`` or ``,global_oom`` begins after the node lists: the first such
    place whose left side reads as ``NODEMASK[,cpuset=NAME,mems_allowed=NODES]`` (a cpuset's
    name may hold either marker; the node lists cannot)."""
    places = sorted(
        m.start() for marker in (",oom_memcg=", ",global_oom") for m in re.finditer(re.escape(marker), rest)
    )
    for at in places:
        nodemask, sep, cpuset_part = rest[:at].partition(",cpuset=")
        if not _nodelist(nodemask):
            continue
        if sep:
            _, sep, mems = cpuset_part.rpartition(",mems_allowed=")
            if not sep or not _nodelist(mems):
                continue
        return at
    return -1


def _split_memcgs(text: str) -> tuple[str, Optional[str]]:
    """``OOM_MEMCG[,task_memcg=TASK_MEMCG]``: of the places the text could be split, the one
    where the task's group is the OOM's group or inside it (mem_cgroup_scan_tasks() picks the
    victim there); the first place if none is."""
    marker = ",task_memcg="
    places = [m.start() for m in re.finditer(re.escape(marker), text)]
    if not places:
        return text, None
    for at in places:
        oom, task = text[:at], text[at + len(marker) :]
        if task == oom or task.startswith(oom.rstrip("/") + "/"):
            return oom, task
    return text[: places[0]], text[places[0] + len(marker) :]


def parse_oom_line(text: str) -> Optional[OomLine]:
    """The OOM-report line ``text`` is, or None for any other line. A line that starts as one
    of them but does not read as the kernel prints it raises ParseError."""
    if text.startswith(_SUMMARY):
        return parse_oom_summary(text[len(_SUMMARY) :])
    if text.startswith(_REAPED):
        rest = text[len(_REAPED) :]
        pid, comm, tail = _pid_and_comm(rest, "), now ", text)
        values = dict(item.partition(":")[::2] for item in tail.split(", "))
        try:
            return OomReaped(
                pid=pid,
                comm=comm,
                anon_rss_bytes=_kib(values["anon-rss"], "anon-rss", text),
                file_rss_bytes=_kib(values["file-rss"], "file-rss", text),
                shmem_rss_bytes=_kib(values["shmem-rss"], "shmem-rss", text),
            )
        except KeyError as exc:
            raise ParseError("OOM report", f"no {exc.args[0]}: in {shown(text[:120])!r}") from None
    at = text.find(_KILLED)
    if at >= 0:
        killed = _parse_killed(text, at)
        if killed is not None:
            return killed
    if text.startswith(_GROUP_HEAD) and text.endswith(_GROUP_TAIL):
        return OomGroup(memcg=text[len(_GROUP_HEAD) : -len(_GROUP_TAIL)])
    if text.endswith(_SKIPPED):
        at = text.find(": OOM victim ")
        if at < 0:
            return None
        pid, _, _ = _pid_and_comm(text[at + len(": OOM victim ") :], ")" + _SKIPPED, text)
        return OomSkipped(pid=pid)
    if text.endswith(_CHOICE):
        at = text.find(": Kill process ")
        if at < 0:
            return None
        pid, _, _ = _pid_and_comm(text[at + len(": Kill process ") :], ") score ", text)
        return OomChoice(context=text[:at], pid=pid)
    at = text.find(_INVOKED)
    if at > 0:
        return OomInvoked(comm=text[:at])
    return None


# --- reports -------------------------------------------------------------------------------------


class OomReports:
    """Pairs the lines of the kernel's OOM reports into ``KernelOomKill`` records. Pure: feed it
    records in the order the kernel logged them; ``add`` returns the kills each one completes.

    A Killed line completes a report, with the summary printed just before it when there is
    one (the same pid, or a thread of it: the kernel names the thread that still holds the
    mm). After a ``memory.oom.group`` line, the Killed lines of the other members carry the
    group and the OOM's constraint and memcg; the victim, which the kernel kills a second
    time as a member, is reported once.
    """

    def __init__(self) -> None:
        self.malformed = 0  # OOM-report lines that did not read as the kernel prints them
        self._summary: Optional[OomSummary] = None  # printed, its Killed line not yet seen
        self._event: Optional[OomSummary] = None  # the summary of the report being printed
        self._group: Optional[str] = None
        self._choice: Optional[str] = None  # 4.19's reason, for its Killed line without one
        self._killed: set[int] = set()  # pids reported in this report
        self._last_us = 0  # when the report's last line was logged
        self._fragment: Optional[KmsgRecord] = None  # a summary cut into pr_cont() pieces

    def add(self, record: KmsgRecord) -> list[KernelOomKill]:
        if record.facility != LOG_KERN:
            return []
        out: list[KernelOomKill] = []
        if record.flags in ("c", "+") and self._fragment is not None:
            # the rest of a summary that another CPU's printk cut short (kernels before 5.10
            # store such pieces as records of their own, flagged "c")
            joined = self._fragment.text + record.text
            if len(joined) > RECORD_MAX:
                self._fragment = None
                self.malformed += 1
                return out
            self._fragment = _with_text(self._fragment, joined)
            if not _ends_summary(joined):
                return out
            record, self._fragment = self._fragment, None
        elif record.text.startswith(_SUMMARY) and not _ends_summary(record.text):
            self._fragment = record
            return out
        try:
            line = parse_oom_line(record.text)
        except ParseError:
            self.malformed += 1
            return out
        if line is None:
            return out
        if self._fragment is not None:  # the report went on without the summary's end
            self._fragment = None
            self.malformed += 1
        if self._last_us and record.time_us - self._last_us > EVENT_WINDOW_US:
            self._new_report()
        self._last_us = record.time_us
        if isinstance(line, OomInvoked):
            self._new_report()
            self._last_us = record.time_us
        elif isinstance(line, OomSummary):
            self._new_report()
            self._last_us = record.time_us
            self._summary = line
            self._event = line
        elif isinstance(line, OomSkipped):
            self._summary = None
        elif isinstance(line, OomGroup):
            self._group = line.memcg
        elif isinstance(line, OomChoice):
            self._choice = line.context
        elif isinstance(line, OomKilled):
            kill = self._killed_line(line, record)
            if kill is not None:
                out.append(kill)
        return out

    def _new_report(self) -> None:
        self._summary = self._event = self._group = self._choice = None
        self._killed = set()
        self._last_us = 0

    def _killed_line(self, line: OomKilled, record: KmsgRecord) -> Optional[KernelOomKill]:
        context = line.context if line.context or self._choice is None else self._choice
        summary, task_memcg, group = self._summary, None, None
        if summary is not None:
            self._summary = None
            if summary.pid == line.pid:  # the comm is now known: split the summary exactly
                with contextlib.suppress(ParseError):  # then the split without it stands
                    summary = parse_oom_summary(summary.body, comm=line.comm)
            task_memcg = summary.task_memcg
        elif self._group is not None:
            if line.pid in self._killed:
                return None  # the victim again, killed as a member of its group
            summary, group = self._event, self._group
        self._killed.add(line.pid)
        if len(self._killed) > 100_000:  # a group of that many is no report to remember whole
            self._killed.clear()
        return KernelOomKill(
            pid=line.pid,
            comm=line.comm,
            context=context,
            kernel_time_us=record.time_us,
            seq=record.seq,
            total_vm_bytes=line.total_vm_bytes,
            anon_rss_bytes=line.anon_rss_bytes,
            file_rss_bytes=line.file_rss_bytes,
            shmem_rss_bytes=line.shmem_rss_bytes,
            uid=line.uid if line.uid is not None else (summary.uid if summary is not None else None),
            pgtables_bytes=line.pgtables_bytes,
            oom_score_adj=line.oom_score_adj,
            constraint=summary.constraint if summary is not None else None,
            oom_memcg=summary.oom_memcg if summary is not None else None,
            task_memcg=task_memcg,
            cpuset=summary.cpuset if summary is not None else None,
            oom_group_memcg=group,
        )


def _ends_summary(text: str) -> bool:
    """True when a summary line has its last piece (``,pid=N,uid=N``)."""
    head, sep, uid = text.rpartition(",uid=")
    return bool(sep) and uid.lstrip("-").isascii() and uid.lstrip("-").isdigit() and ",pid=" in head


def _with_text(record: KmsgRecord, text: str) -> KmsgRecord:
    return KmsgRecord(
        facility=record.facility,
        level=record.level,
        seq=record.seq,
        time_us=record.time_us,
        flags=record.flags,
        text=text,
        fields=record.fields,
    )


def oom_kills(records: Iterable[KmsgRecord]) -> list[KernelOomKill]:
    """Every kill reported in ``records`` (a recorded log, read whole)."""
    reports = OomReports()
    return [kill for record in records for kill in reports.add(record)]


# --- the follower --------------------------------------------------------------------------------


class KmsgFollower:
    """Follows the kernel log for OOM kills.

    On the live machine: /dev/kmsg opened ``O_RDONLY|O_NONBLOCK`` and moved to its end
    (SEEK_END: only records logged from now on). ``fileno()`` is the descriptor to poll() for
    POLLIN; ``read()`` drains what is there without blocking and returns the kills it
    completes. A reader that fell behind gets EPIPE once (the kernel overwrote records it had
    not read, and moves it to the oldest one it still has); the loss is counted in
    ``overruns`` and, from the gap in sequence numbers, in ``lost_records``.

    Under a fake root the path is a regular file of recorded records, read from its start and
    then followed as it grows (tests append to it); ``fileno()`` is None there, since a regular
    file always polls readable: call ``read()`` each tick instead.

    ``from_start`` reads the live log from its oldest record still held instead (read_logged_kills).
    """

    def __init__(self, host: Host, max_records: int = 4096, from_start: bool = False) -> None:
        self.path = host.kmsg_path()
        self.live = host.is_live
        self.from_start = from_start
        self.max_records = max_records  # per read(): a log flood must not hold the loop
        self.reports = OomReports()
        self.overruns = 0  # EPIPE: records overwritten before guardian read them
        self.lost_records = 0  # how many, from the gaps in sequence numbers
        self.malformed = 0  # reads that were no /dev/kmsg record
        self.records = 0  # records read
        self.last_seq: Optional[int] = None
        self._fd: Optional[int] = None
        self._partial = b""

    def open(self) -> None:
        """Open the log; Unavailable (with the reason) where it cannot be read: no /dev/kmsg,
        or kernel.dmesg_restrict without CAP_SYSLOG (EPERM)."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise Unavailable("kernel log", f"{shown(self.path)}: {exc.strerror or exc}") from None
        if self.live and not self.from_start:
            try:
                os.lseek(fd, 0, os.SEEK_END)
            except OSError as exc:
                os.close(fd)
                raise Unavailable("kernel log", f"{shown(self.path)}: {exc.strerror or exc}") from None
        self._fd = fd

    def fileno(self) -> Optional[int]:
        """The descriptor to poll() for POLLIN, or None (not open, or a recorded file)."""
        return self._fd if self.live else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> KmsgFollower:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> list[KernelOomKill]:
        """The kills completed by the records available now (never blocks)."""
        if self._fd is None:
            return []
        return self._read_device() if self.live else self._read_file()

    def _read_device(self) -> list[KernelOomKill]:
        assert self._fd is not None
        kills: list[KernelOomKill] = []
        for _ in range(self.max_records):
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self.overruns += 1
                    continue
                self.malformed += 1  # EINVAL (a record larger than the buffer) or worse
                break
            if not data:
                break
            kills += self._record(data)
        return kills

    def _read_file(self) -> list[KernelOomKill]:
        assert self._fd is not None
        chunks = [self._partial]
        while True:
            chunk = os.read(self._fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        records, self._partial = split_records(b"".join(chunks))
        kills: list[KernelOomKill] = []
        for data in records:
            kills += self._record(data)
        return kills

    def _record(self, data: bytes) -> list[KernelOomKill]:
        try:
            record = parse_kmsg_record(data)
        except ParseError:
            self.malformed += 1
            return []
        self.records += 1
        if self.last_seq is not None and record.seq > self.last_seq + 1:
            self.lost_records += record.seq - self.last_seq - 1
        self.last_seq = record.seq
        return self.reports.add(record)


def read_logged_kills(host: Host, max_records: int = 1 << 20) -> list[KernelOomKill]:
    """The OOM kills reported in the records the kernel log holds now, oldest first (what
    ``guardian status`` shows; a read of the log, nothing else). Unavailable where the log
    cannot be read."""
    with KmsgFollower(host, max_records=max_records, from_start=True) as follower:
        return follower.read()
