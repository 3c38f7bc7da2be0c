"""A broken reload is rejected and changes nothing; a good reload under pressure takes effect."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/walker.service",)
SPARED = ()


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    rejected = result.entries(MESSAGE_ID=checks.MSG_POLICY_REJECTED)
    if not rejected or "min_headroom.term" not in str(rejected[0].get("GUARDIAN_POLICY_ERROR")):
        failures.append(f"the broken policy was not rejected with its key: {rejected[:1]}")
    if "ActiveState=active" not in result.text("after-broken.txt"):
        failures.append(f"guardian after the broken reload: {result.text('after-broken.txt').split()}")
    failures += checks.first_victim(result, scope="/system.slice/walker.service")
    kills = checks.kills(result, "/system.slice/walker.service")
    if kills and rejected and checks.usec(kills[0]) < checks.usec(rejected[0]):
        failures.append("guardian killed the walker before any rule for it was loaded")
    return failures + checks.no_kernel_oom(result) + checks.guardian_survived(result)
