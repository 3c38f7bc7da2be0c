"""Pure assessment: (sample, policy, state, now) -> which scopes are in trouble, how badly, why.

Conditions, each giving a TERM or KILL level:

* machine memory: MemAvailable at or below its level AND SwapFree at or below its level (or no
  swap), as earlyoom decides (both must be low: free swap is still room);
* machine PSI: the live stall rate (from ``total``, not avg10) at or above ``stall_pct``
  continuously for ``duration_s``, and only if reclaim ran (pgscan rose) within
  ``reclaim_window_s``, as systemd-oomd requires, so that a CPU-starved box is not mistaken for
  a memory-starved one (peers.md section 3, items 2 and 3);
* per cgroup rule, for every cgroup its glob matches: headroom (``memory.max - memory.current``)
  at or below its level; the cgroup's memory.pressure over a duration; memory.events counters
  (``high``, ``max``, ``oom``) rising faster than a rate.

Hysteresis: a low-memory condition, once on, stays on until the quantity climbs back above its
TERM level plus ``hysteresis_pct`` of its total, so a value hovering at the line does not flap.
PSI conditions need their whole duration again after the stall rate drops below the line.

The state (stall meters, timers, last counters) is owned by the caller and passed in; nothing
here reads the OS except through the Sample.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Optional, Union

from guardian.config import Levels, Policy, PsiRule
from guardian.errors import Unavailable
from guardian.frozen import frozen
from guardian.kinds import Condition, Level, RuleAction
from guardian.pace import MEMORY, SWAP, Pace, bounded_wait, machine_seconds
from guardian.records import Pressure
from guardian.sample import Sample
from guardian.sources.psi import StallMeter

TERM: Level = "TERM"
KILL: Level = "KILL"
Value = Union[int, float, str]


@frozen
class Trigger:
    """One crossed condition: where (``scope`` None = the machine), how badly, and why."""

    rule: str  # "machine" or "cgroup[N]"
    scope: Optional[str]
    condition: Condition
    level: Level
    action: RuleAction
    reason: str  # a sentence for the operator
    values: Mapping[str, Value] = field(default_factory=dict)
    detected_us: int = 0  # CLOCK_MONOTONIC of the sample that crossed (journald's clock too)

    @property
    def key(self) -> tuple[str, Optional[str], str]:
        return (self.rule, self.scope, self.condition)


@frozen
class Assessment:
    """One look's verdict: the triggers that hold and when to look again."""

    time_us: int
    triggers: tuple[Trigger, ...]
    interval_s: float  # when to look again if no kernel event comes first


@dataclass
class PolicyState:
    """What assessments remember between ticks. Owned by the daemon, changed only by assess()."""

    meters: dict[tuple[str, Optional[str]], StallMeter] = field(default_factory=dict)
    stalled_since_us: dict[tuple[str, Optional[str]], int] = field(default_factory=dict)
    on: set[tuple[str, Optional[str], str]] = field(default_factory=set)
    events: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    pgscan: Optional[tuple[int, int]] = None
    last_reclaim_us: Optional[int] = None
    psi_polled_us: Optional[int] = None  # the last tick that read a PSI source
    pace: Pace = field(default_factory=Pace)  # how fast each line's gap was measured closing


PSI_POLL_S = 1.0  # while PSI is read (trigger fired, or no trigger possible), look this often
STALL_POLL_S = 0.25  # while a stall is timed or a PSI or events condition holds, at least this often


PsiKey = tuple[str, Optional[str]]


def _psi_quiet(state: PolicyState, key: PsiKey, now_us: int, quiet: Collection[PsiKey]) -> bool:
    """True when a PSI source needs no read this tick: its kernel trigger is armed and has not
    fired lately (the caller's ``quiet``), and no stall is being timed. Otherwise the source is
    read, and the next look comes within PSI_POLL_S."""
    if key in quiet and key not in state.stalled_since_us:
        return True
    state.psi_polled_us = now_us
    return False


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _at_or_below(levels: Levels, level: Level) -> str:
    """`` at or below <the line of the level reached>``: the KILL line at KILL, else TERM's."""
    line = levels.kill if level == KILL and levels.kill is not None else (levels.term or levels.kill)
    return "" if line is None else f" at or below {line}"


def _level(value: int, levels: Levels, total: int, hysteresis: int, was_on: bool) -> Optional[Level]:
    """KILL, TERM or None for a quantity that is bad when low."""
    if levels.kill is not None and value <= levels.kill.resolve(total):
        return KILL
    if levels.term is not None:
        line = levels.term.resolve(total)
        if value <= line or (was_on and value <= line + hysteresis):
            return TERM
    elif levels.kill is not None and was_on and value <= levels.kill.resolve(total) + hysteresis:
        return TERM
    return None


def _machine_memory(sample: Sample, policy: Policy, state: PolicyState) -> Optional[Trigger]:
    rule = policy.machine
    if not rule.mem_available.enabled:
        return None
    mem = sample.meminfo
    key = ("machine", None, "memory")
    was_on = key in state.on
    hyst_mem = int(mem.total_bytes * policy.hysteresis_pct / 100)
    hyst_swap = int(mem.swap_total_bytes * policy.hysteresis_pct / 100)
    mem_level = _level(mem.available_bytes, rule.mem_available, mem.total_bytes, hyst_mem, was_on)
    if mem.swap_total_bytes and rule.swap_free.enabled:
        swap_level = _level(mem.swap_free_bytes, rule.swap_free, mem.swap_total_bytes, hyst_swap, was_on)
    else:
        swap_level = KILL  # no swap (or swap not judged): memory alone decides
    if mem_level is None or swap_level is None:
        state.on.discard(key)
        return None
    level = KILL if mem_level == KILL and swap_level == KILL else TERM
    state.on.add(key)
    values: dict[str, Value] = {
        "mem_available_bytes": mem.available_bytes,
        "mem_available_pct": round(mem.available_pct, 2),
        "mem_total_bytes": mem.total_bytes,
    }
    reason = f"MemAvailable {_mib(mem.available_bytes)} ({mem.available_pct:.1f}%)"
    reason += _at_or_below(rule.mem_available, mem_level)
    if mem.swap_total_bytes:
        values["swap_free_bytes"] = mem.swap_free_bytes
        reason += f", SwapFree {_mib(mem.swap_free_bytes)} ({mem.swap_free_pct or 0:.1f}%)"
        if rule.swap_free.enabled:
            reason += _at_or_below(rule.swap_free, swap_level)
    return Trigger("machine", None, "memory", level, "process", reason, values)


def _stall(
    state: PolicyState,
    key: tuple[str, Optional[str]],
    pressure: Pressure,
    rule: PsiRule,
    now_us: int,
) -> Optional[tuple[float, float]]:
    """Feed the meter; (rate, seconds above the line) once the rate has held for the duration."""
    meter = state.meters.get(key)
    if meter is None:
        meter = state.meters[key] = StallMeter(window_us=1_000_000)
    meter.add(now_us, pressure)
    rate = meter.rate()
    if rate is None:
        return None
    pct = rate.some_pct if rule.kind == "some" else (rate.full_pct or 0.0)
    if pct < rule.stall_pct:
        state.stalled_since_us.pop(key, None)
        return None
    since = state.stalled_since_us.setdefault(key, now_us)
    held_s = (now_us - since) / 1e6
    if held_s < rule.duration_s:
        return None
    return pct, held_s


def _reclaim_recent(sample: Sample, policy: Policy, state: PolicyState, now_us: int, stalling: bool) -> bool:
    """Did pgscan rise within the reclaim window? /proc/vmstat is read every tick only while a
    stall is being timed; otherwise just often enough (half a window) to keep a fresh baseline,
    so an idle tick costs one read of meminfo, not two hundred vmstat lines."""
    window = policy.machine.reclaim_window_s
    if window is None:
        return True
    stale = state.pgscan is None or now_us - state.pgscan[0] > window * 1e6 / 2
    if not stalling and not stale:
        return False
    try:
        pgscan = sample.vmstat.pgscan
    except Unavailable:
        return True  # cannot tell: do not block the PSI rule on it
    if state.pgscan is not None and pgscan > state.pgscan[1]:
        state.last_reclaim_us = now_us
    state.pgscan = (now_us, pgscan)
    return state.last_reclaim_us is not None and now_us - state.last_reclaim_us <= window * 1e6


def _machine_psi(
    sample: Sample, policy: Policy, state: PolicyState, now_us: int, quiet: Collection[PsiKey]
) -> Optional[Trigger]:
    rule = policy.machine.psi
    if rule is None:
        return None
    key: PsiKey = ("machine", None)
    if _psi_quiet(state, key, now_us, quiet):
        _reclaim_recent(sample, policy, state, now_us, stalling=False)  # keep the baseline fresh
        return None
    pressure = sample.pressure_or_none("memory")
    if pressure is None:
        return None
    held = _stall(state, key, pressure, rule, now_us)
    reclaim = _reclaim_recent(sample, policy, state, now_us, stalling=key in state.stalled_since_us)
    if held is None or not reclaim:
        return None
    pct, held_s = held
    reason = (
        f"memory {rule.kind} stall {pct:.0f}% for {held_s:.1f}s "
        f"(line {rule.stall_pct:g}% for {rule.duration_s:g}s)"
    )
    if policy.machine.reclaim_window_s is not None:
        reason += f", with reclaim in the last {policy.machine.reclaim_window_s:g}s"
    values: dict[str, Value] = {
        "stall_pct": round(pct, 2),
        "stall_kind": rule.kind,
        "held_s": round(held_s, 2),
    }
    return Trigger("machine", None, "psi", TERM, "process", reason, values)


def _cgroup_triggers(
    sample: Sample,
    policy: Policy,
    state: PolicyState,
    now_us: int,
    cgroups: Iterable[str],
    prune: bool = True,
    quiet: Collection[PsiKey] = (),
    quiet_events: Collection[str] = (),
) -> list[Trigger]:
    triggers: list[Trigger] = []
    seen_events: set[str] = set()
    for path in cgroups:
        for index, rule in enumerate(policy.cgroups):
            if not rule.matches(path):
                continue
            label = rule.label or f"cgroup[{index}]"
            group = sample.cgroup(path)
            if rule.headroom.enabled:
                try:
                    memory = group.usage
                except Unavailable:
                    memory = None
                if memory is not None and memory.headroom_bytes is not None and memory.max_bytes:
                    key = (label, path, "headroom")
                    hyst = int(memory.max_bytes * policy.hysteresis_pct / 100)
                    level = _level(
                        memory.headroom_bytes, rule.headroom, memory.max_bytes, hyst, key in state.on
                    )
                    if level is None:
                        state.on.discard(key)
                    else:
                        state.on.add(key)
                        reason = (
                            f"headroom {_mib(memory.headroom_bytes)} of limit {_mib(memory.max_bytes)}"
                            + _at_or_below(rule.headroom, level)
                        )
                        values: dict[str, Value] = {
                            "headroom_bytes": memory.headroom_bytes,
                            "current_bytes": memory.current_bytes or 0,
                            "max_bytes": memory.max_bytes,
                        }
                        triggers.append(Trigger(label, path, "headroom", level, rule.action, reason, values))
            if rule.psi is not None and not _psi_quiet(state, (label, path), now_us, quiet):
                try:
                    pressure: Optional[Pressure] = group.pressure
                except Unavailable:
                    pressure = None
                if pressure is not None:
                    held = _stall(state, (label, path), pressure, rule.psi, now_us)
                    if held is not None:
                        pct, held_s = held
                        reason = f"memory.pressure {rule.psi.kind} stall {pct:.0f}% for {held_s:.1f}s"
                        values = {
                            "stall_pct": round(pct, 2),
                            "stall_kind": rule.psi.kind,
                            "held_s": round(held_s, 2),
                        }
                        triggers.append(Trigger(label, path, "psi", TERM, rule.action, reason, values))
            if rule.events is not None:
                seen_events.add(path)
                known = state.events.get(path) if path in quiet_events else None
                if known is not None:  # unchanged since read: the kernel reports every change
                    counters: Optional[Mapping[str, int]] = known[1]
                else:
                    try:
                        counters = group.events
                    except Unavailable:
                        counters = None
                trig = _events(counters, rule.events.limits(), state, path, now_us)
                if trig is not None:
                    reason, values = trig
                    triggers.append(Trigger(label, path, "events", TERM, rule.action, reason, values))
    if prune:  # forget groups that are gone, or no longer watched for events
        for gone in set(state.events) - seen_events:
            del state.events[gone]
    return triggers


def _events(
    counters: Optional[Mapping[str, int]],
    limits: Mapping[str, float],
    state: PolicyState,
    path: str,
    now_us: int,
) -> Optional[tuple[str, dict[str, Value]]]:
    if counters is None:
        return None
    previous = state.events.get(path)
    state.events[path] = (now_us, dict(counters))
    if previous is None or now_us <= previous[0]:
        return None
    elapsed_s = (now_us - previous[0]) / 1e6
    crossed = []
    values: dict[str, Value] = {}
    for name, limit in limits.items():
        delta = counters.get(name, 0) - previous[1].get(name, 0)
        if delta <= 0:
            continue
        rate = delta / elapsed_s
        if rate > limit:
            crossed.append(f"{name} {rate:.1f}/s > {limit:g}/s")
            values[f"{name}_per_s"] = round(rate, 2)
    if not crossed:
        return None
    return "memory.events " + ", ".join(crossed), values


def _line(levels: Levels, level: Level, total: int) -> Optional[int]:
    """The amount at which ``level`` is reached: the TERM line (the KILL one where TERM is not
    set), or at KILL the KILL line; None when there is none to reach."""
    amount = (levels.term or levels.kill) if level == TERM else levels.kill
    return None if amount is None else amount.resolve(total)


def machine_lines(sample: Sample, policy: Policy, level: Level = TERM) -> tuple[Optional[int], Optional[int]]:
    """(MemAvailable, SwapFree) at which ``level`` is reached. The memory condition needs both
    low, so a SwapFree line of None means memory alone decides (no swap, or swap not judged);
    (None, None) when the machine's memory is not watched."""
    rule = policy.machine
    if not rule.enabled or not rule.mem_available.enabled:
        return None, None
    mem = sample.meminfo
    line = _line(rule.mem_available, level, mem.total_bytes)
    if line is None:
        return None, None
    swap_line = None
    if mem.swap_total_bytes and rule.swap_free.enabled:
        swap_line = _line(rule.swap_free, level, mem.swap_total_bytes)
    return line, swap_line


def next_look(
    sample: Sample,
    policy: Policy,
    state: PolicyState,
    now_us: int,
    cgroups: Iterable[str],
    held: Mapping[Optional[str], Level] = MappingProxyType({}),
) -> float:
    """Sleep so that no line is crossed unseen: each gap closing at the speed measured for it,
    or a burst at ``fill_rate`` reaching the KILL line (pace.py), within the policy's bounds.
    ``held`` names the scopes whose condition holds already and cannot be acted on (a kill in
    flight, a cooldown) and at which level: at TERM what matters there is the KILL line, at
    KILL no line (the kill's own wake-ups decide)."""
    poll = policy.poll
    pace = state.pace
    floor = poll.fill_rate_bytes_per_s
    waits = []
    if policy.machine.enabled and policy.machine.mem_available.enabled:
        mem = sample.meminfo
        pace.read(MEMORY, now_us, mem.available_bytes)
        if mem.swap_total_bytes:
            pace.read(SWAP, now_us, mem.swap_free_bytes)
        machine_held = held.get(None)
        if machine_held != KILL:
            seconds = machine_seconds(
                pace,
                now_us,
                floor,
                mem.available_bytes,
                mem.swap_free_bytes,
                machine_lines(sample, policy, KILL if machine_held == TERM else TERM),
                machine_lines(sample, policy, KILL),
            )
            if seconds is not None:
                waits.append(seconds)
    watched = []
    for path in cgroups:
        for cg_rule in policy.cgroups:
            if not cg_rule.headroom.enabled or not cg_rule.matches(path):
                continue
            try:
                memory = sample.cgroup(path).usage
            except Unavailable:
                continue
            if memory.headroom_bytes is None or not memory.max_bytes:
                continue
            if path not in watched:
                watched.append(path)
                pace.read(path, now_us, memory.headroom_bytes)
            if held.get(path) == KILL:
                continue
            line = _line(cg_rule.headroom, KILL if path in held else TERM, memory.max_bytes)
            if line is not None:
                kill_line = _line(cg_rule.headroom, KILL, memory.max_bytes)
                kill_gap = None if kill_line is None else memory.headroom_bytes - kill_line
                waits.append(pace.seconds(path, memory.headroom_bytes - line, now_us, floor, kill_gap))
    pace.keep([MEMORY, SWAP, *watched])
    return bounded_wait(waits, poll.min_interval_s, poll.max_interval_s)


def _forget_unwatched(state: PolicyState, cgroups: Iterable[str]) -> None:
    """Drop what the state remembers about cgroups that are no longer given (removed, or no
    longer matched by a rule); the machine's entries (scope None) stay. Each remembered group
    costs a stall meter and a few keys: on a node where pods come and go, keeping every path
    ever seen would grow without end."""
    watched = set(cgroups)
    for key in [k for k in state.on if k[1] is not None and k[1] not in watched]:
        state.on.discard(key)
    for table in (state.meters, state.stalled_since_us):
        for gone in [k for k in table if k[1] is not None and k[1] not in watched]:
            del table[gone]


def assess(
    sample: Sample,
    policy: Policy,
    state: PolicyState,
    now_us: int,
    cgroups: Iterable[str] = (),
    quiet_psi: Collection[PsiKey] = (),
    quiet_events: Collection[str] = (),
) -> Assessment:
    """Evaluate every condition of the policy on one sample. ``cgroups`` are the cgroup paths to
    consider for the per-cgroup rules (the daemon rescans the tree now and then); ``quiet_psi``
    the PSI sources whose kernel trigger is armed and quiet: while the kernel watches them,
    they are not read at all; ``quiet_events`` the cgroups whose memory.events the kernel
    reports changes of and has not since the last read: their counters are as read then."""
    cgroups = list(cgroups)
    triggers: list[Trigger] = []
    if policy.machine.enabled:
        for trig in (
            _machine_memory(sample, policy, state),
            _machine_psi(sample, policy, state, now_us, quiet_psi),
        ):
            if trig is not None:
                triggers.append(trig)
    triggers.extend(
        _cgroup_triggers(sample, policy, state, now_us, cgroups, quiet=quiet_psi, quiet_events=quiet_events)
    )
    _forget_unwatched(state, cgroups)
    triggers = [replace(t, detected_us=now_us) for t in triggers]
    # A crossed memory or headroom line can reach KILL within milliseconds: look again at once.
    # A stall is timed over seconds (duration_s) and memory.events wake the daemon themselves:
    # looking every STALL_POLL_S is exact enough, and 50 full looks a second for as long as
    # pressure lasts would cost a CPU what the latency of everything else pays for.
    interval = next_look(sample, policy, state, now_us, cgroups)  # feeds the pace too
    if any(t.condition in ("memory", "headroom") for t in triggers):
        interval = policy.poll.min_interval_s  # the engine sets it again when the scope is held
    return Assessment(now_us, tuple(triggers), bounded(interval, triggers, state, now_us))


def bounded(interval: float, triggers: Collection[Trigger], state: PolicyState, now_us: int) -> float:
    """The interval, no longer than a stall being timed, a PSI or events condition holding, or
    a PSI source being read allow."""
    if any(t.condition not in ("memory", "headroom") for t in triggers) or state.stalled_since_us:
        interval = min(interval, STALL_POLL_S)
    if state.psi_polled_us == now_us:
        interval = min(interval, PSI_POLL_S)
    return interval


def recheck(sample: Sample, policy: Policy, state: PolicyState, trigger: Trigger) -> Optional[Trigger]:
    """One low-memory trigger on a fresh sample, with the level, reason and values of now (None
    when the condition cleared): the re-check right before the kill (earlyoom re-reads meminfo
    after choosing its victim). A PSI or events trigger stands as it was: its evidence is a rate
    over time, not a level that one more read could refute."""
    if trigger.condition == "memory":
        return _machine_memory(sample, policy, state)
    if trigger.condition == "headroom" and trigger.scope is not None:
        rules = [r for r in policy.cgroups if r.label == trigger.rule]
        if not rules:
            return None
        headroom_only = replace(policy, cgroups=(replace(rules[0], psi=None, events=None),))
        for t in _cgroup_triggers(sample, headroom_only, state, 0, [trigger.scope], prune=False):
            return t
        return None
    return trigger
