"""A limit written to a running service (set-property) is seen, and the service is stopped at
its headroom line by guardian, not by the kernel's memcg OOM killer."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 360

VICTIM = ("/system.slice/resized.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    before = result.text("resized-max-before.txt").strip()
    after = result.text("resized-max-after.txt").strip()
    if before != "max" or after != str(250 << 20):
        failures.append(f"the limit was not written while the service ran: {before!r} -> {after!r}")
    failures += checks.first_victim(result, scope="/system.slice/resized.service")
    first = checks.kills(result, "/system.slice/resized.service")[:1]
    if first and not str(first[0].get("GUARDIAN_TRIGGER", "")).endswith(":headroom"):
        failures.append(f"expected the headroom condition, got {first[0].get('GUARDIAN_TRIGGER')}")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
