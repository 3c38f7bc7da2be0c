"""A service at its MemoryMax= is stopped by the headroom rule, not by the kernel's memcg OOM."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 360

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/walker.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.first_victim(result, scope="/system.slice/walker.service")
    first = checks.kills(result, "/system.slice/walker.service")[:1]
    if first and not str(first[0].get("GUARDIAN_TRIGGER", "")).endswith(":headroom"):
        failures.append(f"expected the headroom condition, got {first[0].get('GUARDIAN_TRIGGER')}")
    if first and not first[0].get("GUARDIAN_VALUE_HEADROOM_BYTES"):
        failures.append("the kill entry does not carry the headroom that crossed")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
