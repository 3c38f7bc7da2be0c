"""The closed vocabularies guardian speaks in, as Literal types: a new value cannot drift out of
the docs, because the tests read the documented values from these (``typing.get_args``)."""

from __future__ import annotations

from typing import Literal

Level = Literal["TERM", "KILL"]  # how badly a condition is crossed
Condition = Literal["memory", "psi", "headroom", "events"]  # what was crossed
RuleAction = Literal["process", "group"]  # what a [[cgroup]] rule kills: one process, or the group
PsiKind = Literal["some", "full"]  # which PSI line a rule reads
Mode = Literal["process", "cgroup"]  # what a ranking ranks; also a candidate's kind
KillAction = Literal["term", "kill", "group-kill"]  # what was done to a victim
# how an action ended (reported as GUARDIAN_OUTCOME)
OutcomeResult = Literal[
    "terminated",  # died after SIGTERM
    "killed",  # died after SIGKILL (or cgroup.kill)
    "alive",  # still there after SIGKILL and the wait
    "dry-run",  # decided, nothing sent
    "vanished",  # gone before anything was sent
    "pid-reused",  # the pid names another process now: nothing sent
    "already-dying",  # someone else's SIGKILL is pending: nothing sent
    "protected",  # a never-kill rule holds at signal time: nothing sent
    "failed",  # the kernel refused
    "abandoned",  # guardian stopped, or reloaded a dry run, before the kill was over
]
# why a trigger led to no kill
NotDone = Literal["recovered", "no-candidate", "protected", "vetoed"]
HookWhen = Literal["after"]  # when a [[hook]] command runs: after a kill
