"""What killing a process would give back: its expected gain.

The kernel's oom_badness() sizes a process by RSS + swap + page tables, and RSS includes file
pages (still cached after the death, and reclaimable before it) and shared memory (freed only if
nothing else keeps it). A kill gives back, as far as /proc can tell:

* its anonymous memory (``RssAnon``), its swap (``VmSwap``) and its page tables (``VmPTE``);
* of its shared memory (``RssShmem``), only the pages of unnamed objects that no other process
  maps (guardian/sources/smaps.py); a tmpfs file that keeps its name keeps its pages.

Reading smaps walks the process's mappings, so it is done only where shared memory could
matter: ``RssShmem`` of at least ``SHMEM_LOOK_BYTES``, and in one ranking for at most
``SHMEM_LOOKS`` processes, those with the most (``worth_a_look``): a desktop has dozens of
processes with a few MiB of shared memory each, and the ranking has a time budget. Elsewhere,
and where smaps cannot be read in time, shared memory counts as kept: the estimate errs low,
never high.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Optional

from guardian.frozen import frozen
from guardian.records import Process

SHMEM_LOOK_BYTES = 4 << 20
SHMEM_LOOKS = 16


@frozen
class Gain:
    """The memory a kill would give back, by kind."""

    anon_bytes: int
    swap_bytes: int
    pte_bytes: int
    shmem_freed_bytes: int  # shared memory that dies with it
    shmem_kept_bytes: int  # shared memory that outlives it (or was not looked at)

    @property
    def total_bytes(self) -> int:
        return self.anon_bytes + self.swap_bytes + self.pte_bytes + self.shmem_freed_bytes


def worth_a_look(processes: Iterable[Process]) -> frozenset[int]:
    """The pids whose smaps a ranking reads: at most SHMEM_LOOKS, the most shared memory first,
    each with at least SHMEM_LOOK_BYTES of it."""
    looked = [p for p in processes if p.rss_shmem_bytes >= SHMEM_LOOK_BYTES and not p.is_zombie]
    looked.sort(key=lambda p: -p.rss_shmem_bytes)
    return frozenset(p.pid for p in looked[:SHMEM_LOOKS])


def expected_gain(
    process: Process, freed_shmem: Callable[[int], Optional[int]], looked: Optional[Collection[int]] = None
) -> Gain:
    """The process's gain; ``freed_shmem(pid)`` reads its smaps (None: unknown, counted kept),
    only for a pid in ``looked`` (default: any with at least SHMEM_LOOK_BYTES of shared memory)."""
    shmem = process.rss_shmem_bytes
    freed = 0
    look = shmem >= SHMEM_LOOK_BYTES if looked is None else process.pid in looked
    if look and not process.is_zombie and not process.is_kernel_thread:
        freed = min(shmem, max(0, freed_shmem(process.pid) or 0))
    return Gain(
        anon_bytes=process.rss_anon_bytes,
        swap_bytes=process.swap_bytes,
        pte_bytes=process.pte_bytes,
        shmem_freed_bytes=freed,
        shmem_kept_bytes=shmem - freed,
    )
