"""Live: the kernel log of this machine. A real memcg OOM kill inside a confined arena cgroup
(tests/support/arena.py, 256 MiB) is reported by the follower with its pid and memory cgroup."""

from __future__ import annotations

import os
import select
import time

import pytest
from support.arena import Arena, hog_program
from support.bounds import hard_timeout

from guardian.errors import Unavailable
from guardian.host import Host
from guardian.records import KernelOomKill
from guardian.sources.kmsg import KmsgFollower, parse_kmsg_record

pytestmark = pytest.mark.live

MiB = 1 << 20


def _follower(host: Host) -> KmsgFollower:
    follower = KmsgFollower(host)
    try:
        follower.open()
    except Unavailable as exc:
        pytest.skip(str(exc))
    return follower


def _last_seq(host: Host) -> int:
    """The newest record's number now, read from the start of the log with a fd of our own."""
    fd = os.open(host.kmsg_path(), os.O_RDONLY | os.O_NONBLOCK)
    last = -1
    try:
        while True:
            try:
                last = parse_kmsg_record(os.read(fd, 16384)).seq
            except BlockingIOError:
                return last
            except BrokenPipeError:
                continue
    finally:
        os.close(fd)


def test_follower_starts_at_the_end_of_the_log(live_host: Host) -> None:
    """Records already in the log (this machine's earlier OOM reports among them) are not read."""
    if not os.path.exists(live_host.kmsg_path()):
        pytest.skip("no /dev/kmsg")
    before = _last_seq(live_host)
    with _follower(live_host) as follower:
        follower.read()
        assert follower.last_seq is None or follower.last_seq > before
        assert follower.lost_records == 0 and follower.malformed == 0


def test_a_real_memcg_oom_kill_is_reported(arena: Arena, live_host: Host) -> None:
    with _follower(live_host) as follower, hard_timeout(60):
        fd = follower.fileno()
        assert fd is not None
        hog = arena.spawn(hog_program(rate_mb_s=400))  # grows past the 256 MiB limit in < 1 s
        assert hog.stdout is not None and hog.stdout.readline() == b"ready\n"
        with open(live_host.pid_path(hog.pid, "comm"), "rb") as f:
            comm = os.fsdecode(f.read().rstrip(b"\n"))
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + 30
        seen: list[KernelOomKill] = []
        while time.monotonic() < deadline and not any(k.pid == hog.pid for k in seen):
            poller.poll(500)
            seen += follower.read()  # other tests' kills elsewhere may come too: ours is by pid
        assert hog.wait(timeout=30) == -9
    (kill,) = [k for k in seen if k.pid == hog.pid]
    assert kill.comm == comm
    assert kill.memcg_oom and kill.constraint == "CONSTRAINT_MEMCG"
    assert kill.oom_memcg == kill.task_memcg == arena.name
    assert kill.anon_rss_bytes > 128 * MiB
    assert kill.context == "Memory cgroup out of memory"
    assert arena.oom_kills() == 1
    assert follower.malformed == 0
