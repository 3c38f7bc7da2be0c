"""Expectations every guardian scenario shares, for the scenarios' expect.py (``from e2e import checks``).

Each helper returns a list of failure sentences (empty when all is well), so an expect.py is a
sum of them plus what is particular to its scenario. They read what ``record_outcome`` (guest.sh)
saved, and the journal and dmesg the harness brings back.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from guardian.report import MSG_KILL, MSG_POLICY_REJECTED

KERNEL_OOM = re.compile(r"(Memory cgroup out of memory|Out of memory): Killed process \d+ \(([^)]*)\)")


def usec(entry: dict[str, Any]) -> int:
    return int(entry.get("__MONOTONIC_TIMESTAMP", 0))


def ran(result: Any) -> list[str]:
    """The guest ran the scenario to its end and guardian installed the README's way
    (scripts/install.sh, or dpkg -i of its Debian package)."""
    if not result.finished:
        return [f"the run did not finish: timed out={result.timed_out}, exit status {result.exit_status}"]
    log = result.text("scenario.log")
    if "install.sh exit status 0" not in log and "dpkg -i exit status 0" not in log:
        return [
            "guardian's installation (scripts/install.sh or dpkg -i) failed in the guest; install.log ends:\n"
            + result.tail("install.log", 15)
        ]
    if result.exit_status != 0:
        return [
            f"scenario.sh exit status {result.exit_status}; scenario.log:\n{result.tail('scenario.log', 15)}"
        ]
    return []


def kills(result: Any, scope: Optional[str] = None) -> list[dict[str, Any]]:
    """guardian's kill entries (MESSAGE_ID 7291c848...), oldest first, optionally in one scope."""
    found = result.entries(MESSAGE_ID=MSG_KILL)
    if scope is not None:
        found = [e for e in found if e.get("GUARDIAN_SCOPE") == scope]
    return sorted(found, key=usec)


def no_kernel_oom(result: Any) -> list[str]:
    """Neither a memcg nor a machine-wide kernel OOM kill happened (in a dmesg that was
    collected: an empty one would show none)."""
    if not result.dmesg.strip():
        return ["no dmesg was collected: the kernel's OOM kills cannot be counted"]
    hits = KERNEL_OOM.findall(result.dmesg)
    if hits:
        return [f"the kernel's OOM killer acted {len(hits)} time(s): {[h[1] for h in hits]}"]
    return []


def guardian_survived(result: Any, restarts: int = 0) -> list[str]:
    """guardian ran throughout (restarted only as often as the scenario did), was never a
    victim, and logged no error other than those the scenario provokes."""
    failures = []
    show = result.text("daemon-show-after.txt")
    if "ActiveState=active" not in show or f"NRestarts={restarts}" not in show:
        failures.append(f"guardian.service state after the run: {show.split()}")
    victims = {str(e.get("GUARDIAN_VICTIM_COMM", "")) for e in kills(result)}
    if any(v.startswith("guardian") for v in victims):
        failures.append(f"guardian chose itself: {victims}")
    errors = [
        e
        for e in result.entries(SYSLOG_IDENTIFIER="guardian")
        if int(e.get("PRIORITY", 6)) <= 3 and e.get("MESSAGE_ID") != MSG_POLICY_REJECTED
    ]
    failures += [f"guardian logged an error: {e.get('MESSAGE')!r}" for e in errors]
    tracebacks = [e for e in result.journal if "Traceback" in str(e.get("MESSAGE", ""))]
    failures += [f"a traceback in the journal: {e.get('MESSAGE')!r}" for e in tracebacks[:2]]
    return failures


def bystanders_alive(result: Any) -> list[str]:
    """Every unit listed in bystanders.txt ("unit state") is still active; a scenario that
    checks its bystanders lists at least one (record_outcome UNIT...)."""
    lines = result.text("bystanders.txt").splitlines()
    if not lines:
        return ["bystanders.txt lists no unit: record_outcome was given no bystanders, or never ran"]
    failures = []
    for line in lines:
        unit, _, state = line.partition(" ")
        if state.strip() != "active":
            failures.append(f"bystander {unit} is {state.strip() or 'gone'}")
    return failures


def only_in(result: Any, prefixes: tuple[str, ...]) -> list[str]:
    """Every kill guardian made hit a process in one of these cgroups."""
    outside = [e for e in kills(result) if not str(e.get("GUARDIAN_VICTIM_CGROUP", "")).startswith(prefixes)]
    return [
        f"guardian killed outside {prefixes}: {e.get('GUARDIAN_VICTIM_COMM')} in {e.get('GUARDIAN_VICTIM_CGROUP')} "
        f"({e.get('MESSAGE')})"
        for e in outside
    ]


def largest_before_trigger(result: Any, prefixes: tuple[str, ...], name: str = "oom-scores.txt") -> list[str]:
    """The scenario's premise: in the snapshot guest.sh's sample_memory took just before the
    TERM line (one line per process: oom_score pid cgroup comm), the process with the highest
    oom_score, the kernel's and the size-based daemons' choice, is in one of these cgroups."""
    rows = []
    for line in result.text(name).splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], parts[2], parts[3]))
    if not rows:
        return [f"{name}: no snapshot of the processes before the trigger (MemAvailable never got that low?)"]
    rows.sort(reverse=True)
    if not rows[0][2].startswith(prefixes):
        top = "; ".join(f"{r[3]} ({r[1]}, {r[2]}): {r[0]}" for r in rows[:4])
        return [
            f"the scenario's premise failed: the largest process before the trigger is not in {prefixes}: {top}"
        ]
    return []


def first_victim(
    result: Any, *, comm: Optional[str] = None, cgroup: Optional[str] = None, scope: Optional[str] = None
) -> list[str]:
    """guardian killed something, and its first victim has this comm prefix / cgroup prefix."""
    found = kills(result, scope)
    if not found:
        where = f" in {scope}" if scope else ""
        return [
            f"guardian killed nothing{where}; guardian's journal:\n{result.tail('daemon-journal.txt', 12)}"
        ]
    first = found[0]
    failures = []
    if comm is not None and not str(first.get("GUARDIAN_VICTIM_COMM", "")).startswith(comm):
        failures.append(f"first victim is not {comm}: {json.dumps(_fields(first))[:500]}")
    if cgroup is not None and not str(first.get("GUARDIAN_VICTIM_CGROUP", "")).startswith(cgroup):
        failures.append(f"first victim is not in {cgroup}: {json.dumps(_fields(first))[:500]}")
    if first.get("GUARDIAN_OUTCOME") not in ("terminated", "killed"):
        failures.append(f"first kill did not succeed: {first.get('GUARDIAN_OUTCOME')!r}")
    for field in ("GUARDIAN_TRIGGER", "GUARDIAN_LEVEL", "GUARDIAN_REASON", "GUARDIAN_TOTAL"):
        if not first.get(field):
            failures.append(f"the kill entry lacks {field}")
    return failures


def _fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k.startswith("GUARDIAN_") or k == "MESSAGE"}


def replayed_as_live(result: Any, trace: str, policy: str, scope: str) -> list[str]:
    """The trace ``guardian record`` wrote in the guest, replayed here through the policy the
    daemon ran: its first would-be kill in ``scope`` is the process the daemon killed first."""
    from guardian.trace.fileformat import TraceError, TraceReader
    from guardian.trace.replay import replay

    live = kills(result, scope)
    if not live:
        return [f"no live kill in {scope} to compare the replay with"]
    path = result.results_dir / trace
    if not path.is_file():
        return [f"{trace} did not come back; record.txt:\n{result.tail('record.txt', 10)}"]
    try:
        reader = TraceReader(str(path))
    except TraceError as exc:
        return [f"the trace cannot be read: {exc}"]
    try:
        replayed = replay(reader, str(result.results_dir / policy))
    finally:
        reader.close()
    failures = [] if replayed.error is None else [f"the trace ends in an error: {replayed.error}"]
    chosen = [e for e in replayed.events if e["kind"] == "kill" and e.get("scope") == scope]
    if not chosen:
        triggers = [e for e in replayed.events if e["kind"] == "trigger"][:5]
        return [
            *failures,
            f"the replay of {replayed.frames} frames chose no victim in {scope}; triggers: {triggers}",
        ]
    first, done = chosen[0], live[0]
    same = (first.get("victim_pid"), first.get("victim_cgroup")) == (
        int(done.get("GUARDIAN_VICTIM_PID", -1)),
        done.get("GUARDIAN_VICTIM_CGROUP"),
    )
    if not same:
        failures.append(
            f"the replay chose pid {first.get('victim_pid')} ({first.get('victim_comm')}) in "
            f"{first.get('victim_cgroup')} at frame {first.get('frame')}; the daemon killed pid "
            f"{done.get('GUARDIAN_VICTIM_PID')} ({done.get('GUARDIAN_VICTIM_COMM')}) in {done.get('GUARDIAN_VICTIM_CGROUP')}"
        )
    return failures
