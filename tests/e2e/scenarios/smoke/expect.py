"""What the smoke scenario must show (see scenario.sh): ``check(result)`` returns the failures."""

from __future__ import annotations

import json
import re
from typing import Any

from guardian.report import MSG_KILL, MSG_LIFECYCLE

TIMEOUT_S = 480  # a TCG boot (~15 s), the install (~30 s) twice, a 30 s hog, collection and power-off

# For tests/e2e/bench.py, whichever daemon runs: the cgroups (prefixes) the right victim is in,
# and those that must be spared (any other cgroup where something is killed is a bystander too).
VICTIM = ("/system.slice/hog.service",)
SPARED = ()
# The benchmark races the hog at full speed (the suite throttles it: see scenario.sh).
BENCH_ENV = {"HOG_CPU_QUOTA": "100%"}
MEMORY_MIB = 1024
CPUS = 2

HOG_CGROUP = "/system.slice/hog.service"
KERNEL_MEMCG_OOM = re.compile(r"Memory cgroup out of memory")


def _usec(entry: dict[str, Any]) -> int:
    return int(entry.get("__MONOTONIC_TIMESTAMP", 0))


def check(result: Any) -> list[str]:
    if not result.finished:
        return [f"the run did not finish: timed out={result.timed_out}, exit status {result.exit_status}"]
    if "install.sh exit status 0" not in result.text("scenario.log"):
        return [
            f"scripts/install.sh failed in the guest; install.log ends:\n{result.tail('install.log', 15)}"
        ]
    failures: list[str] = []
    if result.exit_status != 0:
        failures.append(f"scenario.sh exit status {result.exit_status}")

    if result.text("is-active.txt").strip() != "active":
        failures.append(f"guardian.service is not active: {result.text('is-active.txt').strip()!r}")
    started = [
        e for e in result.entries(MESSAGE_ID=MSG_LIFECYCLE) if str(e.get("MESSAGE", "")).startswith("started")
    ]
    if not started:
        failures.append("no 'started' message (MESSAGE_ID=8614d6fc...) from guardian in the journal")

    errors = [
        e
        for e in result.entries(SYSLOG_IDENTIFIER="guardian")
        if int(e.get("PRIORITY", 6)) <= 3 or "Traceback" in str(e.get("MESSAGE", ""))
    ]
    failures += [f"guardian logged an error: {e.get('MESSAGE')!r}" for e in errors]
    show = result.text("daemon-show-after.txt")
    if "NRestarts=0" not in show or "ActiveState=active" not in show:
        failures.append(f"guardian.service restarted or stopped during the run: {show.split()}")

    if "install.sh again: exit status 0" not in result.text("scenario.log"):
        failures.append(f"install.sh run again failed: {result.tail('reinstall.log', 10)}")
    before, after = (
        result.text("pid-before-reinstall.txt").strip(),
        result.text("pid-after-reinstall.txt").strip(),
    )
    if before in ("", "0") or after in ("", "0", before):
        failures.append(f"install.sh run again did not restart guardian: main pid {before!r} -> {after!r}")

    proc = result.text("guardian-proc.txt")
    if "oom_score_adj: -1000" not in proc:
        failures.append(f"guardian's oom_score_adj is not -1000: {proc!r}")

    try:
        status = result.json("status.json")
        layout = status["cgroup_layout"]
        if layout["mode"] != "unified" or layout["memory_controller"] != "v2":
            failures.append(f"guardian status saw cgroup layout {layout}, not pure cgroup v2")
        if status["psi"]["memory"] is None:
            failures.append("guardian status saw no memory PSI")
    except (ValueError, KeyError, TypeError) as e:
        failures.append(f"guardian status --json: unreadable ({e!r}): {result.text('status.json')[:200]!r}")
    try:
        rank = result.json("rank.json")
        if not rank["candidates"]:
            failures.append("guardian rank --json: no candidates on a running system")
    except (ValueError, KeyError, TypeError) as e:
        failures.append(f"guardian rank --json: unreadable ({e!r}): {result.text('rank.json')[:200]!r}")

    kills = [e for e in result.entries(MESSAGE_ID=MSG_KILL) if e.get("GUARDIAN_SCOPE") == HOG_CGROUP]
    if not kills:
        failures.append(f"guardian killed nothing in {HOG_CGROUP}")
    else:
        first = min(kills, key=_usec)
        if not str(first.get("GUARDIAN_VICTIM_COMM", "")).startswith("stress-ng"):
            failures.append(f"guardian's first victim was not stress-ng: {json.dumps(first)[:400]}")
        if first.get("GUARDIAN_OUTCOME") not in ("terminated", "killed"):
            failures.append(
                f"guardian's first kill did not succeed: outcome {first.get('GUARDIAN_OUTCOME')!r}"
            )
    # The kernel's memcg OOM killer must not have acted at all: guardian acts at 10% headroom,
    # and after each of its kills the hog starts again from nothing.
    if not result.dmesg.strip():
        failures.append("no dmesg was collected: the kernel's OOM kills cannot be counted")
    kernel = [
        e
        for e in result.journal
        if e.get("_TRANSPORT") == "kernel" and KERNEL_MEMCG_OOM.search(str(e.get("MESSAGE", "")))
    ]
    if KERNEL_MEMCG_OOM.search(result.dmesg) or kernel:
        first_kernel = min(kernel, key=_usec) if kernel else None
        when = ""
        if kills and first_kernel is not None:
            delta = (_usec(first_kernel) - _usec(min(kills, key=_usec))) / 1e6
            when = f" ({delta:+.2f} s after guardian's first kill)"
        failures.append(
            f"the kernel's memcg OOM killer acted{when}: {result.text('kernel-oom.txt').strip()[:400]}"
        )
    return failures
