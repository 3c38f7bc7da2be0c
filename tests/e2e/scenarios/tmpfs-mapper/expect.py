"""A process whose size is a tmpfs file it maps (a kill frees nothing) beside a growing hog:
the hog dies first, the mapper lives."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/hog.service",)
SPARED = ("/system.slice/mapper.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    before = result.text("mapper-before.txt")
    if "RssShmem:" not in before or "oom_score" not in before:
        failures.append(f"mapper.service's memory was not recorded: {before!r}")
    failures += checks.largest_before_trigger(result, SPARED)
    failures += checks.first_victim(result, cgroup=VICTIM[0])
    failures += [
        f"guardian killed the mapper: {e.get('MESSAGE')}"
        for e in checks.kills(result, None)
        if str(e.get("GUARDIAN_VICTIM_CGROUP", "")).startswith(SPARED)
    ]
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
