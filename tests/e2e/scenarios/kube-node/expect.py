"""kubelet_qos on a kubepods layout: the Burstable pod over its request dies, Guaranteed never."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 480

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/kubepods.slice/kubepods-burstable.slice/",)
SPARED = ("/kubepods.slice/kubepods-pod", "/kubepods.slice/kubepods-besteffort.slice/")


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.first_victim(result, cgroup="/kubepods.slice/kubepods-burstable.slice/")
    first = checks.kills(result)[:1]
    if first and "GUARDIAN_SCORE_KUBELET_QOS" not in first[0]:
        failures.append("the kill entry carries no kubelet_qos score")
    if any("kubepods-pod" in str(e.get("GUARDIAN_VICTIM_CGROUP")) for e in checks.kills(result)):
        failures.append("guardian killed in the Guaranteed pod")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
