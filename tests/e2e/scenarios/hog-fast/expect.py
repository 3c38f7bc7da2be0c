"""A fast hog dies by guardian's machine rule; the bystander lives; the kernel never acts."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/hog.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.first_victim(result, comm="stress-ng", cgroup="/system.slice/hog.service")
    first = checks.kills(result)[:1]
    if first and first[0].get("GUARDIAN_TRIGGER") != "machine:memory":
        failures.append(f"expected the machine memory rule, got {first[0].get('GUARDIAN_TRIGGER')}")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
