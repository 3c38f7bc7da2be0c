"""A small machine in kernel format (FakeRoot) for the hardening tests and fuzz targets: a few
services with limits, a Kubernetes pod, a kernel thread, swap and every vm sysctl, so that every
reader, every scorer and every branch of totalpages (memcg limit, swap, swappiness) has real
files to read. Tests then break one file and check what that costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fixtures.builder import FakeRoot

MiB = 1 << 20
GiB = 1 << 30
GiB_KB = 1024 * 1024

WEB = "/system.slice/web.service"
DB = "/system.slice/db.service"
POD = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12ab_34cd.slice"
CONTAINER = f"{POD}/cri-containerd-aa.scope"

# cgroup -> (limit in bytes, [(pid, comm, rss kB, oom_score_adj)])
GROUPS: dict[str, tuple[int, list[tuple[int, str, int, int]]]] = {
    WEB: (1 * GiB, [(200, "web", 300 * 1024, 0), (201, "worker", 100 * 1024, 0)]),
    DB: (2 * GiB, [(300, "db", 600 * 1024, -500)]),
    CONTAINER: (512 * MiB, [(400, "app", 200 * 1024, 500), (401, "pause", 4 * 1024, -998)]),
}


def small_machine(path: Path, layout: str = "unified", extra: Optional[dict[str, int]] = None) -> FakeRoot:
    """A finished FakeRoot under ``path``: ``unified`` (memory on cgroup2) or ``hybrid`` (memory
    on the v1 controller, pressure and procs on cgroup2). ``extra``: more groups, path -> limit,
    each with one process (pids from 500)."""
    root = FakeRoot(path)
    root.mounts(layout)
    root.meminfo(total_kb=8 * GiB_KB, available_kb=4 * GiB_KB, swap_total_kb=2 * GiB_KB, swap_free_kb=GiB_KB)
    for resource in ("memory", "cpu", "io"):
        root.psi(resource, some=(1.5, 0.7, 0.2, 123456), full=(0.3, 0.1, 0.0, 23456))
    root.vmstat(pgscan_kswapd=100, pgsteal_kswapd=90)
    root.sysctl()
    root.zram("zram0")
    root.kthread(2, "kthreadd", ppid=0)
    root.process(
        1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope", cgroup_v1_memory="/init.scope"
    )
    groups = dict(GROUPS)
    for i, (group, limit) in enumerate(sorted((extra or {}).items())):
        groups[group] = (limit, [(500 + i, f"extra{i}", 4096, 0)])
    for group, (limit, members) in groups.items():
        for pid, comm, rss_kb, adj in members:
            root.process(
                pid, comm, rss_anon_kb=rss_kb, oom_score_adj=adj, cgroup_v2=group, cgroup_v1_memory=group
            )
        if layout == "unified":
            root.cgroup_v2(group, max=limit)
        else:
            root.cgroup_v2(group)
            root.cgroup_v1_memory(group, limit=limit)
    if layout == "unified":
        root.cgroup_v2("/init.scope")
    else:
        root.cgroup_v2("/init.scope")
        root.cgroup_v1_memory("/init.scope")
    return root.finish()


def v2_dir(root: FakeRoot, group: str) -> str:
    """The host path of a group's cgroup2 directory, for root.write()."""
    mount = root.v2_mount
    assert mount is not None
    return mount + group


def v1_dir(root: FakeRoot, group: str) -> str:
    mount = root.v1_memory_mount
    assert mount is not None
    return mount + group
