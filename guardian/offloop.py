"""Calls that can wait on another process, made off the loop with a deadline.

Reading ``/proc/PID/cmdline`` takes the target's mmap_lock (fs/proc/base.c: get_mm_cmdline()
-> access_remote_vm()), and so does ``process_mrelease``. A process can keep its own mmap_lock
contended for as long as it likes (one thread faulting on a FUSE page that is never served,
another waiting to map: found in review), and the reader then sleeps in the kernel,
uninterruptibly: a daemon that read it on its loop stopped ticking, feeding the watchdog and
answering SIGTERM.

``OffLoop.call(key, fn)`` runs ``fn`` in a worker thread and waits at most ``timeout_s``. A
worker that does not return is left behind (nothing can stop a thread in uninterruptible sleep)
and a fresh one serves the next call; calls for a ``key`` (a pid) whose earlier call is still
stuck fail at once, so one process costs one deadline, once. With ``max_stuck`` workers stuck,
every call fails at once until one of them returns. A call that fails raises ``Stalled``; the
caller decides what an unknown answer means (for a ``[[protect]]`` rule: that it matches).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from typing import Generic, Optional, TypeVar

from guardian.errors import GuardianError

T = TypeVar("T")


class Stalled(GuardianError):
    """The call did not return in time: the process it reads holds a lock the kernel needs."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} did not return in time (the process holds a lock the kernel needs)")
        self.what = what


class _Job(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Optional[T] = None
        self.error: Optional[BaseException] = None


class _Worker:
    def __init__(self, owner: OffLoop) -> None:
        self.owner = owner
        self.jobs: queue.SimpleQueue[Optional[_Job[object]]] = queue.SimpleQueue()
        self.key: Optional[Hashable] = None  # the key of the job it runs, while it runs one
        self.abandoned = False
        threading.Thread(target=self._main, name="guardian-offloop", daemon=True).start()

    def _main(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job.value = job.fn()
            except BaseException as exc:  # handed to the caller, who decides
                job.error = exc
            with self.owner._lock:  # the caller gives up under the same lock: one verdict
                job.done.set()
                if self.abandoned:  # back after its deadline: a worker no more
                    self.owner._stuck.pop(self, None)
                    return


class OffLoop:
    def __init__(self, timeout_s: float, max_stuck: int = 8) -> None:
        self.timeout_s = timeout_s
        self.max_stuck = max_stuck
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._stuck: dict[_Worker, Hashable] = {}

    def stuck_keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._stuck.values())

    def call(self, key: Hashable, what: str, fn: Callable[[], T]) -> T:
        with self._lock:
            if key in self._stuck.values() or len(self._stuck) >= self.max_stuck:
                raise Stalled(what)
            worker = self._idle.pop() if self._idle else _Worker(self)
        job: _Job[T] = _Job(fn)
        worker.jobs.put(job)  # type: ignore[arg-type]
        if not job.done.wait(self.timeout_s):
            with self._lock:
                if not job.done.is_set():
                    worker.abandoned = True
                    self._stuck[worker] = key
                    raise Stalled(what)
        with self._lock:
            self._idle.append(worker)
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]
