"""Group kill versus the single largest process, in two services of mid-size workers."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/fleet-group.service", "/system.slice/fleet-proc.service")
SPARED = ()


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    group = checks.kills(result, "/system.slice/fleet-group.service")
    proc = checks.kills(result, "/system.slice/fleet-proc.service")
    if len(group) != 1 or group[0].get("GUARDIAN_ACTION") != "group-kill":
        failures.append(
            f"fleet-group: expected one group kill, got {[e.get('GUARDIAN_ACTION') for e in group]}"
        )
    elif (
        group[0].get("GUARDIAN_SIGNALS") != "cgroup.kill"
        or len(group[0]["GUARDIAN_VICTIM_PIDS"].split(",")) < 5
    ):
        failures.append(
            f"fleet-group: not every worker through cgroup.kill: {group[0].get('GUARDIAN_VICTIM_PIDS')}"
        )
    if "ActiveState=active" in result.text("fleet-group-state.txt"):
        failures.append("fleet-group.service still active after its group kill")
    if len(proc) != 1 or proc[0].get("GUARDIAN_ACTION") not in ("term", "kill"):
        failures.append(
            f"fleet-proc: expected one process kill, got {[e.get('GUARDIAN_ACTION') for e in proc]}"
        )
    survivors = result.text("fleet-proc-pids.txt").split()
    if len(survivors) < 4:  # the shell and at least three workers
        failures.append(f"fleet-proc: the kill took more than the largest worker: {survivors}")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
