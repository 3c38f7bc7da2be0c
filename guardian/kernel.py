"""The system calls Python's standard library does not offer, in one place (through ctypes).

``os`` has pidfd_open, pidfd_send_signal, eventfd and poll; these it lacks: process_mrelease
(5.15+), mlockall, and inotify. Each returns plainly (a bool, an fd, or None) and never raises
for an errno the caller can live with: the daemon degrades, it does not stop.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from typing import Optional

SYS_PROCESS_MRELEASE = 448  # the same number on every architecture (include/uapi/asm-generic/unistd.h)
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
IN_CREATE, IN_DELETE, IN_ONLYDIR = 0x100, 0x200, 0x01000000


def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a Python without a C library to load
        return None


_LIBC = _libc()


def _function(name: str) -> Optional[Callable[..., int]]:
    return getattr(_LIBC, name, None) if _LIBC is not None else None


def process_mrelease(pidfd: int) -> bool:
    """Reap a SIGKILLed process's memory now instead of when it next runs. False where the
    kernel cannot: before 5.15 (ENOSYS), the process already gone (ESRCH), or not dying
    (EINVAL: never call it after SIGTERM alone, earlyoom#354)."""
    syscall = _function("syscall")
    return syscall is not None and syscall(SYS_PROCESS_MRELEASE, pidfd, 0) == 0


def mlockall() -> Optional[int]:
    """Lock guardian's pages in RAM, present and future (MCL_ONFAULT: as they are touched, so
    the locked size stays what is really used). None on success, else the errno."""
    lock = _function("mlockall")
    if lock is None:
        return 0
    if lock(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
        return None
    return ctypes.get_errno()


def inotify_directories(directories: Sequence[str]) -> Optional[tuple[int, bool]]:
    """A non-blocking inotify fd watching the directories for subdirectories made or removed
    (mkdir and rmdir in cgroupfs raise IN_CREATE and IN_DELETE), and whether every one of them
    is watched; None if none could be. Paths may hold any bytes (surrogate escapes:
    os.fsencode)."""
    init, add = _function("inotify_init1"), _function("inotify_add_watch")
    if init is None or add is None:
        return None
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    added = sum(add(fd, os.fsencode(d), IN_CREATE | IN_DELETE | IN_ONLYDIR) >= 0 for d in directories)
    if not added:
        os.close(fd)
        return None
    return int(fd), added == len(directories)
