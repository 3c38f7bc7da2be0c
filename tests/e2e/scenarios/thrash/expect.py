"""File-cache thrash: the cgroup PSI rule acts while MemAvailable is not low."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/thrasher.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.first_victim(result, scope="/system.slice/thrasher.service")
    first = checks.kills(result, "/system.slice/thrasher.service")[:1]
    if first and not str(first[0].get("GUARDIAN_TRIGGER", "")).endswith(":psi"):
        failures.append(f"expected the PSI condition, got {first[0].get('GUARDIAN_TRIGGER')}")
    if any(e.get("GUARDIAN_TRIGGER") == "machine:memory" for e in checks.kills(result)):
        failures.append("the machine memory rule fired: MemAvailable should not have been low")
    if failures:
        failures.append(f"the thrasher's memory.pressure:\n{result.tail('thrasher-pressure.txt', 8)}")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
