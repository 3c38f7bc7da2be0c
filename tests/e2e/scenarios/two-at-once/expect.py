"""Two limited services in trouble at once, one ignoring SIGTERM: both stopped by guardian, the
second during the first one's grace period, and no kernel OOM kill."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

VICTIM = ("/system.slice/stubborn.service", "/system.slice/walker.service")
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    stubborn = checks.kills(result, "/system.slice/stubborn.service")
    walker = checks.kills(result, "/system.slice/walker.service")
    failures += checks.first_victim(result, scope="/system.slice/stubborn.service")
    failures += checks.first_victim(result, scope="/system.slice/walker.service")
    if stubborn and stubborn[0].get("GUARDIAN_SIGNALS") != "SIGTERM,SIGKILL":
        failures.append(
            f"stubborn.service: expected SIGTERM then SIGKILL, got {stubborn[0].get('GUARDIAN_SIGNALS')}"
        )
    if stubborn and walker and checks.usec(walker[0]) >= checks.usec(stubborn[0]):
        failures.append(
            "walker.service was acted on only after stubborn.service's kill was over: "
            "the loop waited out the grace period"
        )
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
