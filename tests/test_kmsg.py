"""The kernel log: /dev/kmsg records, the OOM-kill report lines of 4.19 to 6.18, their pairing,
and the follower on a recorded file (tests/fixtures/kmsg/README says where each line comes from).
The live follower is in test_kmsg_live.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from support.kmsglog import KMSG_FIXTURES, dmesg_blocks, dmesg_records, kmsg_line

from guardian.errors import ParseError, Unavailable
from guardian.host import Host
from guardian.records import OOM_CONSTRAINTS, KernelOomKill, KmsgRecord
from guardian.sources import kmsg
from guardian.sources.kmsg import (
    KmsgFollower,
    OomGroup,
    OomInvoked,
    OomKilled,
    OomReaped,
    OomReports,
    OomSkipped,
    OomSummary,
    oom_kills,
    parse_kmsg_record,
    parse_oom_line,
    parse_oom_summary,
    split_records,
)

KiB = 1024


def _kmsg_fixture(name: str) -> list[KmsgRecord]:
    records, rest = split_records((KMSG_FIXTURES / name).read_bytes())
    assert rest == b""
    return [parse_kmsg_record(r) for r in records]


def _dmesg_fixture(name: str) -> list[KmsgRecord]:
    return dmesg_records((KMSG_FIXTURES / name).read_text())


def _record(
    text: str, seq: int = 1, time_us: int = 1_000_000, flags: str = "-", facility: int = 0
) -> KmsgRecord:
    return KmsgRecord(facility, 6, seq, time_us, flags, text)


def _kills(*texts: str, step_us: int = 10) -> list[KernelOomKill]:
    return oom_kills(_record(t, i, 1_000_000 + i * step_us) for i, t in enumerate(texts, 1))


# --- records ---------------------------------------------------------------------------------------


def test_record_header_and_message() -> None:
    record = parse_kmsg_record(
        b"3,3066,16276056770,-;Memory cgroup out of memory: Killed process 29889 (python) total-vm:1kB\n"
    )
    assert (record.facility, record.level, record.seq, record.time_us, record.flags) == (
        0,
        3,
        3066,
        16276056770,
        "-",
    )
    assert record.text.startswith("Memory cgroup out of memory: Killed process 29889")
    assert dict(record.fields) == {}


def test_record_fields_after_flags_and_dictionary_lines_are_read_as_the_abi_says() -> None:
    """CONFIG_PRINTK_CALLER adds ``caller=T123`` after FLAGS; dev_printk() adds `` KEY=VALUE``
    lines. Userspace writes (facility 1 here) keep their facility."""
    record = parse_kmsg_record(b"14,7,100,-,caller=T42;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n")
    assert (record.facility, record.level, record.text) == (1, 6, "usb 1-1: new device")
    assert dict(record.fields) == {"SUBSYSTEM": "usb", "DEVICE": "c189:1"}


def test_record_escapes_give_back_the_bytes() -> None:
    """printk writes bytes below 0x20, above 0x7e and the backslash as \\xNN: a comm or a cgroup
    name comes back as the bytes the process chose (UTF-8 decoded, other bytes as surrogates)."""
    record = parse_kmsg_record(b"6,1,1,-;a\\x0ab \\xc3\\xa9 \\x5cx41 \\xff \\xZZ\n")
    assert record.text == "a\nb \u00e9 \\x41 \udcff \\xZZ"
    assert os.fsencode(record.text) == b"a\nb \xc3\xa9 \\x41 \xff \\xZZ"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"6,1,1,-", "no ';'"),
        (b"6,1,1;x", "header has 3 fields"),
        (b"6,x,1,-;x", "sequence number"),
        (b"-6,1,1,-;x", "priority"),
        (b"6,1," + b"9" * 21 + b",-;x", "timestamp"),
        (b"6,1,\xd9\xa1,-;x", "timestamp"),  # an Arabic-Indic one, which int() would take
        (b"6,1,1,-;x\nnot a dictionary line", "dictionary"),
        (b"6,1,1,-;" + b"x" * 20000, "more than a record"),
    ],
)
def test_what_is_no_record_raises_parse_error(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_kmsg_record(data)


def test_split_records_keeps_dictionary_lines_and_an_unfinished_line() -> None:
    records, rest = split_records(b"6,1,1,-;a\n SUBSYSTEM=x\n6,2,2,-;b\n6,3,3,-;unfini")
    assert records == [b"6,1,1,-;a\n SUBSYSTEM=x", b"6,2,2,-;b"]
    assert rest == b"6,3,3,-;unfini"
    assert split_records(b"no newline yet") == ([], b"no newline yet")


# --- the lines -------------------------------------------------------------------------------------

KILLED_6X = (
    "Memory cgroup out of memory: Killed process 29889 (python) total-vm:137100kB, anon-rss:127616kB, "
    "file-rss:6032kB, shmem-rss:0kB, UID:0 pgtables:316kB oom_score_adj:0"
)
SUMMARY_6X = (
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/guardian-test-30351-d5ad5646,task_memcg=/guardian-test-30351-d5ad5646,task=python,pid=29889,uid=0"
)


def test_killed_line() -> None:
    assert parse_oom_line(KILLED_6X) == OomKilled(
        context="Memory cgroup out of memory",
        pid=29889,
        comm="python",
        total_vm_bytes=137100 * KiB,
        anon_rss_bytes=127616 * KiB,
        file_rss_bytes=6032 * KiB,
        shmem_rss_bytes=0,
        uid=0,
        pgtables_bytes=316 * KiB,
        oom_score_adj=0,
    )


def test_summary_line() -> None:
    summary = parse_oom_line(SUMMARY_6X)
    assert isinstance(summary, OomSummary)
    assert (summary.constraint, summary.nodemask, summary.cpuset, summary.mems_allowed) == (
        "CONSTRAINT_MEMCG",
        "(null)",
        "/",
        "0",
    )
    assert not summary.global_oom
    assert summary.oom_memcg == summary.task_memcg == "/guardian-test-30351-d5ad5646"
    assert (summary.comm, summary.pid, summary.uid) == ("python", 29889, 0)


def test_other_report_lines() -> None:
    assert parse_oom_line(
        "oom_reaper: reaped process 63214 (uwsgi), now anon-rss:0kB, file-rss:0kB, shmem-rss:92kB"
    ) == OomReaped(63214, "uwsgi", 0, 0, 92 * KiB)
    assert parse_oom_line(
        "Tasks in /system.slice/pool.service are going to be killed due to memory.oom.group set"
    ) == OomGroup("/system.slice/pool.service")
    assert parse_oom_line(
        "Memory cgroup out of memory: OOM victim 309 (e2e-hog) is already exiting. Skip killing the task"
    ) == OomSkipped(309)
    assert parse_oom_line(
        "python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"
    ) == OomInvoked("python")
    for other in (
        "",
        "Call Trace:",
        "oom_reaper: unable to reap pid:12 (x)",
        "Out of memory and no killable processes...",
    ):
        assert parse_oom_line(other) is None


def test_a_line_that_only_mentions_a_kill_is_not_one() -> None:
    assert parse_oom_line("myfs: Killed process 12 (x) total-vm:1kB, anon-rss:1kB, file-rss:1kB") is None
    assert parse_oom_line('audit: comm="Killed process 1 (x)"') is None


@pytest.mark.parametrize(
    "line",
    [
        "Out of memory: Killed process x (python) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB",
        "Out of memory: Killed process 12 (python) anon-rss:1kB, file-rss:1kB",
        "Out of memory: Killed process 12 (python) total-vm:1kB, anon-rss:-1kB, file-rss:1kB",
        "Out of memory: Killed process 12 (python) total-vm:1MB, anon-rss:1kB, file-rss:1kB",
        "Out of memory: Killed process 12 (python) total-vm:26,184,840kB, anon-rss:153,700,88kB, file-rss:0kB",
        "Out of memory: Killed process 12 python total-vm:1kB",
        "Out of memory: Killed process " + "9" * 21 + " (x) total-vm:1kB, anon-rss:1kB, file-rss:1kB",
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),global_oom,task=x,pid=1",
        "oom-kill:nodemask=(null),global_oom,task=x,pid=1,uid=0",
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=x,pid=1,uid=0",
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),global_oom,task=x,pid=-1,uid=0",
        "oom_reaper: reaped process 1 (x), now anon-rss:0kB",
    ],
)
def test_a_malformed_report_line_raises_parse_error(line: str) -> None:
    with pytest.raises(ParseError):
        parse_oom_line(line)


def test_hostile_comm_cannot_move_the_numbers() -> None:
    """A comm is whatever the process set (15 bytes); the Killed line is read from both ends."""
    comm = ") total-vm:9kB"
    line = KILLED_6X.replace("(python)", f"({comm})")
    killed = parse_oom_line(line)
    assert isinstance(killed, OomKilled)
    assert (killed.pid, killed.comm, killed.total_vm_bytes) == (29889, comm, 137100 * KiB)


def test_names_with_commas_and_keys_split_on_the_kernels_structure() -> None:
    """Nothing in the summary line is escaped: a cpuset named ",oom_memcg=/x", a cgroup named
    "a,task_memcg=/b" and a comm holding ",task=" are split where the kernel's own text is."""
    body = (
        "constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=evil,oom_memcg=/x,mems_allowed=0,"
        "oom_memcg=/a,task_memcg=/b,task_memcg=/a,task_memcg=/b/leaf,task=x,task=y,pid=7,uid=1000"
    )
    summary = parse_oom_summary(body, comm="x,task=y")
    assert summary.cpuset == "evil,oom_memcg=/x"
    assert summary.mems_allowed == "0"
    assert (summary.oom_memcg, summary.task_memcg) == ("/a,task_memcg=/b", "/a,task_memcg=/b/leaf")
    assert (summary.comm, summary.pid, summary.uid) == ("x,task=y", 7, 1000)
    # paired with its Killed line, the report takes the comm from there
    killed = KILLED_6X.replace("29889 (python)", "7 (x,task=y)")
    (kill,) = _kills("oom-kill:" + body, killed)
    assert (kill.comm, kill.task_memcg) == ("x,task=y", "/a,task_memcg=/b/leaf")


# --- recorded reports --------------------------------------------------------------------------------


def test_linux_6_18_memcg_reports_recorded_from_dev_kmsg() -> None:
    kills = oom_kills(_kmsg_fixture("linux-6.18-memcg.kmsg"))
    assert [(k.pid, k.seq) for k in kills] == [(29889, 3066), (18443, 3146)]
    first = kills[0]
    killed = parse_oom_line(KILLED_6X)
    assert isinstance(killed, OomKilled)
    assert first == KernelOomKill(
        **dataclasses.asdict(killed),
        kernel_time_us=16276056770,
        seq=3066,
        constraint="CONSTRAINT_MEMCG",
        oom_memcg="/guardian-test-30351-d5ad5646",
        task_memcg="/guardian-test-30351-d5ad5646",
        cpuset="/",
        oom_group_memcg=None,
    )
    assert first.memcg_oom


def test_linux_6_1_global_oom() -> None:
    kills = oom_kills(_dmesg_fixture("linux-6.1-none-desktop.dmesg"))
    assert [(k.pid, k.comm, k.uid, k.task_memcg) for k in kills] == [
        (290, "editor", 1000, "/user.slice/user-1000.slice/editor.service"),
        (327, "renderer", 1000, "/user.slice/user-1000.slice/browser.service"),
    ]
    for kill in kills:
        assert (kill.constraint, kill.oom_memcg, kill.context) == ("CONSTRAINT_NONE", None, "Out of memory")
        assert not kill.memcg_oom
    assert kills[0].anon_rss_bytes == 362504 * KiB


def test_linux_6_1_memcg_oom_in_two_services() -> None:
    kills = oom_kills(_dmesg_fixture("linux-6.1-earlyoom-many-procs.dmesg"))
    assert [(k.pid, k.oom_memcg, k.task_memcg) for k in kills] == [
        (302, "/system.slice/fleet-group.service", "/system.slice/fleet-group.service"),
        (309, "/system.slice/fleet-proc.service", "/system.slice/fleet-proc.service"),
    ]


def test_linux_6_1_oom_group_kill_is_reported_once_per_process() -> None:
    """The victim (307) is killed a second time as a member of its memory.oom.group: one report.
    308 is a member; 309 and 310 were already exiting and are not reported."""
    kills = oom_kills(_dmesg_fixture("linux-6.1-nohang-oom-group.dmesg"))
    assert [(k.pid, k.task_memcg, k.oom_group_memcg) for k in kills] == [
        (307, "/system.slice/pool.service", None),
        (308, None, "/system.slice/pool.service"),
    ]
    assert all(
        k.constraint == "CONSTRAINT_MEMCG" and k.oom_memcg == "/system.slice/pool.service" for k in kills
    )


# --- constructed reports, one per format -------------------------------------------------------------

BLOCKS = dmesg_blocks((KMSG_FIXTURES / "constructed.dmesg").read_text())


def _one(label: str) -> KernelOomKill:
    (kill,) = oom_kills(BLOCKS[label])
    return kill


def test_every_constructed_block_is_tested() -> None:
    assert set(BLOCKS) == {"4.19", "5.0", "5.1", "5.3", "5.4.0", "5.10", "5.15", "6.6", "RHEL 7"}


def test_4_19_and_rhel_7_killed_line_takes_the_reason_of_the_choice_line() -> None:
    kill = _one("4.19")
    assert (kill.pid, kill.context, kill.constraint, kill.uid, kill.oom_score_adj) == (
        4243,
        "Memory cgroup out of memory",
        None,
        None,
        None,
    )
    assert kill.memcg_oom and kill.shmem_rss_bytes == 0 and kill.anon_rss_bytes == 262184 * KiB
    rhel = _one("RHEL 7")
    assert (rhel.pid, rhel.uid, rhel.shmem_rss_bytes, rhel.context) == (
        4900,
        0,
        None,
        "Memory cgroup out of memory",
    )


def test_5_0_to_5_4_killed_line_fields_as_they_were_added() -> None:
    assert (_one("5.0").oom_memcg, _one("5.0").task_memcg, _one("5.0").uid) == ("/test", "/test/leaf", 1000)
    assert (_one("5.1").context, _one("5.1").uid) == ("Out of memory", 1000)  # from the summary
    assert _one("5.3").pgtables_bytes is None
    old = _one("5.4.0")
    assert (old.uid, old.oom_score_adj) == (1000, 0)
    assert old.pgtables_bytes == 1269760 * KiB  # 5.4.0 printed bytes: read as printed


def test_5_x_and_6_x_constraints_and_kernels_without_cpusets() -> None:
    cpuset = _one("5.10")
    assert (cpuset.constraint, cpuset.cpuset, cpuset.oom_memcg) == ("CONSTRAINT_CPUSET", "pinned", None)
    policy = _one("5.15")
    assert (policy.constraint, policy.pid, policy.uid, policy.oom_score_adj) == (
        "CONSTRAINT_MEMORY_POLICY",
        4194303,
        1000000,
        -500,
    )
    plain = _one("6.6")
    assert (plain.constraint, plain.cpuset, plain.task_memcg) == ("CONSTRAINT_NONE", None, "/")
    assert plain.context == "Out of memory (oom_kill_allocating_task)"
    assert {k.constraint for k in (cpuset, policy, plain)} < set(OOM_CONSTRAINTS)


def test_summary_keys_of_a_mempolicy_oom() -> None:
    summary = parse_oom_line(BLOCKS["5.15"][1].text)
    assert isinstance(summary, OomSummary)
    assert (summary.nodemask, summary.mems_allowed, summary.global_oom) == ("0-1,3", "0-3", True)


# --- pairing -------------------------------------------------------------------------------------------


def test_without_summary_the_killed_line_alone_is_reported() -> None:
    """dump_header() is rate-limited: a report may be the Killed line alone."""
    (kill,) = _kills(KILLED_6X)
    assert (kill.pid, kill.constraint, kill.oom_memcg, kill.task_memcg) == (29889, None, None, None)
    assert kill.memcg_oom  # from the reason


def test_a_summary_pairs_with_the_thread_the_kernel_names() -> None:
    """__oom_kill_process() prints the thread that still holds the mm, which may not be the
    chosen pid; the two lines still belong to one report (oom_lock)."""
    (kill,) = _kills(SUMMARY_6X, KILLED_6X.replace("29889", "29901"))
    assert (kill.pid, kill.task_memcg) == (29901, "/guardian-test-30351-d5ad5646")


def test_a_summary_whose_victim_was_exiting_does_not_pair_with_the_next_kill() -> None:
    lines = (
        SUMMARY_6X,
        "Memory cgroup out of memory: OOM victim 29889 (python) is already exiting. Skip killing the task",
        KILLED_6X.replace("29889", "40000"),
    )
    (kill,) = _kills(*lines)
    assert (kill.pid, kill.task_memcg, kill.constraint) == (40000, None, None)


def test_group_members_after_the_window_are_not_members() -> None:
    group = "Tasks in /a are going to be killed due to memory.oom.group set"
    member = KILLED_6X.replace("29889", "50000")
    kills = _kills(SUMMARY_6X, KILLED_6X, group, member, step_us=10)
    assert kills[1].oom_group_memcg == "/a"
    late = _kills(SUMMARY_6X, KILLED_6X, group, member, step_us=2_000_000)
    assert late[1].oom_group_memcg is None and late[1].constraint is None


def test_records_userspace_wrote_are_not_kernel_kills() -> None:
    """/dev/kmsg gives what userspace writes facility LOG_USER or above: no forged kill."""
    forged = [_record(SUMMARY_6X, 1, facility=1), _record(KILLED_6X, 2, facility=1)]
    assert oom_kills(forged) == []


def test_a_summary_cut_into_continuation_records_is_joined() -> None:
    """Before 5.10, another CPU's printk could cut the pr_cont() pieces of the summary into
    records of their own, flagged 'c'; lines of other CPUs may come between."""
    first, rest = SUMMARY_6X.split(",oom_memcg=")
    middle, last = ("," + "oom_memcg=" + rest).split(",task=")
    records = [
        _record(first, 1),
        _record("eth0: link up", 2),
        _record(middle, 3, flags="c"),
        _record(",task=" + last, 4, flags="c"),
        _record(KILLED_6X, 5),
    ]
    (kill,) = oom_kills(records)
    assert (kill.constraint, kill.oom_memcg) == ("CONSTRAINT_MEMCG", "/guardian-test-30351-d5ad5646")


def test_an_unfinished_summary_is_dropped_and_counted() -> None:
    reports = OomReports()
    assert reports.add(_record(SUMMARY_6X.split(",oom_memcg=", maxsplit=1)[0], 1)) == []
    (kill,) = reports.add(_record(KILLED_6X, 2))
    assert kill.constraint is None
    assert reports.malformed == 1


def test_malformed_lines_are_counted_and_the_rest_goes_on() -> None:
    reports = OomReports()
    assert reports.add(_record("Out of memory: Killed process x (y) total-vm:1kB", 1)) == []
    assert len(reports.add(_record(KILLED_6X, 2))) == 1
    assert reports.malformed == 1


# --- the follower on a recorded file -------------------------------------------------------------------


def _fake_root(tmp_path: Path, data: bytes) -> Host:
    (tmp_path / "dev").mkdir(parents=True, exist_ok=True)
    (tmp_path / "dev/kmsg").write_bytes(data)
    return Host(tmp_path)


def test_follower_reads_a_recorded_file_then_what_is_appended(tmp_path: Path) -> None:
    host = _fake_root(tmp_path, (KMSG_FIXTURES / "linux-6.18-memcg.kmsg").read_bytes())
    with KmsgFollower(host) as follower:
        assert follower.fileno() is None  # a regular file always polls readable
        assert [k.pid for k in follower.read()] == [29889, 18443]
        assert follower.read() == []
        assert (follower.lost_records, follower.malformed, follower.last_seq) == (0, 0, 3146)
        later = dmesg_records((KMSG_FIXTURES / "linux-6.1-earlyoom-many-procs.dmesg").read_text(), 3150)
        data = b"".join(kmsg_line(r) for r in later)
        cut = data.rindex(b"oom-kill:") + 20  # inside the second report
        with open(host.kmsg_path(), "ab") as log:
            log.write(data[:cut])  # the writer is in the middle of a record
            log.flush()
            assert [k.pid for k in follower.read()] == [302]  # the first report was whole
            log.write(b"garbage\n" + data[cut:])
        assert [k.pid for k in follower.read()] == [309]
        assert follower.lost_records == 3  # 3147..3149 never came
        assert follower.malformed == 1


def test_follower_without_a_log(tmp_path: Path) -> None:
    follower = KmsgFollower(Host(tmp_path))
    with pytest.raises(Unavailable, match="kernel log"):
        follower.open()
    assert follower.read() == []


class _Device:
    """os, with read() answering from a script of results (bytes, or an errno to raise)."""

    def __init__(self, script: list[object]) -> None:
        self.script = script

    def read(self, fd: int, size: int) -> bytes:
        if not self.script:
            raise BlockingIOError(11, "EAGAIN")
        item = self.script.pop(0)
        if isinstance(item, int):
            raise OSError(item, os.strerror(item))
        assert isinstance(item, bytes)
        return item

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


def test_device_overrun_is_counted_and_reading_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """EPIPE: the kernel overwrote records not yet read and moved the reader to the oldest
    one it has; the gap in sequence numbers says how many were lost."""
    import errno

    records = _kmsg_fixture("linux-6.18-memcg.kmsg")
    first = [kmsg_line(r) for r in records[:5]]
    report = [kmsg_line(r) for r in records if r.seq >= 3140]
    monkeypatch.setattr(kmsg, "os", _Device([*first, errno.EPIPE, *report, errno.EINTR]))
    follower = KmsgFollower(Host("/"))
    follower._fd = 99  # opened; every read is scripted
    assert [k.pid for k in follower.read()] == [18443]
    assert (follower.overruns, follower.lost_records) == (1, 3140 - 2990 - 1)
    assert follower.fileno() == 99


def test_device_read_is_bounded_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log flood cannot hold the loop: at most max_records per read()."""
    lines = [b"6,%d,1,-;spam\n" % i for i in range(10)]
    device = _Device(lines)
    monkeypatch.setattr(kmsg, "os", device)
    follower = KmsgFollower(Host("/"), max_records=4)
    follower._fd = 99
    follower.read()
    assert len(device.script) == 6 and follower.last_seq == 3
