"""What a guardian plugin may import: the one public module for plugin authors.

A plugin imports from here and from nowhere else in guardian (as a pytest plugin imports from
``pytest``); the built-in scorers do the same. docs/plugin_hooks.md documents every name and
every field a plugin can read, and a test fails when a public field is not documented there.

    from guardian.api import Candidate, RankContext, Scorer, hookimpl

Everything a plugin receives is a record guardian built for this ranking: reading it is free
(a ``Sample`` reads each kernel file at most once per tick), changing it is not a plugin's
business.
"""

from __future__ import annotations

from guardian.badness import process_oom_score
from guardian.candidates import Candidate, memory_cgroup
from guardian.config import PluginSettings, Policy
from guardian.decision import KillDecision, KillOutcome
from guardian.errors import Unavailable
from guardian.gain import Gain, expected_gain, worth_a_look
from guardian.history import Growth
from guardian.hookspecs import Scorer, hookimpl
from guardian.host import cgroup_ancestors
from guardian.isolation import PluginFailure
from guardian.offloop import Stalled
from guardian.ranking import RankContext
from guardian.records import CgroupMemory, MemInfo, Pressure, ProcCgroups, Process, PsiLine
from guardian.rules import Facts, Rule
from guardian.sample import CgroupSample, Sample
from guardian.text import human_bytes, shown

__all__ = [
    "Candidate",
    "CgroupMemory",
    "CgroupSample",
    "Facts",
    "Gain",
    "Growth",
    "KillDecision",
    "KillOutcome",
    "MemInfo",
    "PluginFailure",
    "PluginSettings",
    "Policy",
    "Pressure",
    "ProcCgroups",
    "Process",
    "PsiLine",
    "RankContext",
    "Rule",
    "Sample",
    "Scorer",
    "Stalled",
    "Unavailable",
    "cgroup_ancestors",
    "expected_gain",
    "hookimpl",
    "human_bytes",
    "memory_cgroup",
    "process_oom_score",
    "shown",
    "worth_a_look",
]
