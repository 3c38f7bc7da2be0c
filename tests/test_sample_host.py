"""Sample reads lazily and once; Host is the only owner of OS paths."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import write

from guardian.errors import NoSuchProcess, Unavailable
from guardian.host import Host
from guardian.sample import Sample
from guardian.sources.processes import parse_proc_cgroup

PACKAGE = Path(__file__).parent.parent / "guardian"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path, "proc/meminfo", "MemTotal: 1000 kB\nMemFree: 500 kB\nMemAvailable: 600 kB\n")
    write(tmp_path, "proc/vmstat", "pgscan_kswapd 1\noom_kill 0\n")
    write(
        tmp_path,
        "proc/self/mountinfo",
        "35 24 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
    )
    write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    write(tmp_path, "sys/fs/cgroup/a.slice/memory.current", "100\n")
    write(tmp_path, "sys/fs/cgroup/a.slice/memory.max", "max\n")
    return tmp_path


def test_nothing_is_read_until_asked(root: Path) -> None:
    sample = Sample(Host(root), 0)
    assert sample.reads == []
    assert sample.meminfo.available_bytes == 600 * 1024
    assert sample.reads == ["meminfo"]


def test_each_thing_is_read_once_per_sample(root: Path) -> None:
    sample = Sample(Host(root), 0)
    first = sample.meminfo
    (root / "proc/meminfo").write_text("MemTotal: 9 kB\nMemFree: 1 kB\nMemAvailable: 1 kB\n")
    assert sample.meminfo is first  # the snapshot does not change within a tick
    assert sample.cgroup("/a.slice") is sample.cgroup("/a.slice")
    assert sample.cgroup("/a.slice").memory.current_bytes == 100
    assert sample.cgroup("/a.slice").memory.current_bytes == 100
    assert sample.reads == ["meminfo", "cgroup:/a.slice:memory"]
    # the next tick sees the change
    assert Sample(Host(root), 1).meminfo.total_bytes == 9 * 1024


def test_missing_feature_is_remembered(root: Path) -> None:
    sample = Sample(Host(root), 0)
    for _ in range(3):
        with pytest.raises(Unavailable, match="PSI"):
            sample.pressure("memory")
    assert sample.reads == ["psi:memory"]
    assert sample.pressure_or_none("memory") is None


def test_sample_is_immutable(root: Path) -> None:
    sample = Sample(Host(root), 0)
    with pytest.raises(AttributeError):
        sample.time_us = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        sample.cgroup("/a.slice").path = "/b"  # type: ignore[misc]
    assert sample.time_us == 0 and sample.cgroup("/a.slice").path == "/a.slice"  # both still there


def test_host_resolves_everything_under_its_root(root: Path) -> None:
    host = Host(root)
    assert host.meminfo_path() == f"{root}/proc/meminfo"
    assert host.cgroup_v2_dir("/a.slice") == f"{root}/sys/fs/cgroup/a.slice"
    assert host.cgroup_v2_dir("/") == f"{root}/sys/fs/cgroup"
    assert host.v2_cgroups() == ["/a.slice"]
    assert not host.is_live and Host("/").is_live


def test_namespaced_mount_root_is_stripped(tmp_path: Path) -> None:
    write(
        tmp_path,
        "proc/self/mountinfo",
        "35 24 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    )
    host = Host(tmp_path)
    assert host.cgroup_v2_dir("/kubepods/pod1/ctr") == f"{tmp_path}/sys/fs/cgroup/ctr"


def test_host_tree_bound_into_a_private_cgroup_namespace(tmp_path: Path) -> None:
    """A container three levels down with its own cgroup namespace, the host's cgroup tree
    bind-mounted over the runtime's /sys/fs/cgroup: the kernel prints the bind's root and every
    host process's cgroup with a ``..`` per level above the namespace. Paths come out as the
    host names them, and the directories are the host's."""
    write(
        tmp_path,
        "proc/self/mountinfo",
        "35 24 0:30 / /sys/fs/cgroup ro shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
        "36 35 0:30 /../../.. /sys/fs/cgroup ro - cgroup2 cgroup2 rw,nsdelegate\n"
        "37 36 0:30 /../../../kubepods.slice /sys/fs/cgroup/kubepods.slice rw - cgroup2 cgroup2 rw\n",
    )
    write(tmp_path, "proc/300/cgroup", "0::/../../../system.slice/kubelet.service\n")
    write(
        tmp_path,
        "proc/301/cgroup",
        "0::/../../../kubepods.slice/kubepods-pod1.slice/cri-containerd-a.scope\n",
    )
    write(tmp_path, "proc/302/cgroup", "0::/\n")  # guardian's own container
    write(tmp_path, "proc/303/cgroup", "0::/../pause.scope\n")  # beside it, in guardian's pod
    host = Host(tmp_path)
    assert host.cgroupns_above() == "/../../.."
    assert host.cgroup_layout().v2_mount.root == "/../../.."  # type: ignore[union-attr]
    paths = {
        pid: parse_proc_cgroup(host.read_pid_file(pid, "cgroup").decode(), host.cgroupns_above()).v2
        for pid in (300, 301, 302, 303)
    }
    assert paths == {
        300: "/system.slice/kubelet.service",
        301: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-a.scope",
        302: "/",
        303: None,  # outside the namespace and not in the mount: no cgroup guardian can reach
    }
    assert (
        host.cgroup_v2_dir("/system.slice/kubelet.service")
        == f"{tmp_path}/sys/fs/cgroup/system.slice/kubelet.service"
    )
    # a path that goes up but not to the mount's root names nothing here
    assert parse_proc_cgroup("0::/../../system.slice/x\n", "/../../..").v2 is None
    # v1 hierarchies keep their own namespace roots: only cgroup2 paths are taken up
    assert parse_proc_cgroup("4:memory:/../../../x\n", "/../../..").v1 == {}


@pytest.mark.parametrize(
    ("root", "above"), [("/", ""), ("/kubepods/pod1", ""), ("/..", "/.."), ("/../..x", "/.."), ("/x/..", "")]
)
def test_cgroupns_above_takes_only_whole_leading_components(tmp_path: Path, root: str, above: str) -> None:
    write(tmp_path, "proc/self/mountinfo", f"35 24 0:30 {root} /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert Host(tmp_path).cgroupns_above() == above


def test_no_cgroup_mounts(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.cgroup_layout().mode == "none"
    with pytest.raises(Unavailable, match="cgroup2"):
        host.cgroup_v2_dir("/x")
    with pytest.raises(Unavailable, match="v1 memory"):
        host.cgroup_v1_memory_dir("/x")
    assert host.v2_cgroups() == [] and host.v1_memory_cgroups() == []


def test_gone_process_raises_no_such_process(tmp_path: Path) -> None:
    with pytest.raises(NoSuchProcess):
        Host(tmp_path).read_pid_file(4242, "stat")


def test_no_os_paths_outside_host_module() -> None:
    """STYLE.md habit 1: a fake root must reach every read, so only host.py spells OS paths."""
    pattern = re.compile(r"""["'](/proc|/sys)(/|["'])""")
    assert pattern.search((PACKAGE / "host.py").read_text()), "the pattern finds host.py's own paths"
    offenders = []
    scanned = 0
    for path in PACKAGE.rglob("*.py"):
        if path.name == "host.py":
            continue
        scanned += 1
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert scanned >= 10, f"only {scanned} modules under {PACKAGE}"
    assert offenders == []


def test_notify_never_blocks_on_a_full_receiver(tmp_path: Path) -> None:
    import socket

    from guardian.notify import Notifier

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        sent = [notifier.send(STATUS=f"tick {i}") for i in range(200)]  # nobody reads
        assert sent[0] is True
        assert sent[-1] is False  # dropped, not blocked
        assert receiver.recv(100) == b"STATUS=tick 0"
    notifier.close()


def test_notify_keeps_one_socket_and_reaches_a_receiver_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import _socket
    import socket

    from guardian import notify

    made: list[object] = []

    def counted(*args: Any) -> Any:
        made.append(args)
        return _socket.socket(*args)

    monkeypatch.setattr(notify, "_socket", SimpleNamespace(**{**vars(_socket), "socket": counted}))
    path = str(tmp_path / "notify.sock")
    notifier = notify.Notifier({"NOTIFY_SOCKET": path})
    try:
        assert notifier.send(READY="1") is False  # nobody listens yet: dropped
        assert len(made) == 1
        for round_ in range(2):  # the receiver made, removed, and made again under its name
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
                receiver.bind(path)
                assert all(notifier.send(WATCHDOG="1", STATUS=f"{round_} {i}") for i in range(5))
                assert [receiver.recv(100) for _ in range(5)][-1] == f"WATCHDOG=1\nSTATUS={round_} 4".encode()
            os.unlink(path)
        assert len(made) == 2  # the one that failed was dropped; one more, for every send since
        assert notifier.send(STOPPING="1") is False
    finally:
        notifier.close()
