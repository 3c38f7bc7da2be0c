"""Match rules: which processes or cgroups a protect / ignore / prefer / avoid rule names.

A rule matches when every field it gives matches (AND); each field is a regular expression
searched (``re.search``) in one fact of the candidate:

    comm     the 15-character kernel name (/proc/PID/comm)
    cmdline  the arguments joined by spaces
    exe      the executable's path (the /proc/PID/exe link)
    cgroup   the cgroup path (``/system.slice/nginx.service``)
    unit     the systemd unit the process belongs to (``nginx.service``, ``session-2.scope``)
    uid      the real uid, as a decimal string (``"^0$"``; an integer is taken as exact)

Peers' users ask for all of these (earlyoom#196/#333, nohang's @BADNESS_ADJ_RE_*); earlyoom's
comm-only matching is its most repeated complaint. Pure: facts come in as a Facts record whose
expensive parts (cmdline, exe) are asked for only when a rule uses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

FIELDS = ("comm", "cmdline", "exe", "cgroup", "unit", "uid")

_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap", ".timer")


def unit_of(cgroup: Optional[str]) -> Optional[str]:
    """The systemd unit of a cgroup path: its deepest ``*.service``/``*.scope`` component
    (``/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope`` -> ``foo.scope``);
    a slice when only slices are there; None outside systemd's tree."""
    if not cgroup:
        return None
    parts = [p for p in cgroup.split("/") if p]
    for part in reversed(parts):
        if part.endswith(_UNIT_SUFFIXES):
            return part
    for part in reversed(parts):
        if part.endswith(".slice"):
            return part
    return None


@dataclass(frozen=True)
class Facts:
    """What rules can look at. ``cmdline`` and ``exe`` are read on demand through callables."""

    comm: Optional[str]  # None for a cgroup's own facts
    cgroup: Optional[str]
    uid: Optional[int]
    cmdline: Callable[[], Optional[str]]
    exe: Callable[[], Optional[str]]

    @classmethod
    def of_cgroup(cls, path: Optional[str]) -> Facts:
        """A cgroup's own facts: its path (and unit); no process fields."""
        return cls(comm=None, cgroup=path, uid=None, cmdline=_nothing, exe=_nothing)


def _nothing() -> Optional[str]:
    return None


@dataclass(frozen=True)
class Rule:
    """One ``[[protect]]``/``[[ignore]]``/``[[prefer]]``/``[[avoid]]`` table of the policy."""

    kind: str
    patterns: Mapping[str, re.Pattern[str]]
    points: float = 0.0
    label: str = ""  # where it came from, for explanations: "prefer[2]"

    def matches(self, facts: Facts) -> bool:
        for name, pattern in self.patterns.items():
            value = self._fact(facts, name)
            if value is None or not pattern.search(value):
                return False
        return True

    @staticmethod
    def _fact(facts: Facts, name: str) -> Optional[str]:
        if name == "comm":
            return facts.comm
        if name == "cgroup":
            return facts.cgroup
        if name == "unit":
            return unit_of(facts.cgroup)
        if name == "uid":
            return None if facts.uid is None else str(facts.uid)
        if name == "cmdline":
            return facts.cmdline()
        if name == "exe":
            return facts.exe()
        raise KeyError(name)

    def describe(self) -> str:
        fields = ", ".join(f"{k}~/{p.pattern}/" for k, p in self.patterns.items())
        return f"{self.label} ({fields})"

    @property
    def needs(self) -> frozenset[str]:
        return frozenset(self.patterns)
