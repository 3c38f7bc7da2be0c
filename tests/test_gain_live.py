"""Live: what a kill frees (smaps on real mappings) and growth from real cgroup usage, inside a
confined arena cgroup (256 MiB limit) that the test creates and removes."""

from __future__ import annotations

import os
import time
import uuid

from support.arena import Arena

from guardian.gain import expected_gain
from guardian.history import UsageHistory
from guardian.host import Host
from guardian.sample import Sample

MiB = 1 << 20

MAPPER = """
import mmap, os, time
def touch(m, n):
    for i in range(0, n, 4096):
        m[i] = 1
memfd = os.memfd_create("pool")
os.ftruncate(memfd, 32 << 20)
a = mmap.mmap(memfd, 32 << 20, mmap.MAP_SHARED); touch(a, 32 << 20)
f = open({path!r}, "w+b"); f.truncate(32 << 20)
b = mmap.mmap(f.fileno(), 32 << 20, mmap.MAP_SHARED); touch(b, 32 << 20)
c = mmap.mmap(-1, 8 << 20, mmap.MAP_SHARED); touch(c, 8 << 20)
d = bytearray(16 << 20)
for i in range(0, len(d), 4096):
    d[i] = 1
print("ready", flush=True)
time.sleep(120)
"""


def test_expected_gain_of_real_mappings(arena: Arena, live_host: Host) -> None:
    path = f"/dev/shm/guardian-test-{uuid.uuid4().hex[:8]}"
    try:
        child = arena.spawn(MAPPER.format(path=path))
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        sample = Sample(live_host, 0)
        process = next(p for p in sample.processes if p.pid == child.pid)
        assert process.rss_shmem_bytes >= 71 * MiB  # memfd + named file + shared anonymous
        gain = expected_gain(process, sample.freed_shmem)
        # the memfd and the shared anonymous map die with it; the named tmpfs file stays
        assert 39 * MiB <= gain.shmem_freed_bytes <= 41 * MiB
        assert 31 * MiB <= gain.shmem_kept_bytes <= 33 * MiB
        assert gain.anon_bytes >= 16 * MiB
        assert gain.total_bytes < process.rss_bytes  # what the kernel's badness counts
    finally:
        arena.kill_all()
        if os.path.exists(path):
            os.unlink(path)


def test_growth_from_real_usage(arena: Arena, live_host: Host) -> None:
    history = UsageHistory()
    first = Sample(live_host, time.monotonic_ns() // 1000)
    usage, _ = first.cgroup_usage()
    assert arena.name in usage
    history.record(first.time_us, usage)
    child = arena.spawn(
        "d = bytearray(48 << 20)\nfor i in range(0, len(d), 4096): d[i] = 1\n"
        "print('ready', flush=True)\nimport time; time.sleep(60)"
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    time.sleep(0.2)
    second = Sample(live_host, time.monotonic_ns() // 1000)
    current = second.cgroup_current(arena.name)
    growth = history.growth(arena.name, second.time_us, current)
    assert growth is not None and growth.span_s > 0
    assert growth.bytes_per_s * growth.span_s >= 40 * MiB
