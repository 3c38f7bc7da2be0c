"""A desktop session: a large steady editor beside a browser whose renderers keep growing; a
renderer dies first, the editor lives."""

from __future__ import annotations

from typing import Any

from e2e import checks

TIMEOUT_S = 420

BROWSER = "/user.slice/user-1000.slice/browser.service"
EDITOR = "/user.slice/user-1000.slice/editor.service"

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = (BROWSER,)
SPARED = (EDITOR,)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    failures += checks.largest_before_trigger(result, SPARED)
    failures += checks.first_victim(result, comm="renderer", cgroup=BROWSER)
    failures += [
        f"guardian killed the editor: {e.get('MESSAGE')}"
        for e in checks.kills(result)
        if str(e.get("GUARDIAN_VICTIM_CGROUP", "")).startswith(SPARED)
    ]
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
