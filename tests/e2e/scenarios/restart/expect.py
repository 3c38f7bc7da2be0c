"""A guardian restarted mid-episode still stops the walker before the kernel."""

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
    before, after = result.text("pid-before.txt").strip(), result.text("pid-after.txt").strip()
    if not before or before == after:
        failures.append(f"guardian was not restarted: main pid {before!r} -> {after!r}")
    failures += checks.first_victim(result, scope="/system.slice/walker.service")
    kills = checks.kills(result, "/system.slice/walker.service")
    if kills and str(kills[0].get("_PID")) != after:
        failures.append(f"the kill came from pid {kills[0].get('_PID')}, not the restarted guardian {after}")
    return failures + checks.no_kernel_oom(result) + checks.guardian_survived(result)
