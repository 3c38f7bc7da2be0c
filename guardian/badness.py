"""The kernel's oom_badness(), mirrored exactly, in /proc/PID/oom_score units.

mm/oom_kill.c: oom_badness() (5.9 ... 6.18)::

    points = get_mm_rss(mm) + get_mm_counter(mm, MM_SWAPENTS) + mm_pgtables_bytes(mm) / PAGE_SIZE
    adj   *= totalpages / 1000          (integer division first)
    points += adj

and fs/proc/base.c: proc_oom_score() prints ``(1000 + points * 1000 / totalpages) * 2 / 3`` with C
signed division (truncating toward zero; Python's ``//`` floors, hence ``cdiv``).

``totalpages`` is RAM + swap for a machine-wide OOM, and for a memcg OOM the limit of the cgroup
whose limit is hit (+ min(swap limit, swap) when swappiness is not 0): mm/memcontrol.c:
mem_cgroup_get_max(). /proc/PID/oom_score always uses the machine-wide value; in a cgroup scope
guardian uses the cgroup's, which is what the kernel would use for an OOM in that cgroup.

The page counts come from /proc/PID/status (RssAnon + RssFile + RssShmem, VmSwap, VmPTE), which
since 6.16 prints exact per-CPU sums. oom_badness() itself reads the approximate counters
(percpu_counter_read_positive(), 6.2+): each CPU may hold up to ``percpu_counter_batch - 1``
unfolded pages per counter (batch = max(32, 2 * online CPUs)). So a process whose page count
sits within that lag of a step of oom_score (one step = 1.5 * totalpages / 1000 pages) can read
one point off /proc/PID/oom_score. This is the only accepted cause of a difference
(kernel.md 1.4; measured 10-71 pages on 2 CPUs, so about 0.1-0.8 % of processes here); the
live test allows it and nothing else. Kernels with Desnoyers' 2026 fix use exact sums and match.
"""

from __future__ import annotations

from guardian.records import Process


def cdiv(a: int, b: int) -> int:
    """C99 signed integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def badness_points(process: Process, page_size: int, totalpages: int) -> int:
    """oom_badness() for an eligible process, in pages (may be negative)."""
    rss_pages = process.rss_bytes // page_size
    swap_pages = process.swap_bytes // page_size
    pte_pages = process.pte_bytes // page_size
    return rss_pages + swap_pages + pte_pages + process.oom_score_adj * (totalpages // 1000)


def oom_score(points: int, totalpages: int) -> int:
    """proc_oom_score(): badness in the 0..2000 units of /proc/PID/oom_score."""
    return (1000 + cdiv(points * 1000, totalpages)) * 2 // 3


def eligible(process: Process) -> bool:
    """What oom_badness() returns LONG_MIN for: init, kernel threads, no mm (zombies), adj -1000."""
    return not (
        process.is_global_init
        or process.is_kernel_thread
        or process.is_zombie
        or process.oom_score_adj == -1000
    )


def process_oom_score(process: Process, page_size: int, totalpages: int) -> int:
    """The process's /proc/PID/oom_score for an OOM whose scale is ``totalpages`` (0 when the
    kernel would not choose it)."""
    if not eligible(process):
        return 0
    return oom_score(badness_points(process, page_size, totalpages), max(totalpages, 1))
