"""Errors guardian raises, translated where they happen (as psutil does).

Operators see the message of each as a sentence; none of them should surface as a traceback.
"""

from __future__ import annotations


class GuardianError(Exception):
    """Base of every error guardian reports to an operator."""


class Unavailable(GuardianError):
    """A kernel feature guardian would use is missing here (no PSI, no cgroup2, ...)."""

    def __init__(self, feature: str, reason: str) -> None:
        super().__init__(f"{feature} is unavailable: {reason}")
        self.feature = feature
        self.reason = reason


class NoSuchProcess(GuardianError):
    """The process went away while guardian was reading it."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} no longer exists")
        self.pid = pid


class ParseError(GuardianError):
    """A kernel file did not have the format guardian knows."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"cannot parse {what}: {reason}")
        self.what = what
        self.reason = reason


class Malformed(Unavailable):
    """A kernel file is there but does not read as the kernel writes it (garbage, a truncated
    value, an unknown format): what it describes is unavailable, exactly as if it were missing.

    Readers of per-cgroup and per-process files raise this instead of ParseError, so a caller
    that already skips a group whose files are missing also skips one whose files are bad: one
    bad file costs that group, never the whole command or the daemon. ``reason`` names the file.
    """

    @classmethod
    def of(cls, feature: str, exc: ParseError) -> Malformed:
        """The ParseError of a reader, as the unavailability of ``feature``."""
        return cls(feature, str(exc))
