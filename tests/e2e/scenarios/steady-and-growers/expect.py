"""A steady large service beside a service of small growing workers, machine-wide: the workers
caused the shortage and die, db.service, the largest single process, lives."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/workers.service",)
SPARED = ("/system.slice/db.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.largest_before_trigger(result, SPARED)
    failures += checks.first_victim(result, cgroup=VICTIM[0])
    first = checks.kills(result)[:1]
    if first and first[0].get("GUARDIAN_TRIGGER") != "machine:memory":
        failures.append(f"expected the machine memory rule, got {first[0].get('GUARDIAN_TRIGGER')}")
    failures += checks.only_in(result, VICTIM)
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
