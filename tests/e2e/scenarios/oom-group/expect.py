"""A service with OOMPolicy=kill goes whole, at once, before the kernel acts."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 360

VICTIM = ("/system.slice/pool.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    if result.text("pool-oom-group.txt").strip() != "1":
        failures.append(f"OOMPolicy=kill did not set memory.oom.group: {result.text('pool-oom-group.txt')!r}")
    failures += checks.first_victim(result, scope="/system.slice/pool.service")
    kills = checks.kills(result, "/system.slice/pool.service")
    if kills:
        first = kills[0]
        if (
            first.get("GUARDIAN_ACTION") != "group-kill"
            or first.get("GUARDIAN_KILL_GROUP") != "/system.slice/pool.service"
        ):
            failures.append(
                f"expected a group kill of pool.service, got {first.get('GUARDIAN_ACTION')} "
                f"of {first.get('GUARDIAN_KILL_GROUP')}"
            )
        pids = [p for p in str(first.get("GUARDIAN_VICTIM_PIDS", "")).split(",") if p]
        if len(pids) < 4:
            failures.append(f"the whole service did not go at once: {pids}")
        if len(kills) > 1:
            failures.append(f"pool.service was killed {len(kills)} times, process by process")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
