"""The trace recorded in the guest, replayed on the host, chooses the victim the daemon killed."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

VICTIM = ("/system.slice/walker.service",)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    scope = "/system.slice/walker.service"
    failures += checks.first_victim(result, scope=scope)
    if "guardian record:" not in result.text("record.txt"):
        failures.append(
            f"guardian record did not report its frames; record.txt:\n{result.tail('record.txt', 10)}"
        )
    failures += checks.replayed_as_live(result, "episode.trace", "policy.toml", scope)
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
