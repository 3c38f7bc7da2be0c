"""Swap on zram, one CPU: the hog dies by the machine rule once swap is nearly full too, once;
the bystander lives; the kernel never acts."""

from __future__ import annotations

from typing import Any, Optional

from e2e import checks

# The whole run on one vCPU: the install takes longer than on two, and without a daemon the
# kernel acts only after swap is full (about a minute of growth) and may thrash for minutes
# before it does.
TIMEOUT_S = 600
MEMORY_MIB = 1024
CPUS = 1

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/hog.service",)
SPARED = ("/system.slice/bystander.service",)


def swap_kib(result: Any) -> tuple[int, Optional[int]]:
    """SwapTotal when the swap was set up (swap-setup.txt; 0 if none) and the lowest SwapFree
    the sampler saw (memory.txt: uptime, MemAvailable, SwapFree, ...; None if it saw nothing),
    in KiB."""
    total = 0
    for line in result.text("swap-setup.txt").splitlines():
        if line.startswith("SwapTotal:"):
            total = int(line.split()[1])
    seen = [
        int(p[2])
        for p in (line.split() for line in result.text("memory.txt").splitlines())
        if len(p) > 2 and p[2].isdigit()
    ]
    return total, (min(seen) if seen else None)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    total, lowest = swap_kib(result)
    if "/dev/zram0" not in result.text("swap-setup.txt") or total == 0:
        return [
            f"the scenario's premise failed: no zram swap; swap-setup.txt:\n{result.text('swap-setup.txt')}"
        ]
    if lowest is None:
        failures.append("memory.txt: the sampler recorded nothing")
    elif lowest > total // 2:
        failures.append(
            f"the hog never filled half of the swap: SwapFree stayed at or above {lowest} of {total} KiB"
        )
    failures += checks.first_victim(result, cgroup="/system.slice/hog.service")
    found = checks.kills(result)
    if found:
        if found[0].get("GUARDIAN_TRIGGER") != "machine:memory":
            failures.append(f"expected the machine memory rule, got {found[0].get('GUARDIAN_TRIGGER')}")
        if "SwapFree" not in str(found[0].get("GUARDIAN_REASON", "")):
            failures.append(f"the kill's reason does not weigh swap: {found[0].get('GUARDIAN_REASON')!r}")
    if len(found) != 1:
        failures.append(f"expected one kill for one hog, got {len(found)}")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
