"""Hard bounds for tests where a hang, or unbounded growth, is the bug.

Neither asserts how fast anything is: the bounds are far beyond what a correct run needs, and
only turn "never returns" (or "grows until the kernel kills it") into a failing test.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Optional

REPO = Path(__file__).resolve().parent.parent.parent

# The child caps its own address space before anything else: a walk that loops while growing
# a traceback (re-raising one memoized exception appends to its __traceback__: gigabytes within
# seconds) fails with MemoryError at 2 GiB instead of taking the machine with it.
_CAP = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
_GUARDIAN_MAIN = "import sys\nfrom guardian.cli import main\nsys.exit(main(sys.argv[1:]))\n"


class Hung(Exception):
    """Raised in the main thread when a hard_timeout expires."""


@contextlib.contextmanager
def hard_timeout(seconds: float) -> Iterator[None]:
    """Raise Hung in the main thread if the block runs longer than ``seconds`` (SIGALRM: Python
    checks for signals between bytecodes, so a pure-Python loop is interrupted too)."""

    def expired(_signum: int, _frame: Optional[FrameType]) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def python_bounded(
    code: str, args: Sequence[str] = (), timeout_s: float = 120.0
) -> subprocess.CompletedProcess[bytes]:
    """``python -c CODE ARGS`` from the repository, with 2 GiB of address space and
    ``timeout_s`` to return at all; subprocess.TimeoutExpired (the child killed) if it does not.
    ``tests/`` is on the child's path, so it can import the test support modules."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _CAP + f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\n" + code,
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )


def guardian_bounded(args: Sequence[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    """``guardian ARGS`` under python_bounded()'s limits."""
    return python_bounded(_GUARDIAN_MAIN, args, timeout_s)
