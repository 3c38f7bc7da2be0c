"""A protected process and an oom_score_adj=-1000 process, both larger than the hog, survive."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/hog.service",)
SPARED = ("/system.slice/precious.service", "/system.slice/critical.service")


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    if result.text("critical-adj.txt").strip() != "-1000":
        failures.append(
            f"critical.service did not get oom_score_adj -1000: {result.text('critical-adj.txt')!r}"
        )
    failures += checks.first_victim(result, cgroup="/system.slice/hog.service")
    victims = {e.get("GUARDIAN_VICTIM_CGROUP") for e in checks.kills(result)}
    for unit in ("precious", "critical"):
        if f"/system.slice/{unit}.service" in victims:
            failures.append(f"guardian killed {unit}.service")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
