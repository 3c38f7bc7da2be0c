"""A slow leak dies by guardian's machine rule, once; the bystander lives; the kernel never acts."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 480

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/leak.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.first_victim(result, cgroup="/system.slice/leak.service")
    if len(checks.kills(result)) != 1:
        failures.append(f"expected one kill for one leak, got {len(checks.kills(result))}")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
