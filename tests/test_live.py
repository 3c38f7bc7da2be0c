"""Live tests on this machine's real kernel interfaces (skipped where a feature is missing)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from support.arena import Arena

from guardian.clock import Clock
from guardian.errors import Unavailable
from guardian.host import Host
from guardian.sample import Sample
from guardian.sources.processes import read_process, read_processes
from guardian.status import build_status

pytestmark = pytest.mark.live


def meminfo_kb(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def test_status_memtotal_agrees_with_proc(live_host: Host) -> None:
    report = build_status(Sample(live_host, Clock().monotonic_us()))
    assert report["memory"]["total_bytes"] == meminfo_kb("MemTotal") * 1024
    assert report["memory"]["swap_total_bytes"] == meminfo_kb("SwapTotal") * 1024


def test_status_psi_totals_never_go_backwards(live_host: Host) -> None:
    if not os.path.exists(live_host.pressure_path("memory")):
        pytest.skip("no PSI")
    clock = Clock()
    previous = None
    for _ in range(5):
        psi = build_status(Sample(live_host, clock.monotonic_us()))["psi"]["memory"]
        if previous is not None:
            assert psi["some"]["total_us"] >= previous["some"]["total_us"]
            assert psi["full"]["total_us"] >= previous["full"]["total_us"]
        previous = psi


def test_status_command_json_on_live_host() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "guardian.cli", "status", "--json", "--interval", "0.2"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(out.stdout)
    if not os.path.exists("/proc/pressure/memory"):
        assert report["psi"]["memory"] is None
        return
    live = report["psi"]["memory"]["live"]
    assert live is not None, "PSI is there: a 0.2 s interval gives a live rate"
    assert live["window_us"] >= 150_000
    assert 0.0 <= live["some_pct"] <= 100.0


def test_new_cgroup2_group_appears_with_pressure(arena: Arena, live_host: Host) -> None:
    if arena.v2_dir is None:
        pytest.skip("no cgroup2")
    report = build_status(Sample(live_host, Clock().monotonic_us()))
    entries = {e["path"]: e for e in report["cgroups"]}
    entry = entries[arena.name]
    assert entry["pressure"] is not None
    # read from the new group's own file: nothing has run in it, so nothing has stalled
    assert entry["pressure"]["some"]["total_us"] == 0
    # the arena fixture needs a memory controller, so the limit is there (v1 or cgroup2)
    assert entry["max_bytes"] == 256 * 1024 * 1024
    assert entry["headroom_bytes"] == entry["max_bytes"] - entry["current_bytes"]


def test_process_in_limited_memory_cgroup_is_attributed(arena: Arena, live_host: Host) -> None:
    child = arena.spawn("import time; x = bytearray(20 << 20); print('ready', flush=True); time.sleep(60)")
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    proc = read_process(live_host, child.pid)
    assert proc.rss_anon_bytes >= 20 << 20
    layout = live_host.cgroup_layout()
    if layout.v1_memory_mount is not None:
        assert proc.cgroup.v1_memory == arena.name
    if layout.v2_mount is not None:
        assert proc.cgroup.v2 == arena.name
    memory = Sample(live_host, 0).cgroup(arena.name).memory
    assert memory.max_bytes == 256 * 1024 * 1024
    assert memory.current_bytes is not None and memory.current_bytes >= proc.rss_anon_bytes // 2
    if arena.v2_dir is not None:
        assert child.pid in Sample(live_host, 0).cgroup(arena.name).procs


def test_process_reader_agrees_with_psutil(live_host: Host) -> None:
    """psutil reads the same files its own way: an independent check of our parsers."""
    me = read_process(live_host, os.getpid(), cmdline=True)
    ps = psutil.Process(os.getpid())
    assert me.ppid == ps.ppid()
    assert me.uid == ps.uids().real
    assert me.comm == ps.name()[:15]
    assert list(me.cmdline or ()) == ps.cmdline()
    full = ps.memory_full_info()
    assert abs(me.rss_bytes - full.rss) <= 4 << 20  # both read live, moments apart
    assert me.swap_bytes == full.swap


def test_every_process_is_read_and_kernel_threads_are_found(live_host: Host) -> None:
    procs = read_processes(live_host)
    pids = {p.pid for p in procs}
    assert os.getpid() in pids
    kthreads = [p for p in procs if p.is_kernel_thread]
    assert kthreads, "a Linux machine always has kernel threads (kthreadd)"
    assert all(p.rss_bytes == 0 for p in kthreads)
    assert not any(p.is_kernel_thread for p in procs if p.pid == os.getpid())


def test_vanishing_process_is_skipped(live_host: Host) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    procs = read_processes(live_host, [child.pid, os.getpid()])
    assert [p.pid for p in procs] == [os.getpid()]


def test_a_cgroup_removed_under_guardian_reads_as_unavailable(
    live_host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel answers ENODEV for a cgroup file whose group was removed (a descriptor held
    across the rmdir here; an open racing the removal likewise). Seen in the VM: a service that
    guardian had just killed was removed by systemd while a tick read it, and ENODEV ended the
    daemon. Both ways of reading report the group as unavailable instead."""
    layout = live_host.cgroup_layout()
    if os.geteuid() != 0 or layout.v2_mount is None:
        pytest.skip("needs root and cgroup2")
    directory = f"{live_host.cgroup_v2_dir('/')}/guardian-test-enodev-{os.getpid()}"
    os.mkdir(directory)
    try:
        procs = f"{directory}/cgroup.procs"
        before = len(os.listdir("/proc/self/fd"))
        assert live_host.read_hot(procs, "cgroup2") == ""  # the descriptor stays open
        assert len(os.listdir("/proc/self/fd")) == before + 1
        live_host.forget_hot([procs])  # what the daemon does when a watched group goes
        assert len(os.listdir("/proc/self/fd")) == before
        assert live_host.read_hot(procs, "cgroup2") == ""
        held = os.open(procs, os.O_RDONLY)
    finally:
        os.rmdir(directory)
    try:
        with pytest.raises(OSError) as raised:
            os.pread(held, 4096, 0)
        assert raised.value.errno == errno.ENODEV
    finally:
        os.close(held)
    with pytest.raises(Unavailable):
        live_host.read_hot(procs, "cgroup2")
    # through the descriptor it kept, which it then closed: the removed group is not pinned
    assert len(os.listdir("/proc/self/fd")) == before
    real_open = os.open

    def racing_open(path: str, *args: object, **kwargs: object) -> int:
        if str(path).endswith("/memory.current"):
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), path)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", racing_open)
    with pytest.raises(Unavailable, match="removed while being read"):
        live_host.read_feature(f"{live_host.cgroup_v2_dir('/')}/x/memory.current", "cgroup2")


def test_one_record_proc_files_come_whole_from_one_read(live_host: Host) -> None:
    """read_pid_file trusts a short read of stat, status, cgroup, oom_score and oom_score_adj to
    be the whole file: each reads the same as reading on to the end, for a sleeping child whose
    files do not move. smaps, made record by record (a read returns about a page of them), is
    still read whole: every mapping's record, each ending in its VmFlags line."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = f"/proc/{child.pid}"

        def whole(name: str) -> bytes:
            with open(f"{path}/{name}", "rb", buffering=0) as f:
                return b"".join(iter(lambda: f.read(7), b""))  # seven bytes at a time, to the end

        for _ in range(250):  # until it sleeps: its stat stops moving
            if whole("stat").split()[2] == b"S" and whole("stat") == whole("stat"):
                break
            time.sleep(0.02)
        for name in ("stat", "status", "cgroup", "oom_score", "oom_score_adj"):
            assert live_host.read_pid_file(child.pid, name) == whole(name), name
        smaps = live_host.read_pid_file(child.pid, "smaps").decode()
        mappings = len(whole("maps").splitlines())
        assert len(smaps) > 3 * 4096 and smaps.count("\nVmFlags:") == mappings
    finally:
        child.kill()
        child.wait()
