"""Pure parsers, on text in the kernel's own formats (copied from real machines)."""

from __future__ import annotations

import pytest

from guardian.errors import ParseError
from guardian.host import cgroup_layout, parse_mountinfo
from guardian.sources.cgroups import parse_cgroup_procs, parse_memory_value, parse_oom_control
from guardian.sources.meminfo import parse_meminfo, parse_zram_mm_stat
from guardian.sources.processes import parse_cmdline, parse_proc_cgroup, parse_stat, parse_status
from guardian.sources.psi import parse_pressure
from guardian.sources.vmstat import parse_flat_keyed, parse_sysctl_value, parse_vmstat

HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

UNIFIED_MOUNTINFO = """\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

LEGACY_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
"""


class TestMountinfo:
    def test_hybrid(self) -> None:
        layout = cgroup_layout(parse_mountinfo(HYBRID_MOUNTINFO), frozenset({"hugetlb"}))
        assert layout.mode == "hybrid"
        assert layout.v2_mount is not None and layout.v2_mount.mount_point == "/sys/fs/cgroup/unified"
        assert layout.v1_memory_mount is not None
        assert layout.v1_memory_mount.mount_point == "/sys/fs/cgroup/memory"
        assert layout.memory_controller == "v1"

    def test_unified_with_optional_fields(self) -> None:
        layout = cgroup_layout(parse_mountinfo(UNIFIED_MOUNTINFO), frozenset({"memory", "cpu"}))
        assert layout.mode == "unified"
        assert layout.memory_controller == "v2"

    def test_unified_without_memory_controller(self) -> None:
        layout = cgroup_layout(parse_mountinfo(UNIFIED_MOUNTINFO), frozenset({"cpu"}))
        assert layout.memory_controller is None

    def test_legacy(self) -> None:
        layout = cgroup_layout(parse_mountinfo(LEGACY_MOUNTINFO), frozenset())
        assert layout.mode == "legacy"
        assert layout.memory_controller == "v1"

    def test_none(self) -> None:
        assert cgroup_layout(parse_mountinfo(""), frozenset()).mode == "none"

    def test_octal_escapes_and_namespace_root(self) -> None:
        text = "50 31 0:40 /kubepods/pod\\040x /sys/fs/cgroup\\040two rw - cgroup2 cgroup2 rw\n"
        (mount,) = parse_mountinfo(text)
        assert mount.mount_point == "/sys/fs/cgroup two"
        assert mount.root == "/kubepods/pod x"


class TestPressure:
    def test_memory(self) -> None:
        p = parse_pressure(
            "some avg10=1.53 avg60=0.40 avg300=0.09 total=2860\n"
            "full avg10=0.25 avg60=0.00 avg300=0.00 total=2560\n"
        )
        assert p.some.avg10_pct == 1.53 and p.some.total_us == 2860
        assert p.full is not None and p.full.avg10_pct == 0.25 and p.full.total_us == 2560

    def test_cpu_without_full_line(self) -> None:
        p = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
        assert p.full is None

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
            "some avg10=0.00 avg60=0.00 total=1\n",
            "some avg10=x avg60=0.00 avg300=0.00 total=1\n",
            "some avg10 avg60=0.00 avg300=0.00 total=1\n",
        ],
    )
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ParseError):
            parse_pressure(text)


MEMINFO = """\
MemTotal:       24683656 kB
MemFree:        24053436 kB
MemAvailable:   24389388 kB
Buffers:           23852 kB
Cached:           497680 kB
Inactive(file):   330128 kB
SwapTotal:       4194300 kB
SwapFree:        1048576 kB
AnonPages:          3280 kB
Shmem:              8896 kB
PageTables:         1356 kB
CommitLimit:    12341828 kB
Committed_AS:      42052 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


class TestMeminfo:
    def test_bytes(self) -> None:
        m = parse_meminfo(MEMINFO)
        assert m.total_bytes == 24683656 * 1024
        assert m.available_bytes == 24389388 * 1024
        assert m.swap_free_pct == pytest.approx(25.0, abs=0.01)
        assert m.swap_used_bytes == (4194300 - 1048576) * 1024
        assert m.fields["HugePages_Total"] == 0  # a count, not kB
        assert m.fields["Hugepagesize"] == 2048 * 1024
        assert not m.available_estimated

    def test_without_memavailable(self) -> None:
        text = "\n".join(x for x in MEMINFO.splitlines() if not x.startswith("MemAvailable"))
        m = parse_meminfo(text)
        assert m.available_estimated
        assert m.available_bytes == (24053436 + 497680 + 23852 - 8896) * 1024

    def test_no_swap(self) -> None:
        m = parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\nMemAvailable: 60 kB\n")
        assert m.swap_free_pct is None

    def test_missing_total(self) -> None:
        with pytest.raises(ParseError, match="MemTotal"):
            parse_meminfo("MemFree: 1 kB\n")

    def test_zram(self) -> None:
        z = parse_zram_mm_stat(
            "zram0",
            "8589934592\n",
            "  4096000   1024000   1200000        0   1300000      100        0       12        0\n",
        )
        assert z.initialized and z.orig_data_bytes == 4096000 and z.mem_used_total_bytes == 1200000

    def test_zram_uninitialised(self) -> None:
        z = parse_zram_mm_stat("zram0", "0\n", "0 0 0 0 0 0 0 0 0\n")
        assert not z.initialized


class TestVmstat:
    def test_sums_per_reclaimer_not_per_type(self) -> None:
        v = parse_vmstat(
            "pgscan_kswapd 10\npgscan_direct 5\npgscan_khugepaged 1\npgscan_proactive 0\n"
            "pgscan_anon 7\npgscan_file 9\npgsteal_kswapd 8\npgsteal_direct 2\n"
            "workingset_refault_anon 3\nworkingset_refault_file 4\noom_kill 2\n"
        )
        assert v.pgscan == 16
        assert v.pgsteal == 10
        assert v.workingset_refault == 7
        assert v.oom_kill == 2

    def test_old_single_refault_counter(self) -> None:
        assert parse_vmstat("workingset_refault 42\n").workingset_refault == 42

    def test_malformed(self) -> None:
        with pytest.raises(ParseError):
            parse_flat_keyed("pgscan_kswapd ten\n", "vmstat")

    def test_sysctl(self) -> None:
        assert parse_sysctl_value("2\n", "overcommit_memory") == 2
        with pytest.raises(ParseError, match=r"vm\.panic_on_oom"):
            parse_sysctl_value("x", "panic_on_oom")


STAT_CAT = (
    "2235 (cat) R 2231 2231 1061 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 26018 3133440 382 "
    "18446744073709551615 93947528949760 93947528969641 140720333883584 0 0 0 0 0 0 0 0 0 17 1 "
    "0 0 0 0 0 93947528985648 93947528987264 93947904999424 140720333888227 140720333888247 "
    "140720333888247 140720333889515 0\n"
)

STATUS_CAT = """\
Name:	cat
Umask:	0022
State:	R (running)
Tgid:	2234
Ngid:	0
Pid:	2234
PPid:	2231
Uid:	1000	1001	1001	1001
Gid:	0	0	0	0
NStgid:	2234	7
Kthread:	0
VmPeak:	    3060 kB
VmRSS:	    1620 kB
RssAnon:	     108 kB
RssFile:	    1512 kB
RssShmem:	       0 kB
VmPTE:	      44 kB
VmSwap:	      12 kB
Threads:	1
"""

STATUS_KTHREAD_OLD = """\
Name:	kworker/0:1
State:	I (idle)
Tgid:	11
Pid:	11
PPid:	2
Uid:	0	0	0	0
Threads:	1
"""


class TestProcess:
    def test_stat(self) -> None:
        s = parse_stat(STAT_CAT)
        assert (s.pid, s.comm, s.state, s.ppid, s.starttime_ticks) == (2235, "cat", "R", 2231, 26018)
        assert not s.is_kernel_thread

    def test_stat_comm_with_spaces_and_parens(self) -> None:
        s = parse_stat(STAT_CAT.replace("(cat)", "(a) b (c))"))
        assert s.comm == "a) b (c)"
        assert s.ppid == 2231

    def test_stat_kernel_thread_flag(self) -> None:
        text = STAT_CAT.replace(" 4194304 ", f" {0x00200000 | 0x40} ")
        assert parse_stat(text).is_kernel_thread

    def test_stat_truncated(self) -> None:
        with pytest.raises(ParseError):
            parse_stat("1 (x) S 0 1")

    def test_status(self) -> None:
        s = parse_status(STATUS_CAT)
        assert s.uid_real == 1000 and s.uid_effective == 1001
        assert s.rss_bytes == 1620 * 1024
        assert s.swap_bytes == 12 * 1024 and s.pte_bytes == 44 * 1024
        assert s.kthread is False and s.has_mm
        assert s.nstgid == (2234, 7)

    def test_status_old_kernel_thread(self) -> None:
        s = parse_status(STATUS_KTHREAD_OLD)
        assert s.kthread is None  # no Kthread: line; stat flags decide
        assert not s.has_mm and s.rss_bytes == 0

    def test_status_missing_uid(self) -> None:
        with pytest.raises(ParseError):
            parse_status("Name:\tx\nTgid:\t1\n")

    def test_status_keys_are_whole_lines(self) -> None:
        """A key is found at the start of a line only: an escaped name that spells one, or a
        key that ends another (``NSpgid:`` holds ``pgid:``), is not it."""
        text = STATUS_CAT.replace("Name:\tcat", "Name:\tx\\nUid:\\t0\\t0")
        assert text != STATUS_CAT and parse_status(text).uid_real == 1000
        assert "\nVmSwap:" in STATUS_CAT
        assert parse_status(STATUS_CAT.replace("\nVmSwap:", "\nXVmSwap:")).swap_bytes == 0

    def test_status_matches_a_whole_parse_on_every_live_process(self) -> None:
        """Only the lines guardian uses are looked up; on every process of this machine that
        gives what splitting every line gives."""
        import os

        from guardian.records import ProcStatus

        def whole(text: str) -> tuple[object, ...]:
            fields = dict(line.partition(":")[::2] for line in text.split("\n"))
            kb = {
                k: int(fields[k].split()[0]) * 1024 if k in fields else 0
                for k in ("RssAnon", "RssFile", "RssShmem", "VmSwap", "VmPTE")
            }
            uids = fields["Uid"].split()
            return (
                int(fields["Tgid"]),
                int(uids[0]),
                int(uids[1]),
                *kb.values(),
                "VmRSS" in fields,
                fields.get("Kthread", "").strip() or None,
                int(fields.get("Threads", "1")),
            )

        def mine(s: ProcStatus) -> tuple[object, ...]:
            return (
                s.tgid,
                s.uid_real,
                s.uid_effective,
                s.rss_anon_bytes,
                s.rss_file_bytes,
                s.rss_shmem_bytes,
                s.swap_bytes,
                s.pte_bytes,
                s.has_mm,
                None if s.kthread is None else str(int(s.kthread)),
                s.threads,
            )

        compared = 0
        for pid in (int(n) for n in os.listdir("/proc") if n.isdigit()):
            try:
                with open(f"/proc/{pid}/status") as f:
                    text = f.read()
            except OSError:
                continue
            assert mine(parse_status(text)) == whole(text), text
            compared += 1
        assert compared > 10

    def test_cgroup_hybrid(self) -> None:
        c = parse_proc_cgroup(
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/36069ff\n2:cpu,cpuacct:/x\n0::/\n"
        )
        assert c.v2 == "/"
        assert c.v1_memory == "/process_api/36069ff"
        assert c.v1["cpuacct"] == "/x" and c.v1["name=systemd"] == "/"

    def test_cgroup_v2_only(self) -> None:
        c = parse_proc_cgroup("0::/system.slice/sshd.service\n")
        assert c.v2 == "/system.slice/sshd.service" and c.v1_memory is None

    def test_cgroup_v1_only_and_deleted(self) -> None:
        c = parse_proc_cgroup("4:memory:/gone (deleted)\n")
        assert c.v2 is None and c.v1_memory == "/gone"

    def test_cgroup_path_with_colon(self) -> None:
        assert parse_proc_cgroup("0::/a:b\n").v2 == "/a:b"

    def test_cmdline(self) -> None:
        assert parse_cmdline(b"python3\0-c\0print(1)\0") == ("python3", "-c", "print(1)")
        assert parse_cmdline(b"") == ()


class TestCgroupFiles:
    def test_memory_value(self) -> None:
        assert parse_memory_value("max\n") is None
        assert parse_memory_value("268435456\n") == 268435456
        assert parse_memory_value("9223372036854771712\n") is None  # v1 "unlimited"
        with pytest.raises(ParseError):
            parse_memory_value("lots")

    def test_events_and_oom_control(self) -> None:
        events = parse_flat_keyed("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n", "e")
        assert events == {"low": 0, "high": 12, "max": 3, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
        assert parse_oom_control("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")["oom_kill"] == 4

    def test_procs(self) -> None:
        assert parse_cgroup_procs("12\n345\n") == [12, 345]
        assert parse_cgroup_procs("") == []
