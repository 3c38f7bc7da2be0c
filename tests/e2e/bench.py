"""The peer benchmark: every end-to-end scenario with guardian, earlyoom, nohang, systemd-oomd and
no daemon at all, in the same fresh guest, and one table of what happened.

    bash tests/e2e/bench.sh                                   # everything (about 70 minutes)
    bash tests/e2e/bench.sh --daemons earlyoom,none --scenarios hog-fast
    bash tests/e2e/bench.sh --repeat 3 --reuse                # three runs of every cell
    bash tests/e2e/bench.sh --report-only --markdown docs/benchmark.md

Each run is one scenario (tests/e2e/scenarios/NAME) with ``E2E_DAEMON`` set: guest.sh's
``start_daemon`` brings up that daemon with its defaults (systemd-oomd with
``ManagedOOMMemoryPressure=kill`` on system.slice and kubepods.slice), then two instruments:
the latency probe (guest/probe.py: sleeps 10 ms in a loop and records its oversleep) and the
process watcher (guest/watch.py: every pid's cgroup and when it disappeared). The scenario marks
when its pressure starts (``bench_start``). Guardian-only steps (its policies, ``guardian
rank``) are skipped for the peers, which keep their defaults; "reload" and "restart" do
``systemctl reload-or-restart`` / ``restart`` of the peer's unit instead.

What the table reports, the same way whichever daemon ran:

* kernel OOM kills: ``Killed process`` lines of the kernel (dmesg; the serial console if the
  guest hung), memcg and machine-wide alike;
* kills: who killed what. A daemon's kills come from its own log: guardian's kill entries (pid
  and cgroup), earlyoom's ``sending SIGTERM to process PID``, nohang's victim ``PID:`` before
  ``Sending SIG... to the victim``, systemd-oomd's ``Killed CGROUP``; the kernel's from dmesg.
  The watcher gives each pid its cgroup and the time it was gone;
* right victim: the first process killed, by anyone, is in the scenario's ``VICTIM`` cgroups and
  nothing in ``SPARED`` was killed (expect.py); "-" when nothing was killed at all;
* bystanders lost: every other cgroup where something was killed, and every bystander unit that
  was not active at the end (the latency probe counts);
* s to kill: from the pressure's start to the first kill (the victim gone, to the watcher's 0.1 s);
* worst stall: the probe's worst oversleep from the pressure's start to the end of the scenario;
* daemon CPU: what the daemon's unit used over the same time (systemd's ``CPUUsageNSec``).

Runs one at a time: with 2 host cores two TCG guests would slow each other and the stalls.
Results stay under ``--results`` (default /tmp/guardian-bench/DAEMON/SCENARIO), with an
``outcome.json`` per run; ``--reuse`` keeps the runs already there (judged again from their
files), ``--report-only`` runs nothing.

``--repeat N`` runs every (daemon, scenario) cell N times, in rounds (every cell once, then every
cell again), so that a drift in the host's speed falls on every daemon alike. The first run keeps
its place, DAEMON/SCENARIO (a tree of single runs stays valid), the others go to
DAEMON/SCENARIO/runs/2, runs/3, ...; with ``--reuse`` the runs already there count and only the
missing numbers run, without it a cell starts again from run 1 and the old runs/ goes. The report
takes every finished run it finds in a cell (one row per cell still): the right-victim and
bystander columns show the first run's value and how many runs gave the same ("yes (...), 3/3
runs"; bold, followed by the other values, when they disagree), kernel OOM kills the number or,
when runs differ, the lowest and highest, s to kill and daemon CPU the median ("15.4 (3 runs)"),
the worst stall the median, the lowest and the highest (42 ms from runs of 28 to 61 ms) and how
many runs. A cell of one run reads as it always did. Below the table, the stall noise: per daemon,
the median spread (max - min) of the worst stall over its cells with 3 runs or more; two medians
that differ by no more than the larger of the two cells' ranges are within noise, and where
guardian's cell and a peer's both have 3 runs the notes say whether guardian's worst stall is
within noise of the best peer's or how far beyond it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e import vm
from guardian.report import MSG_KILL

DAEMONS = ("guardian", "earlyoom", "nohang", "systemd-oomd", "none")
PEER_PACKAGES = ("earlyoom", "nohang", "systemd-oomd", "systemd", "linux-image-amd64")

KERNEL_KILLED = re.compile(
    r"^\[\s*([\d.]+)\].*?(?:Out of memory|Memory cgroup out of memory): Killed process (\d+) \(([^)]*)\)",
    re.M,
)
KERNEL_TASK = re.compile(r"oom-kill:.*?task_memcg=([^,]*),task=([^,]*),pid=(\d+)")
EARLYOOM_KILL = re.compile(r"sending (SIG\w+) to process (\d+)")
NOHANG_PID = re.compile(r"PID:\s*(\d+)")
NOHANG_SEND = re.compile(r"Sending (SIG\w+) to the victim")
OOMD_KILL = re.compile(r"Killed (/\S+) due to")


@dataclasses.dataclass
class Kill:
    by: str  # "kernel" or the daemon
    pid: Optional[int]
    cgroup: str
    comm: str
    at: float  # CLOCK_BOOTTIME seconds in the guest: when the process was gone (or was signalled)


@dataclasses.dataclass
class Outcome:
    scenario: str
    daemon: str
    finished: bool
    timed_out: bool
    kernel_oom_kills: int
    kills: list[dict[str, Any]]
    right_victim: Optional[bool]  # None: nothing was killed
    bystanders_lost: list[str]
    s_to_kill: Optional[float]
    worst_stall_ms: Optional[float]
    probe_sleeps: int
    daemon_cpu_s: Optional[float]  # the daemon unit's CPU time from the pressure's start to the end
    notes: list[str]  # e.g. a victim's service that was expected to keep running but ended
    failures: list[str]  # the scenario's own checks (guardian runs only)
    wall_s: float

    def remarks(self) -> list[str]:
        """What the notes column says about this run."""
        if not self.finished:
            return ["guest hung: killed at the run's time limit" if self.timed_out else "did not finish"]
        return list(self.notes)

    def right_text(self) -> str:
        right = {None: "-", True: "yes", False: "**no**"}[self.right_victim]
        if self.right_victim is not None and self.kills:
            right += f" ({_short(self.kills[0]['cgroup'])}, {self.kills[0]['by']})"
        return right

    def bystanders_text(self) -> str:
        lost = self.bystanders_lost
        return str(len(lost)) + (f" ({', '.join(lost)})" if lost else "")

    def row(self) -> list[str]:
        return [
            self.scenario,
            self.daemon,
            str(self.kernel_oom_kills),
            self.right_text(),
            self.bystanders_text(),
            "-" if self.s_to_kill is None else f"{self.s_to_kill:.1f}",
            _stall(self.worst_stall_ms),
            "-" if self.daemon_cpu_s is None else f"{self.daemon_cpu_s:.2f}",
            "; ".join(self.remarks()),
        ]


def _short(cgroup: str) -> str:
    return cgroup.rstrip("/").rsplit("/", 1)[-1] or "/"


def _stall(ms: Optional[float]) -> str:
    if ms is None:
        return "-"
    if ms < 20:
        return "<20"
    return f"{ms:.0f}" if ms < 10_000 else f"{ms / 1000:.0f} s"


# --- reading a run -----------------------------------------------------------------------------


def _float(text: str) -> Optional[float]:
    try:
        return float(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return None


def _json(result: vm.RunResult, name: str) -> Any:
    try:
        return result.json(name)
    except ValueError:
        return None


def kernel_text(result: vm.RunResult) -> str:
    """The kernel's log: dmesg, or the serial console when the guest never got to save it."""
    if result.dmesg:
        return result.dmesg
    return result.console_log.read_text(errors="replace") if result.console_log.is_file() else ""


def kernel_kills(text: str, watched: dict[str, Any]) -> list[Kill]:
    memcg = {int(m.group(3)): m.group(1) for m in KERNEL_TASK.finditer(text)}
    found = []
    for m in KERNEL_KILLED.finditer(text):
        pid = int(m.group(2))
        info = watched.get(str(pid), {})
        found.append(
            Kill(
                "kernel",
                pid,
                memcg.get(pid) or info.get("cgroup", "?"),
                m.group(3),
                _gone(info, float(m.group(1))),
            )
        )
    return found


def _gone(info: dict[str, Any], fallback: float) -> float:
    return float(info["gone"]) if info.get("gone") is not None else fallback


def _unit_entries(result: vm.RunResult, unit: str) -> list[dict[str, Any]]:
    entries = [e for e in result.journal if e.get("_SYSTEMD_UNIT") == unit]
    return sorted(entries, key=lambda e: int(e.get("__MONOTONIC_TIMESTAMP", 0)))


def _at(entry: dict[str, Any]) -> float:
    return int(entry.get("__MONOTONIC_TIMESTAMP", 0)) / 1e6


def daemon_kills(result: vm.RunResult, daemon: str, watched: dict[str, Any]) -> list[Kill]:
    """The kills a daemon says it made, from its own log."""
    signalled: list[tuple[int, float, str]] = []  # pid, when, cgroup if the daemon says
    found: list[Kill] = []
    if daemon == "guardian":
        for e in result.entries(MESSAGE_ID=MSG_KILL):
            if e.get("GUARDIAN_OUTCOME") not in ("terminated", "killed"):
                continue
            pids = str(e.get("GUARDIAN_VICTIM_PIDS") or e.get("GUARDIAN_VICTIM_PID") or "")
            for pid in (int(p) for p in pids.split(",") if p.strip().isdigit()):
                signalled.append((pid, _at(e), str(e.get("GUARDIAN_VICTIM_CGROUP", ""))))
    elif daemon == "earlyoom":
        for e in _unit_entries(result, "earlyoom.service"):
            m = EARLYOOM_KILL.search(str(e.get("MESSAGE", "")))
            if m:
                signalled.append((int(m.group(2)), _at(e), ""))
    elif daemon == "nohang":
        last_pid: Optional[int] = None
        for e in _unit_entries(result, "nohang.service"):
            message = str(e.get("MESSAGE", ""))
            pid_match = NOHANG_PID.search(message)
            if pid_match:
                last_pid = int(pid_match.group(1))
            if NOHANG_SEND.search(message) and last_pid is not None:
                signalled.append((last_pid, _at(e), ""))
    elif daemon == "systemd-oomd":
        for e in _unit_entries(result, "systemd-oomd.service"):
            m = OOMD_KILL.search(str(e.get("MESSAGE", "")))
            if not m:
                continue
            cgroup, when = m.group(1), _at(e)
            victims = [
                (pid, info)
                for pid, info in watched.items()
                if (info["cgroup"] == cgroup or info["cgroup"].startswith(cgroup + "/"))
                and info.get("gone") is not None
                and float(info["gone"]) >= when - 1.0
            ]
            if not victims:
                found.append(Kill(daemon, None, cgroup, "", when))
            for pid, info in victims:
                found.append(
                    Kill(daemon, int(pid), info["cgroup"], str(info.get("comm", "")), _gone(info, when))
                )
    for pid, when, cgroup in signalled:
        info = watched.get(str(pid), {})
        found.append(
            Kill(
                daemon, pid, info.get("cgroup") or cgroup or "?", str(info.get("comm", "")), _gone(info, when)
            )
        )
    return found


def daemon_cpu(result: vm.RunResult) -> Optional[float]:
    """CPU seconds the daemon's unit used between bench_start and bench_finish (systemd's
    CPUUsageNSec; a restart starts the count again, then only the new instance counts)."""
    start, end = _float(result.text("daemon-cpu-start.txt")), _float(result.text("daemon-cpu-end.txt"))
    if end is None:
        return None
    return (end - start if start is not None and end >= start else end) / 1e9


def worst_stall(probe: Any, start: float, end: Optional[float]) -> Optional[float]:
    """The probe's worst oversleep between start and end (ms); below 20 ms it keeps no times."""
    if not isinstance(probe, dict) or not probe.get("sleeps"):
        return None
    stop = end if end is not None else float("inf")
    inside = [late for at, late in probe.get("noted", []) if start <= at <= stop]
    if inside:
        return max(inside)
    return min(float(probe.get("worst_ms", 0.0)), 19.9)


def analyse(scenario: vm.Scenario, daemon: str, result: vm.RunResult, failures: list[str]) -> Outcome:
    watch = _json(result, "watch.json") or {}
    watched: dict[str, Any] = watch.get("pids", {}) if isinstance(watch, dict) else {}
    text = kernel_text(result)
    kernel = kernel_kills(text, watched)
    kills = kernel + (daemon_kills(result, daemon, watched) if daemon != "none" else [])
    first_by_pid: dict[Any, Kill] = {}
    for k in sorted(kills, key=lambda k: k.at):
        first_by_pid.setdefault(k.pid if k.pid is not None else k.cgroup, k)
    ordered = sorted(first_by_pid.values(), key=lambda k: k.at)

    start = _float(result.text("bench-start.txt"))
    end = _float(result.text("bench-end.txt"))
    if end is None and isinstance(watch, dict) and watch.get("ended"):
        end = float(watch["ended"])

    def victim(cgroup: str) -> bool:
        return any(cgroup.startswith(v) for v in scenario.victim)

    right: Optional[bool] = None
    if ordered:
        spared_hit = any(any(k.cgroup.startswith(s) for s in scenario.spared) for k in ordered)
        right = victim(ordered[0].cgroup) and not spared_hit
    lost = {_short(k.cgroup) for k in ordered if not victim(k.cgroup)}
    notes = []
    for line in result.text("bystanders.txt").splitlines():
        unit, _, state = line.partition(" ")
        if not unit or state.strip() == "active":
            continue
        if any(_short(v) == unit for v in scenario.victim):  # should have lost one process only
            notes.append(f"all of {unit} ended")
        else:
            lost.add(unit)
    probe = _json(result, "probe.json")
    if result.text("bench-end.txt") and "latency probe: active" not in result.text("scenario.log"):
        lost.add("e2e-probe.service")
    return Outcome(
        scenario=scenario.name,
        daemon=daemon,
        finished=result.finished,
        timed_out=result.timed_out,
        kernel_oom_kills=len(KERNEL_KILLED.findall(text)),
        kills=[dataclasses.asdict(k) for k in ordered],
        right_victim=right,
        bystanders_lost=sorted(lost),
        s_to_kill=(ordered[0].at - start) if ordered and start is not None else None,
        worst_stall_ms=worst_stall(probe, start, end) if start is not None else None,
        probe_sleeps=int(probe.get("sleeps", 0)) if isinstance(probe, dict) else 0,
        daemon_cpu_s=daemon_cpu(result),
        notes=notes,
        failures=failures,
        wall_s=result.wall_s,
    )


# --- running -----------------------------------------------------------------------------------


def run_one(scenario: vm.Scenario, daemon: str, results: Path, image: vm.Image) -> Outcome:
    env = {**scenario.env, **scenario.bench_env, "E2E_DAEMON": daemon}
    return judge(scenario, daemon, scenario.run(results, image=image, env=env))


def judge(scenario: vm.Scenario, daemon: str, result: vm.RunResult) -> Outcome:
    """The run's outcome (also saved as outcome.json beside its results)."""
    failures = scenario.check(result) if daemon == "guardian" else []
    outcome = analyse(scenario, daemon, result, failures)
    (result.results_dir / "outcome.json").write_text(json.dumps(dataclasses.asdict(outcome), indent=2) + "\n")
    return outcome


def stored(scenario: vm.Scenario, daemon: str, results: Path) -> Optional[Outcome]:
    """A kept run judged again from its files (the analysis may have changed since), or None."""
    if not (results / "qemu.json").is_file():
        return None
    return judge(scenario, daemon, vm.read_result(results, scenario.name))


RUNS_DIR = "runs"


def run_dir(cell: Path, number: int) -> Path:
    """Where run `number` (from 1) of a cell (RESULTS/DAEMON/SCENARIO) keeps its results: the first
    in the cell's own directory, as when every cell had one run, the others in cell/runs/NUMBER."""
    return cell if number == 1 else cell / RUNS_DIR / str(number)


def kept_runs(cell: Path) -> list[Path]:
    """The results directories of a cell's finished runs (those with a qemu.json), by number."""
    found = [(1, cell)] if (cell / "qemu.json").is_file() else []
    others = cell / RUNS_DIR
    if others.is_dir():
        for d in others.iterdir():
            if d.name.isdigit() and int(d.name) >= 2 and (d / "qemu.json").is_file():
                found.append((int(d.name), d))
    return [d for _, d in sorted(found)]


def run_numbered(
    scenario: vm.Scenario, daemon: str, cell: Path, number: int, image: vm.Image, *, keep: bool
) -> Outcome:
    """Run `number` of a cell. vm.run_scenario empties a results directory before it runs, and the
    first run's holds the others (cell/runs): they are set aside meanwhile and put back when keep
    (--reuse), else dropped (a new pass starts the cell again)."""
    others = cell / RUNS_DIR
    if number != 1 or not others.is_dir():
        return run_one(scenario, daemon, run_dir(cell, number), image)
    if not keep:
        shutil.rmtree(others)
        return run_one(scenario, daemon, cell, image)
    aside = cell.parent / f".{cell.name}.{RUNS_DIR}"
    if aside.exists():
        raise FileExistsError(f"{aside} is left from an interrupted run: move it back to {others}")
    others.rename(aside)
    try:
        return run_one(scenario, daemon, cell, image)
    finally:
        cell.mkdir(parents=True, exist_ok=True)
        aside.rename(others)


# --- the table ---------------------------------------------------------------------------------

HEADER = [
    "scenario",
    "daemon",
    "kernel OOM kills",
    "right victim (first killed, by)",
    "bystanders lost",
    "s to kill",
    "worst stall (ms)",
    "daemon CPU (s)",
    "notes",
]


PEERS = ("earlyoom", "nohang", "systemd-oomd")
NOISE_RUNS = 3  # a cell's worst stalls say how noisy it is from this many runs on
PROBE_RESOLUTION_MS = 20.0  # the probe keeps no time for an oversleep below this
DASH, TIMES = "\N{EN DASH}", "\N{MULTIPLICATION SIGN}"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _runs(have: int, of: int) -> str:
    return f"{have} runs" if have == of else f"{have} of {of} runs"


def _agreeing(values: Sequence[str]) -> str:
    """The first run's value, and how many runs gave the same: bold when not all did, then the
    other values (with how many runs gave each when more than one)."""
    first, n = values[0], len(values)
    same = values.count(first)
    if same == n:
        return f"{first}, {n}/{n} runs"
    others = []
    for value in dict.fromkeys(v for v in values if v != first):
        count = values.count(value)
        others.append(value + (f" {TIMES}{count}" if count > 1 else ""))
    return f"{first}, **{same}/{n} runs**; also {'; '.join(others)}"


def _ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.0f} s"


def _stall_range(low: float, high: float) -> str:
    if high >= 10_000:  # in seconds, as _stall writes them
        return f"{'<0.02' if low < PROBE_RESOLUTION_MS else f'{low / 1000:.1f}'}{DASH}{high / 1000:.0f} s"
    return f"{_stall(low)}{DASH}{_stall(high)}"


@dataclasses.dataclass
class Cell:
    """Every run of one daemon in one scenario, the first run first: one row of the table."""

    runs: list[Outcome]

    @property
    def scenario(self) -> str:
        return self.runs[0].scenario

    @property
    def daemon(self) -> str:
        return self.runs[0].daemon

    def stalls(self) -> list[float]:
        """The runs' worst stalls, those under the probe's resolution counted as at it."""
        return [max(o.worst_stall_ms, PROBE_RESOLUTION_MS) for o in self.runs if o.worst_stall_ms is not None]

    def stall_noise(self) -> Optional[tuple[float, float]]:
        """(median, spread = max - min) of the worst stall, from NOISE_RUNS runs or more; else None."""
        stalls = self.stalls()
        if len(stalls) < NOISE_RUNS:
            return None
        return _median(stalls), max(stalls) - min(stalls)

    def _median_text(self, values: Sequence[Optional[float]], digits: int) -> str:
        have = [v for v in values if v is not None]
        if not have:
            return "-"
        return f"{_median(have):.{digits}f} ({_runs(len(have), len(values))})"

    def _stall_text(self) -> str:
        have = [o.worst_stall_ms for o in self.runs if o.worst_stall_ms is not None]
        if not have:
            return "-"
        runs = _runs(len(have), len(self.runs))
        low, high = min(have), max(have)
        if _stall(low) == _stall(high):
            return f"{_stall(_median(have))} ({runs})"
        return f"{_stall(_median(have))} ({_stall_range(low, high)}, {runs})"

    def row(self, more_notes: Sequence[str] = ()) -> list[str]:
        if len(self.runs) == 1 and not more_notes:
            return self.runs[0].row()
        n = len(self.runs)
        kernel = [o.kernel_oom_kills for o in self.runs]
        remarks = [r for o in self.runs for r in dict.fromkeys(o.remarks())]
        notes = [
            r + ("" if remarks.count(r) == n else f" ({remarks.count(r)}/{n} runs)")
            for r in dict.fromkeys(remarks)
        ]
        return [
            self.scenario,
            self.daemon,
            str(kernel[0]) if min(kernel) == max(kernel) else f"{min(kernel)}{DASH}{max(kernel)}",
            _agreeing([o.right_text() for o in self.runs]),
            _agreeing([o.bystanders_text() for o in self.runs]),
            self._median_text([o.s_to_kill for o in self.runs], 1),
            self._stall_text(),
            self._median_text([o.daemon_cpu_s for o in self.runs], 2),
            "; ".join([*notes, *more_notes]),
        ]


def cells(outcomes: Sequence[Outcome]) -> list[Cell]:
    """The runs grouped by (scenario, daemon), in the order each pair first appears."""
    grouped: dict[tuple[str, str], Cell] = {}
    for o in outcomes:
        grouped.setdefault((o.scenario, o.daemon), Cell([])).runs.append(o)
    return list(grouped.values())


def stall_vs_best_peer(guardian: Cell, others: Sequence[Cell]) -> Optional[str]:
    """guardian's worst stall against the best peer's (the lowest median among earlyoom, nohang and
    systemd-oomd) in the same scenario, where both cells have NOISE_RUNS runs or more: "within
    noise" when the medians differ by no more than the larger of the two ranges, else by how much
    guardian's is above (+) or below (-) the peer's beyond that."""
    mine = guardian.stall_noise()
    peers = []
    for cell in others:
        theirs = cell.stall_noise() if cell.daemon in PEERS else None
        if theirs is not None:
            peers.append((theirs, cell.daemon))
    if mine is None or not peers:
        return None
    (best_median, best_spread), best = min(peers)
    difference = mine[0] - best_median
    noise = max(mine[1], best_spread)
    if abs(difference) <= noise:
        return f"stall vs best peer ({best}): within noise"
    beyond = abs(difference) - noise
    return f"stall vs best peer ({best}): {'+' if difference > 0 else '-'}{beyond:.0f} ms beyond noise"


def table(outcomes: Sequence[Outcome]) -> str:
    """One row per (scenario, daemon); a cell of several runs shows the first run's outcome (and
    how many runs agreed), the medians of the numbers, and the range of the worst stall."""
    grouped = cells(outcomes)
    rows = [HEADER, ["---"] * len(HEADER)]
    for cell in grouped:
        same_scenario = [c for c in grouped if c.scenario == cell.scenario and c is not cell]
        note = stall_vs_best_peer(cell, same_scenario) if cell.daemon == "guardian" else None
        rows.append(cell.row([note] if note else []))
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def stall_noise(outcomes: Sequence[Outcome]) -> str:
    """How noisy the worst-stall column is: per daemon, the median spread of its cells with
    NOISE_RUNS runs or more, and the rule the notes column applies."""
    grouped = cells(outcomes)
    per_daemon: dict[str, list[float]] = {}
    for cell in grouped:
        noise = cell.stall_noise()
        per_daemon.setdefault(cell.daemon, [])
        if noise is not None:
            per_daemon[cell.daemon].append(noise[1])
    if not any(per_daemon.values()):
        return (
            f"Stall noise: not estimated, no cell has {NOISE_RUNS} runs or more "
            f"(`--repeat {NOISE_RUNS}` runs each cell {NOISE_RUNS} times)."
        )
    parts = []
    for daemon, spreads in per_daemon.items():
        if spreads:
            parts.append(
                f"{daemon} {_ms(_median(spreads))} ({len(spreads)} cell{'s' if len(spreads) > 1 else ''}, "
                f"largest {_ms(max(spreads))})"
            )
        else:
            parts.append(f"{daemon} not estimated (no cell with {NOISE_RUNS} runs)")
    return (
        f"Stall noise, from the cells with {NOISE_RUNS} runs or more (a stall under "
        f"{PROBE_RESOLUTION_MS:.0f} ms, the probe's resolution, counts as {PROBE_RESOLUTION_MS:.0f} ms): "
        f"the median spread (max - min over a cell's runs) of the worst stall is {', '.join(parts)}. "
        "A difference between two daemons' medians no larger than the larger of their two ranges is "
        f"within noise. Where guardian's cell and a peer's ({', '.join(PEERS)}) both have "
        f"{NOISE_RUNS} runs or more, the notes compare guardian's median with the best peer's (the "
        'lowest): "within noise", or by how much the difference goes beyond the noise ("+N ms": '
        "guardian's is higher)."
    )


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"host {platform.node() or '?'}: Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem}"


def guest_versions(image: Optional[vm.Image]) -> str:
    if image is None:
        return ""
    stamp = image.stamp
    packages = {}
    for line in (image.disk.parent / "stamp").read_text().splitlines():
        name, _, version = line.partition(" ")
        if name in PEER_PACKAGES:
            packages[name] = version
    parts = [f"{n} {packages[n]}" for n in PEER_PACKAGES if n in packages]
    return f"guest: Debian {stamp.get('suite', '?')}, kernel {stamp.get('kernel', '?')}; " + ", ".join(parts)


TABLE_BEGIN = "<!-- bench.py: table begins -->"
TABLE_END = "<!-- bench.py: table ends -->"


def write_markdown(path: Path, block: str) -> None:
    """Put block between the table markers of path (the prose around it stays), or write a new
    file with just the markers and the block."""
    block = f"{TABLE_BEGIN}\n{block}{TABLE_END}"
    old = path.read_text() if path.is_file() else ""
    if TABLE_BEGIN in old and TABLE_END in old:
        head, _, rest = old.partition(TABLE_BEGIN)
        _, _, tail = rest.partition(TABLE_END)
        path.write_text(head + block + tail)
    else:
        path.write_text(block + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemons", default=",".join(DAEMONS), help=f"comma-separated, from {DAEMONS}")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--results", type=Path, default=Path("/tmp/guardian-bench"))
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each (daemon, scenario) N times (default 1)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the runs already in --results; run only the missing ones"
    )
    parser.add_argument("--report-only", action="store_true", help="run nothing: judge the runs in --results")
    parser.add_argument(
        "--markdown", type=Path, help="also write the table to this file, with date and machine"
    )
    args = parser.parse_args(argv)

    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    daemons = [d for d in args.daemons.split(",") if d]
    unknown = [d for d in daemons if d not in DAEMONS]
    if unknown:
        parser.error(f"unknown daemons {unknown}; choose from {DAEMONS}")
    # the installation scenarios (BENCH = False) are about guardian alone
    scenarios = [s for s in map(vm.load_scenario, vm.scenario_dirs()) if s.bench]
    if args.scenarios:
        wanted = args.scenarios.split(",")
        missing = set(wanted) - {s.name for s in scenarios}
        if missing:
            parser.error(f"no such scenarios: {sorted(missing)}")
        by_name = {s.name: s for s in scenarios}
        scenarios = [by_name[name] for name in wanted]  # in the order given

    image: Optional[vm.Image] = None
    if not args.report_only:
        problem = vm.qemu_problem()
        if problem:
            print(f"bench: {problem}", file=sys.stderr)
            return 2
        image = vm.find_image()
    else:
        try:
            image = vm.find_image()
        except vm.ImageUnavailable:
            image = None

    done: dict[Path, Outcome] = {}  # the runs of this invocation, already judged
    started = time.monotonic()
    for number in range(1, 1 if args.report_only else args.repeat + 1):
        for scenario in scenarios:  # a round of every cell before the next, so that a drift of
            for daemon in daemons:  # the host's speed is spread over every daemon alike
                cell = args.results / daemon / scenario.name
                results = run_dir(cell, number)
                if args.reuse and (results / "qemu.json").is_file():
                    continue
                assert image is not None
                which = f"{scenario.name} with {daemon}" + (
                    f" (run {number} of {args.repeat})" if args.repeat > 1 else ""
                )
                print(f"bench: {which} ...", flush=True)
                outcome = run_numbered(scenario, daemon, cell, number, image, keep=args.reuse)
                done[results] = outcome
                print(f"bench: {which}: {outcome.wall_s:.0f} s; " + " | ".join(outcome.row()[2:]), flush=True)
                for failure in outcome.failures:
                    print(f"bench:   guardian check failed: {failure}", flush=True)

    outcomes = []
    for scenario in scenarios:
        for daemon in daemons:
            for results in kept_runs(args.results / daemon / scenario.name):
                judged = done.get(results) or stored(scenario, daemon, results)
                if judged is not None:
                    outcomes.append(judged)

    text = table(outcomes)
    noise = stall_noise(outcomes)
    print(text)
    print(noise)
    print(f"bench: {len(outcomes)} runs, {time.monotonic() - started:.0f} s")
    if args.markdown:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_markdown(
            args.markdown,
            f"Written by `tests/e2e/bench.py` on {when}.\n{machine()}.\n{guest_versions(image)}.\n\n"
            f"{text}\n\n{noise}\n",
        )
    failed = [
        o
        for o in outcomes
        if o.daemon == "guardian" and (o.failures or o.kernel_oom_kills or not o.right_victim)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
