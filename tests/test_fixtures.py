"""The fixture roots under tests/fixtures parse with guardian's readers, and are what they claim.

Also a self-check of the builder (every eligible process's oom_score is the kernel formula of
kernel.md 1.3) and of generate.py (a fresh run is byte-identical to the committed trees).
"""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import pytest
from fixtures.builder import FakeRoot, cdiv, k8s_burstable_adj
from fixtures.generate import K8S_CAPACITY, ROOTS, generate

from guardian.errors import Unavailable
from guardian.host import Host
from guardian.records import Process
from guardian.sample import Sample
from guardian.sources import cgroups as cg
from guardian.sources.meminfo import read_meminfo, read_zram
from guardian.sources.processes import read_processes
from guardian.sources.psi import read_cgroup_pressure, read_pressure
from guardian.sources.vmstat import read_vm_sysctl, read_vmstat
from guardian.status import build_status

FIXTURES = Path(__file__).parent / "fixtures"
MODES = {"v2-systemd": "unified", "hybrid": "hybrid", "no-psi": "unified", "k8s-node": "unified"}
MiB = 1024 * 1024
GiB = 1024 * MiB


def host(name: str) -> Host:
    return Host(FIXTURES / name)


def by_pid(name: str) -> dict[int, Process]:
    return {p.pid: p for p in read_processes(host(name), oom_score=True, cmdline=True)}


def expected_oom_score(p: Process, totalpages: int) -> int:
    """kernel.md 1.3, from the Process record guardian built (not from the builder's inputs)."""
    if p.is_kernel_thread or p.is_zombie or p.is_global_init or p.oom_score_adj == -1000:
        return 0
    page = 4096
    points = (
        p.rss_anon_bytes // page
        + p.rss_file_bytes // page
        + p.rss_shmem_bytes // page
        + p.swap_bytes // page
        + p.pte_bytes // page
        + p.oom_score_adj * (totalpages // 1000)
    )
    return (1000 + cdiv(points * 1000, totalpages)) * 2 // 3


# --- every root --------------------------------------------------------------------------------


def test_the_four_roots_exist() -> None:
    assert set(ROOTS) == set(MODES)
    for name in ROOTS:
        assert (FIXTURES / name / "README").is_file()


@pytest.mark.parametrize(("name", "mode"), sorted(MODES.items()))
def test_layout(name: str, mode: str) -> None:
    layout = host(name).cgroup_layout()
    assert layout.mode == mode
    assert layout.memory_controller == ("v1" if mode == "hybrid" else "v2")


@pytest.mark.parametrize("name", ROOTS)
def test_every_process_parses(name: str) -> None:
    h = host(name)
    # read_processes skips what it cannot parse: every pid directory must come back
    assert sorted(p.pid for p in read_processes(h)) == sorted(h.pids())


@pytest.mark.parametrize("name", ROOTS)
def test_oom_score_is_the_kernel_formula(name: str) -> None:
    h = host(name)
    mem = read_meminfo(h)
    totalpages = mem.total_bytes // 4096 + mem.swap_total_bytes // 4096
    procs = read_processes(h, oom_score=True)
    eligible = 0
    for p in procs:
        assert p.oom_score == expected_oom_score(p, totalpages), p
        if p.oom_score:
            eligible += 1
    assert eligible >= 5


@pytest.mark.parametrize("name", ROOTS)
def test_cgroup_procs_match_proc_pid_cgroup(name: str) -> None:
    h = host(name)
    procs = read_processes(h)
    assert h.v2_cgroups()
    for path in h.v2_cgroups():
        listed = set(cg.read_cgroup_procs(h, path))
        members = {p.pid for p in procs if p.cgroup.v2 == path and not p.is_zombie}
        assert listed == members, path
        assert cg.read_cgroup_populated(h, path) == any(
            p.cgroup.v2 is not None and (p.cgroup.v2 + "/").startswith(path + "/") and not p.is_zombie
            for p in procs
        ), path


@pytest.mark.parametrize("name", ROOTS)
def test_status_report_builds(name: str) -> None:
    report = build_status(Sample(host(name), 0))
    assert report["cgroup_layout"]["mode"] == MODES[name]
    assert report["cgroups"]


@pytest.mark.parametrize("name", ROOTS)
def test_vmstat_and_sysctl(name: str) -> None:
    h = host(name)
    vm = read_vmstat(h)
    assert "nr_free_pages" in vm.counters
    assert len(vm.counters) > 150
    sysctl = read_vm_sysctl(h)
    assert sysctl.panic_on_oom == 0
    assert sysctl.overcommit_memory == (1 if name == "k8s-node" else 0)


def test_no_empty_directories() -> None:
    # git does not keep empty directories: a tree that relied on one would differ after checkout
    for name in ROOTS:
        for directory, dirs, files in os.walk(FIXTURES / name):
            assert dirs or files, directory


# --- v2-systemd --------------------------------------------------------------------------------


def test_v2_systemd_machine() -> None:
    h = host("v2-systemd")
    mem = read_meminfo(h)
    assert mem.total_bytes == 16318872 * 1024
    assert not mem.available_estimated
    assert mem.available_bytes == 6412840 * 1024
    assert mem.swap_total_bytes == 4194300 * 1024
    assert mem.swap_used_bytes == 2097152 * 1024
    (zram,) = read_zram(h)
    assert zram.name == "zram0" and zram.initialized and zram.disksize_bytes == 4 * GiB
    assert zram.mem_used_total_bytes == 640352256
    psi = read_pressure(h, "memory")
    assert psi.some.avg10_pct == 4.12 and psi.some.total_us == 48211337
    assert psi.full is not None and psi.full.avg300_pct == 0.20
    assert read_pressure(h, "cpu").full is not None
    assert read_vmstat(h).pgscan == 2811042 + 48213


def test_v2_systemd_processes() -> None:
    procs = by_pid("v2-systemd")
    init = procs[1]
    assert init.is_global_init and init.cgroup.v2 == "/init.scope" and init.oom_score == 0
    kthreads = [p for p in procs.values() if p.is_kernel_thread]
    assert {p.pid for p in kthreads} >= {2, 9, 45}
    assert all(p.cgroup.v2 == "/" and p.rss_bytes == 0 and p.oom_score == 0 for p in kthreads)
    assert all(p.ppid == 2 for p in kthreads if p.pid != 2)
    assert procs[9].comm == "kworker/0:0-events"
    zombie = procs[30512]
    assert zombie.is_zombie and zombie.rss_bytes == 0 and zombie.oom_score == 0
    assert zombie.cgroup.v2 == "/system.slice/cron.service"
    assert procs[455].oom_score_adj == -1000 and procs[455].oom_score == 0
    assert procs[2002].comm == "(sd-pam)"
    assert procs[3170].comm == "Isolated Web Co"
    positive = {p.pid for p in procs.values() if p.oom_score_adj > 0}
    assert {1405, 1406, 3120, 3170} <= positive
    assert max(procs.values(), key=lambda p: p.rss_bytes + p.swap_bytes).pid == 3120  # firefox
    # ... but a small content process with adj 533 outranks it: adj counts in thousandths of RAM
    assert max(procs.values(), key=lambda p: p.oom_score or 0).pid == 3190
    assert procs[3120].cgroup.v2.endswith("/app.slice/app-gnome-firefox-3120.scope")  # type: ignore[union-attr]


def test_v2_systemd_cgroups() -> None:
    h = host("v2-systemd")
    nginx = cg.read_cgroup_memory(h, "/system.slice/nginx.service")
    assert nginx.source == "v2"
    assert nginx.max_bytes == 512 * MiB and nginx.high_bytes == 480 * MiB
    assert nginx.usage_pct is not None and nginx.usage_pct > 95
    assert nginx.events["high"] == 1375 and nginx.events["max"] == 42
    assert nginx.events["oom_group_kill"] == 0
    assert nginx.swap_current_bytes == (30720 + 28672) * 1024
    system = cg.read_cgroup_memory(h, "/system.slice")
    assert system.events["high"] == 1375  # memory.events is hierarchical
    assert cg.read_v2_keyed(h, "/system.slice", "memory.events.local")["high"] == 0
    assert cg.read_cgroup_memory(h, "/system.slice/postgresql.service").low_bytes == 1 * GiB
    assert cg.read_cgroup_memory(h, "/system.slice/indexer.service").oom_group is True
    assert cg.read_cgroup_memory(h, "/system.slice/sshd.service").max_bytes is None
    children = [
        "/system.slice/" + n
        for n in (
            "cron.service",
            "dbus-broker.service",
            "indexer.service",
            "nginx.service",
            "postgresql.service",
            "sshd.service",
            "systemd-journald.service",
            "systemd-udevd.service",
        )
    ]
    total = sum(cg.read_cgroup_memory(h, c).current_bytes or 0 for c in children)
    assert system.current_bytes == total
    assert set(h.v2_cgroups()) >= set(children)
    pressure = read_cgroup_pressure(h, "/system.slice/nginx.service")
    assert pressure.some.avg10_pct == 8.25
    assert cg.cgroup_kill_supported(h, "/system.slice/nginx.service")
    stat = cg.read_v2_keyed(h, "/system.slice", "memory.stat")
    assert stat["pgscan"] == 48213 + 120334  # nginx + indexer, hierarchical
    with pytest.raises(Unavailable):
        cg.read_v2_value(h, "/", "memory.current")  # the root cgroup has none


# --- hybrid ------------------------------------------------------------------------------------


def test_hybrid_machine() -> None:
    h = host("hybrid")
    layout = h.cgroup_layout()
    assert layout.v2_mount is not None and layout.v2_mount.mount_point == "/sys/fs/cgroup/unified"
    assert (
        layout.v1_memory_mount is not None and layout.v1_memory_mount.mount_point == "/sys/fs/cgroup/memory"
    )
    assert layout.v2_controllers == frozenset({"hugetlb"})
    mem = read_meminfo(h)
    assert mem.total_bytes == 24683656 * 1024 and mem.swap_total_bytes == 0
    assert mem.swap_free_pct is None
    (zram,) = read_zram(h)
    assert not zram.initialized
    assert read_pressure(h).some.avg10_pct == 2.31


def test_hybrid_processes() -> None:
    procs = by_pid("hybrid")
    hog = procs[4100]
    assert hog.cgroup.v1_memory == "/guardian-test" and hog.cgroup.v2 == "/guardian-test"
    assert hog.cgroup.v1["name=systemd"] == "/"
    assert procs[1061].cgroup.v1_memory is not None and procs[1061].cgroup.v1_memory.startswith(
        "/process_api/"
    )
    assert procs[1061].cgroup.v2 == "/"
    assert procs[1500].oom_score == 710  # the qemu of kernel.md's verification run
    assert {p.pid for p in procs.values() if p.is_kernel_thread} == {2, 3, 4, 9, 14, 15, 18, 33, 37, 45}


def test_hybrid_cgroups() -> None:
    h = host("hybrid")
    test = cg.read_cgroup_memory(h, "/guardian-test")
    assert test.source == "v1"
    assert test.max_bytes == 256 * MiB
    assert test.current_bytes == 266338304
    assert test.events["max"] == 1834 and test.events["oom_kill"] == 0 and test.events["under_oom"] == 0
    api = [p for p in h.v1_memory_cgroups() if p.startswith("/process_api/")]
    assert len(api) == 2
    for path in api:
        assert cg.read_cgroup_memory(h, path).max_bytes is None  # 9223372036854771712
    # the cgroup2 side: core files and PSI only, no memory controller
    assert h.v2_cgroups() == ["/guardian-test"]
    v2_dir = Path(h.cgroup_v2_dir("/guardian-test"))
    memory_files = sorted(f.name for f in v2_dir.iterdir() if f.name.startswith("memory."))
    assert memory_files == ["memory.pressure"]
    assert (v2_dir / "cgroup.kill").read_bytes() == b""
    with pytest.raises(Unavailable):
        cg.read_v2_memory(h, "/guardian-test")
    assert read_cgroup_pressure(h, "/guardian-test").full.avg10_pct == 30.12  # type: ignore[union-attr]
    assert cg.read_cgroup_procs(h, "/guardian-test") == [4100, 4101]
    assert cg.read_cgroup_populated(h, "/guardian-test")
    assert cg.cgroup_kill_supported(h, "/guardian-test")
    stat = cg.read_v1_keyed(h, "/guardian-test", "memory.stat")
    assert stat["hierarchical_memory_limit"] == 256 * MiB
    assert stat["total_rss"] == stat["rss"] > 0


# --- no-psi ------------------------------------------------------------------------------------


def test_no_psi_is_unavailable() -> None:
    h = host("no-psi")
    assert not (FIXTURES / "no-psi" / "proc" / "pressure").exists()
    with pytest.raises(Unavailable):
        read_pressure(h, "memory")
    assert h.v2_cgroups()
    for path in h.v2_cgroups():
        with pytest.raises(Unavailable):
            read_cgroup_pressure(h, path)


def test_no_psi_meminfo_is_estimated() -> None:
    mem = read_meminfo(host("no-psi"))
    assert mem.available_estimated
    assert "MemAvailable" not in mem.fields
    assert mem.available_bytes == mem.free_bytes + mem.cached_bytes + mem.buffers_bytes - mem.shmem_bytes


def test_no_psi_old_kernel_processes() -> None:
    text = (FIXTURES / "no-psi" / "proc" / "2" / "status").read_text()
    assert "Kthread:" not in text and "VmRSS" not in text
    procs = by_pid("no-psi")
    kthreads = {p.pid for p in procs.values() if p.is_kernel_thread}
    assert kthreads == {2, 3, 4, 9, 10, 14, 15, 33, 45, 46, 181}  # from PF_KTHREAD alone
    assert procs[1577].is_zombie
    assert procs[611].oom_score_adj == -1000
    assert procs[820].oom_score_adj == 500


def test_no_psi_old_kernel_cgroups() -> None:
    h = host("no-psi")
    hog = cg.read_cgroup_memory(h, "/system.slice/memhog.service")
    assert hog.max_bytes == 1 * GiB + 64 * MiB
    assert hog.events == {"low": 0, "high": 0, "max": 913, "oom": 2, "oom_kill": 2}  # no oom_group_kill
    assert not cg.cgroup_kill_supported(h, "/system.slice/memhog.service")


# --- k8s-node ----------------------------------------------------------------------------------


def k8s_truth() -> dict:  # type: ignore[type-arg]
    return json.loads((FIXTURES / "k8s-node" / "TRUTH.json").read_text())


def test_k8s_capacity() -> None:
    truth = k8s_truth()
    mem = read_meminfo(host("k8s-node"))
    assert truth["memoryCapacity"] == mem.total_bytes == K8S_CAPACITY
    assert mem.swap_total_bytes == 0


def test_k8s_pods_match_truth() -> None:
    truth = k8s_truth()
    h = host("k8s-node")
    procs = by_pid("k8s-node")
    capacity = truth["memoryCapacity"]
    qos_seen = {"BestEffort": 0, "Burstable": 0, "Guaranteed": 0}
    for pod in truth["pods"]:
        qos_seen[pod["qos"]] += 1
        uid_ = pod["uid"].replace("-", "_")
        assert pod["cgroup"].endswith(f"pod{uid_}.slice")
        pause = procs[pod["sandbox"]["pid"]]
        assert pause.comm == "pause" and pause.oom_score_adj == -998
        assert pause.cgroup.v2 == pod["sandbox"]["cgroup"]
        children = []
        for c in pod["containers"]:
            if pod["qos"] == "BestEffort":
                want = 1000
            elif pod["qos"] == "Guaranteed":
                want = -997
            else:
                want = k8s_burstable_adj(c["memoryRequestBytes"], capacity)
            assert c["oom_score_adj"] == want
            assert c["cgroup"].startswith(pod["cgroup"] + "/cri-containerd-")
            for pid in c["pids"]:
                assert procs[pid].oom_score_adj == want
                assert procs[pid].cgroup.v2 == c["cgroup"]
            assert sorted(cg.read_cgroup_procs(h, c["cgroup"])) == sorted(c["pids"])
            mem = cg.read_cgroup_memory(h, c["cgroup"])
            assert mem.max_bytes == c["memoryLimitBytes"]
            rss = sum(procs[pid].rss_bytes for pid in c["pids"])
            assert mem.current_bytes is not None and rss <= mem.current_bytes <= rss * 1.05
            children.append(c["cgroup"])
        children.append(pod["sandbox"]["cgroup"])
        pod_mem = cg.read_cgroup_memory(h, pod["cgroup"])
        assert pod_mem.max_bytes == pod["memoryLimitBytes"]
        assert pod_mem.current_bytes == sum(cg.read_cgroup_memory(h, c).current_bytes or 0 for c in children)
        assert sorted(pod["pids"]) == sorted(
            [pod["sandbox"]["pid"]] + [p for c in pod["containers"] for p in c["pids"]]
        )
    assert qos_seen == {"BestEffort": 2, "Burstable": 3, "Guaranteed": 2}
    for daemon in truth["nodeDaemons"]:
        assert procs[daemon["pid"]].oom_score_adj == -999
        assert procs[daemon["pid"]].cgroup.v2 == daemon["cgroup"]


def test_k8s_interesting_cases() -> None:
    truth = k8s_truth()
    h = host("k8s-node")
    procs = by_pid("k8s-node")
    pods = {p["name"]: p for p in truth["pods"]}

    def working_set(pod: dict) -> int:  # type: ignore[type-arg]
        return sum(procs[pid].rss_bytes for c in pod["containers"] for pid in c["pids"])

    api, web = pods["api-server-6f7b9"], pods["web-frontend-5c8d6"]
    assert working_set(api) > api["containers"][0]["memoryRequestBytes"]  # over its request
    assert working_set(web) < web["memoryRequestBytes"]  # under its request
    assert api["memoryLimitBytes"] is None  # one container unlimited
    assert cg.read_cgroup_memory(h, api["containers"][0]["cgroup"]).max_bytes is None
    assert web["memoryLimitBytes"] == 512 * MiB
    guaranteed = [p for p in truth["pods"] if p["qos"] == "Guaranteed"]
    besteffort = [p for p in truth["pods"] if p["qos"] == "BestEffort"]
    assert max(working_set(p) for p in guaranteed) > max(working_set(p) for p in besteffort)
    adjs = sorted(
        {c["oom_score_adj"] for p in truth["pods"] if p["qos"] == "Burstable" for c in p["containers"]}
    )
    assert len(adjs) == 4 and all(3 <= a <= 999 for a in adjs)
    assert cg.read_cgroup_memory(h, "/kubepods.slice").max_bytes == truth["kubepodsMemoryMax"]
    for pod in guaranteed:
        assert pod["cgroup"].startswith("/kubepods.slice/kubepods-pod")


def test_k8s_burstable_adj_clamps() -> None:
    c = K8S_CAPACITY
    assert k8s_burstable_adj(0, c) == 999
    assert k8s_burstable_adj(c, c) == 3
    assert k8s_burstable_adj(c // 2, c) == 500


# --- generate.py and the builder ---------------------------------------------------------------


def _assert_same_tree(left: Path, right: Path) -> None:
    cmp = filecmp.dircmp(left, right)
    assert not cmp.left_only and not cmp.right_only and not cmp.funny_files, (
        left,
        cmp.left_only,
        cmp.right_only,
    )
    _match, mismatch, errors = filecmp.cmpfiles(left, right, cmp.common_files, shallow=False)
    assert not mismatch and not errors, (left, mismatch, errors)
    for sub in cmp.common_dirs:
        _assert_same_tree(left / sub, right / sub)


def test_generate_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in ROOTS:
        _assert_same_tree(FIXTURES / name, tmp_path / name)


def test_builder_legacy_variation(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path, kernel="5.10")
    root.meminfo(4000000, 2500000)
    root.mounts("legacy")
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.process(
        300,
        "java",
        rss_anon_kb=1048576,
        rss_file_kb=4096,
        pte_kb=2048,
        oom_score_adj=100,
        cgroup_v2="/system.slice/app.service",
        cgroup_v1_memory="/system.slice/app.service",
    )
    root.kthread(2, "kthreadd", ppid=0)
    root.cgroup_v1_memory("/system.slice/app.service", limit=1536 * MiB, failcnt=3, oom_kill=1)
    root.finish()
    h = Host(tmp_path)
    assert h.cgroup_layout().mode == "legacy"
    mem = cg.read_cgroup_memory(h, "/system.slice/app.service")
    assert mem.source == "v1" and mem.max_bytes == 1536 * MiB and mem.events["oom_kill"] == 1
    assert mem.current_bytes is not None and mem.current_bytes >= 1052672 * 1024
    assert cg.read_cgroup_memory(h, "/system.slice").max_bytes is None
    with pytest.raises(Unavailable):
        read_pressure(h)
    procs = {p.pid: p for p in read_processes(h, oom_score=True)}
    assert procs[2].is_kernel_thread and procs[300].cgroup.v1_memory == "/system.slice/app.service"
    assert procs[300].cgroup.v2 is None
    totalpages = 4000000 // 4
    assert procs[300].oom_score == expected_oom_score(procs[300], totalpages) > 0


def test_a_kernel_threads_status_is_not_read(tmp_path: Path) -> None:
    """PF_KTHREAD in stat settles it: the status of a kernel thread (no memory, uid 0, no
    signals) is not read, the rest of its files are; a user process's status still is, and a
    status that does not parse still costs that process, not the kernel thread."""
    root = FakeRoot(tmp_path)
    root.meminfo(4000000, 2500000)
    root.mounts("unified")
    root.process(300, "java", rss_anon_kb=4096, cgroup_v2="/system.slice/app.service")
    root.kthread(2, "kthreadd", ppid=0)
    root.kthread(45, "kworker/0:1")
    root.finish()
    (tmp_path / "proc/45/status").write_text("not a status file\n")
    (tmp_path / "proc/300/status").write_text("not a status file either\n")
    read: list[str] = []

    class Counting(Host):
        def read_pid_file(self, pid: int, name: str) -> bytes:
            read.append(f"{pid}/{name}")
            return super().read_pid_file(pid, name)

    procs = {p.pid: p for p in read_processes(Counting(tmp_path))}
    assert sorted(procs) == [2, 45]  # 300's status does not parse: that one is skipped
    for pid in (2, 45):
        p = procs[pid]
        assert p.is_kernel_thread and p.rss_bytes == 0 and p.swap_bytes == 0 and p.uid == 0
        assert p.cgroup.v2 == "/" and p.oom_score_adj == 0 and not p.sigkill_pending
        assert f"{pid}/status" not in read and f"{pid}/stat" in read and f"{pid}/cgroup" in read
    assert "300/status" in read


def test_builder_rejects_impossible_sizes(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path)
    with pytest.raises(ValueError, match="whole 4 KiB pages"):
        root.process(10, "x", rss_anon_kb=6)  # /proc prints whole pages
    with pytest.raises(ValueError, match="oom_score_adj must be in"):
        root.process(10, "x", oom_score_adj=1001)
    root.process(10, "x", rss_anon_kb=8, oom_score_adj=1000)  # the same process, possible, is taken
