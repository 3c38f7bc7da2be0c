"""The kernel's memcg OOM killer acts in a group no rule watches: guardian reports the kill once,
with the victim's pid, comm and cgroup, and whom its policy would have chosen there."""

from __future__ import annotations

from typing import Any

from e2e import checks, vm

TIMEOUT_S = 300

BATCH = "/batch.slice/batch.service"
VICTIM = (BATCH,)
SPARED = ("/system.slice/bystander.service",)


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    hog, keeper = result.text("hog.pid").strip(), result.text("keeper.pid").strip()
    comm = result.text("hog.comm").strip()
    if not (hog and keeper and comm):
        return [f"the scenario did not record the hog: pid {hog!r}, comm {comm!r}, keeper {keeper!r}"]
    if not checks.KERNEL_OOM.findall(result.dmesg):
        return ["the kernel's OOM killer did not act: nothing for guardian to report"]
    seen = result.entries(MESSAGE_ID=vm.MSG_KERNEL_OOM_KILL)
    mine = [e for e in seen if e.get("GUARDIAN_VICTIM_PID") == hog]
    if len(mine) != 1:
        return [f"expected one kernel OOM kill entry for pid {hog}, got {len(mine)} of {len(seen)}: {seen}"]
    (entry,) = mine
    expected = {
        "GUARDIAN_SOURCE": "kmsg",
        "GUARDIAN_VICTIM_COMM": comm,
        "GUARDIAN_VICTIM_CGROUP": BATCH,
        "GUARDIAN_SCOPE": BATCH,
        "GUARDIAN_OOM_CONSTRAINT": "CONSTRAINT_MEMCG",
        "GUARDIAN_OOM_MEMCG": BATCH,
        "GUARDIAN_RULE": "none",
        "GUARDIAN_WOULD_CHOOSE_PID": keeper,
        "PRIORITY": "4",
    }
    failures += [
        f"{key}: expected {value!r}, got {entry.get(key)!r}"
        for key, value in expected.items()
        if entry.get(key) != value
    ]
    if f"no guardian rule watches {BATCH}" not in str(entry.get("MESSAGE")):
        failures.append(f"the message does not say that no rule watches the group: {entry.get('MESSAGE')!r}")
    if checks.kills(result):
        failures.append(
            f"guardian killed something itself: {[e.get('MESSAGE') for e in checks.kills(result)]}"
        )
    if "kernel OOM kills:" not in result.text("status.txt"):
        failures.append("guardian status does not show the kernel's OOM kills")
    return failures + checks.bystanders_alive(result) + checks.guardian_survived(result)
