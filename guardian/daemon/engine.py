"""The tick engine: sample -> assess -> choose -> act, and the kills in flight.

``Engine.tick()`` is testable alone (a fake root, a fake clock, a memory sink). One tick:

1. look at the machine (a lazy Sample) and rescan the rules' subtrees now and then;
2. assess every condition of the policy (policy.py);
3. move every kill in flight on: has the victim gone, is its grace period over, has memory
   reached the KILL level meanwhile (then SIGKILL at once);
4. act on each trigger whose scope has no kill in flight and is not cooling down: choose the
   victim (selection.py: processes and whole groups alike; a plugin's guardian_before_kill may
   veto it, hooks.py), pin it, re-check the trigger on a fresh read, send the first signal
   (actions.py) and carry the kill as state. A kill that ended is handed to the after-kill
   worker (hooks.AfterKill), which never holds up the loop.

A victim's grace period never stops the loop: every other scope keeps being assessed and acted
on at its normal pace, each scope with at most one kill in flight. A scope nested in (or
containing) one with a kill in flight waits for it at the TERM level, since that kill frees
memory both count; at the KILL level it acts.

After a kill: the victim has died (or the wait after SIGKILL ran out); then, for ``cooldown_s``,
TERM-level triggers of the same scope are ignored until the condition clears (memory has
recovered) and KILL-level ones until ``SETTLE_S`` has passed, so that memory the kernel is still
freeing is not answered with a second kill (earlyoom#121/#309: "kills more than required").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from guardian.actions import AlreadyDying, Hierarchy, Kill, Killer, Outcome, PidReused, reap_dying
from guardian.candidates import in_scope
from guardian.clock import Clock
from guardian.config import CgroupRule, Policy
from guardian.daemon.wakeups import (
    Armed,
    PsiKey,
    UsageLine,
    Wake,
    WakePlan,
    WatchedLimit,
    plan,
    rule_directories,
)
from guardian.decision import freed_bytes
from guardian.errors import GuardianError, Unavailable
from guardian.frozen import frozen
from guardian.history import Histories
from guardian.hooks import AfterKill, action_for, first_allowed
from guardian.host import Host, cgroup_ancestors
from guardian.kernel_kills import OomLedger, SeenKill, kill_location, kill_scope
from guardian.kinds import KillAction, Level, NotDone, OutcomeResult
from guardian.loaded import Loaded
from guardian.pace import MEMORY, SWAP, bounded_wait, machine_seconds
from guardian.policy import (
    KILL,
    TERM,
    Assessment,
    PolicyState,
    Trigger,
    assess,
    bounded,
    machine_lines,
    next_look,
    recheck,
)
from guardian.ranking import Ranked, Ranking
from guardian.report import PRIORITY_NOTICE, PRIORITY_WARNING, Reporter
from guardian.sample import Listing, Sample
from guardian.selection import busy_with
from guardian.sources.cgroups import read_cgroup_limit
from guardian.sources.kmsg import KmsgFollower
from guardian.sources.meminfo import quick_field
from guardian.sources.psi import StallMeter
from guardian.text import shown

SETTLE_S = 1.0  # after a victim died, KILL-level triggers wait this long for memory to show it
RESCAN_S = 30.0  # how often the rules' subtrees are walked for new cgroups (while calm only where no
# inotify watch covers them: Armed.tree)
PSI_HOLD_S = 5.0  # after a PSI trigger fires, read that source every tick for this long
CALM_MAX_S = 60.0  # a full tick runs at least this often, however calm
HELD_LOOK_S = 1.0  # while a low-memory condition holds in a scope that cannot act, look this often
HISTORY_STEP_S = 5.0  # the usage history is recorded at most this often: growth is measured over
# at least history.RATE_SPAN_S (5 s), which a reading every 5 s keeps between 5 and 10 s
HISTORY_IDLE_S = 10.0  # and, while a scorer uses it, at least this often however calm (on the
# fast path when calm: the recording needs no full look)
LISTING_MAX_S = RESCAN_S  # the cgroup tree is walked again at least this often, and whenever its
# counts of groups made and dying moved (sample.Listing): the walk was the costliest part of a
# recording
WARM = 0.5  # a watched cgroup past this share of its limit has its processes recorded too
REAPED_KEPT = 1024  # dying processes remembered as reaped (each is reaped once)
OOM_COUNT_S = 5.0  # the watched groups' oom_kill counters are read at most this often (full ticks)
LIMITS = ("limits",)  # the fast path's key for the watched groups' limits (Calm.due_us)
ENDED = ("terminated", "killed", "alive", "dry-run")  # outcomes after which a scope cools down


@dataclass
class Act:
    """One trigger acted on (a kill started, finished, or refused) in a tick."""

    trigger: Trigger
    victim: Optional[Ranked] = None
    action: Optional[KillAction] = None
    outcome: Optional[Outcome] = None  # None while the kill is in flight
    skipped: Optional[str] = None  # why the trigger led to no kill


@dataclass
class TickResult:
    """What one tick did: its assessment, the kills started and finished, the next interval."""

    assessment: Assessment
    started: list[Act] = field(default_factory=list)  # triggers acted on in this tick
    finished: list[Act] = field(default_factory=list)  # kills that ended in this tick
    interval_s: float = 0.0  # when to look again if no kernel event comes first
    watch_changed: bool = False  # a watched cgroup came, went or changed its limit


@dataclass
class Flight:
    """A kill in flight, in one scope."""

    trigger: Trigger
    victim: Ranked
    action: KillAction
    kill: Kill


@dataclass
class Cooldown:
    """A scope acted on: no new kill for the same trigger until memory could show the last one."""

    key: tuple[str, Optional[str], str]
    scope: Optional[str]
    since_us: int
    until_us: int
    # a dry run's: nothing was freed, so memory cannot show the kill and a KILL level that stays
    # is no sign that it was not enough; it holds at both levels, as a real kill's cooldown would
    # have while memory recovered (else a dry run reported the same victim every SETTLE_S)
    both_levels: bool = False


@frozen
class Calm:
    """What a full tick that found nothing to do leaves for the idle fast path: the MemAvailable
    and SwapFree lines at which the machine's memory condition holds (both must be reached),
    the memory.current lines of watched cgroups with a limit (cgroup2, where no kernel event
    reports usage), the limits the wake-ups were planned for (no kernel event reports a limit
    written), and when a full tick is due anyway. ``due_us``: when the fast path must read each
    quantity again (MEMORY for the machine, a group's path, LIMITS), as its pace planned."""

    mem_line_bytes: Optional[int]  # None: the machine rule does not watch memory
    until_us: int
    usage_lines: tuple[UsageLine, ...] = ()
    swap_line_bytes: Optional[int] = None  # None: memory alone decides (no swap, or not judged)
    # the KILL lines, which the poll floor plans for (pace.py); None: as the lines above
    mem_kill_bytes: Optional[int] = None
    swap_kill_bytes: Optional[int] = None
    limits: tuple[WatchedLimit, ...] = ()
    # MemTotal and SwapTotal the lines are shares of: memory hot-plugged or ballooned, a swapon
    # or a swapoff, moves them without a word, and a line of the old total would be crossed unseen
    totals: tuple[int, int] = (0, 0)
    due_us: dict[object, int] = field(default_factory=dict)


def _after_kill(loaded: Loaded, reporter: Reporter) -> AfterKill:
    return AfterKill(loaded.plugins, loaded.policy.hooks, loaded.policy.plugins.budget_ms, reporter)


def _nested(a: Optional[str], b: Optional[str]) -> bool:
    """One scope contains the other (the machine, None, contains every cgroup)."""
    return a is None or b is None or in_scope(a, b) or in_scope(b, a)


def _holds(scope: Optional[str], flight: Flight) -> bool:
    """The scope holds the flight's victim (the machine holds every one)."""
    return scope is None or in_scope(flight.victim.candidate.cgroup, scope)


class Engine:
    def __init__(self, host: Host, loaded: Loaded, reporter: Reporter, clock: Optional[Clock] = None) -> None:
        self.host = host
        self.loaded = loaded
        self.reporter = reporter
        self.clock = clock or Clock()
        self.state = PolicyState()
        self.killer = Killer(host, dry_run=loaded.policy.dry_run)
        self.after_kill = _after_kill(loaded, reporter)
        self.flights: dict[Optional[str], Flight] = {}
        self.cooldowns: list[Cooldown] = []
        self.watched: list[str] = []
        self._signature: list[tuple[str, Optional[int], tuple[int, ...]]] = []
        self._scanned_us: Optional[int] = None
        self._replan = False  # the next tick reports the watched set changed (its wake-ups are planned again)
        self.psi_fired_us: dict[PsiKey, int] = {}
        self.armed_psi: frozenset[PsiKey] = frozenset()
        self.armed_events: frozenset[str] = frozenset()  # memory.events the kernel reports changes of
        self._events_unread: set[str] = set()  # of those, changed (or armed) since the last read
        self._events_resting: frozenset[str] = frozenset()  # of those, not reporting changes just now
        self.calm: Optional[Calm] = None
        self.uncovered = True  # some watched condition has no kernel wake-up: every wake is a full tick
        self.tree_watched = False  # a new group under a rule's subtree wakes the loop (Armed.tree)
        self._directories: tuple[str, ...] = ()  # where the last rescan found a group could appear
        self.usage_lines: tuple[UsageLine, ...] = ()
        self.limits: tuple[WatchedLimit, ...] = ()  # the watched limits the wake-ups were planned for
        self.kills = 0
        self._reaped: dict[tuple[int, int], None] = {}  # (pid, start time) reaped, oldest first
        self.history = Histories()
        self.listing = Listing(LISTING_MAX_S)
        self.metrics = reporter.metrics
        # the kernel's own OOM kills (kernel_kills.py): the log followed, if it can be read; the
        # counters' ledger; how many were seen, and who is told of each one as it is reported
        self.kernel_log: Optional[KmsgFollower] = None
        self.oom_ledger = OomLedger(hierarchical=False)
        self.kernel_kills = 0
        self.kernel_kill_listeners: list[Callable[[SeenKill], None]] = []
        self._oom_counted_us: Optional[int] = None

    @property
    def policy(self) -> Policy:
        return self.loaded.policy

    # --- policy ------------------------------------------------------------------------------

    def replace_policy(self, loaded: Loaded) -> None:
        """A reloaded policy. Kills in flight go on, judged by the new policy's rules from their
        next signal on."""
        self.loaded = loaded
        self.killer = Killer(self.host, dry_run=loaded.policy.dry_run)
        self.after_kill.close()
        self.after_kill = _after_kill(loaded, self.reporter)
        self.state = PolicyState()
        self._scanned_us = None
        self._signature = []
        self.calm = None
        if self.killer.dry_run:  # a dry run sends nothing more, not even a kill's SIGKILL
            self._abandon("the policy reloaded is a dry run: nothing more is sent")
        for flight in self.flights.values():
            flight.kill.guard = loaded.selector.guard(self.host, whole_group=flight.action == "group-kill")

    # --- what to watch, and what woke us -----------------------------------------------------

    def rescan(self, sample: Sample, now_us: int, force: bool = False) -> bool:
        """Refresh the cgroups the rules match (walking only the subtrees their globs can reach);
        True if what is watched changed (a group came or went, or a watched limit moved), so
        that the wake-ups are rebuilt."""
        if not force and self._scanned_us is not None and now_us - self._scanned_us < RESCAN_S * 1e6:
            return False
        self._scanned_us = now_us
        matched = self._matching()
        signature: list[tuple[str, Optional[int], tuple[int, ...]]] = []
        for path in matched:
            # the directories' inodes: a group removed and made again under its name (a service
            # restarted) is another group, whose wake-ups must be armed anew
            identity = self.host.cgroup_identity(path)
            try:
                signature.append((path, sample.cgroup(path).usage.max_bytes, identity))
            except GuardianError:
                signature.append((path, None, identity))
        # a level made or removed where a group may appear (no group matching yet) changes what
        # the watch must cover: the wake-ups are planned again for it too
        directories = tuple(rule_directories(self.host, self.policy))
        changed = signature != self._signature or directories != self._directories
        self._signature = signature
        self._directories = directories
        self.watched = matched
        self.host.hold_open(matched)
        return changed

    def _matching(self) -> list[str]:
        """The cgroups the rules match now (walking only the subtrees their globs can reach)."""
        paths: set[str] = set()
        for rule in self.policy.cgroups:
            prefix, depth = rule.walk()
            paths.update(p for p in self.host.cgroups_below(prefix, depth) if rule.matches(p))
        return sorted(paths)

    def wake_plan(self, sample: Sample) -> WakePlan:
        return plan(self.host, self.policy, self.watched, sample)

    def use_wakeups(self, wake_plan: WakePlan, armed: Armed) -> None:
        """The wake-ups now armed. A calm judged before them (the tick that found a new group)
        knows neither its usage line nor whether it is covered: the next wake-up is a full tick."""
        self.host.forget_hot({u.path for u in self.usage_lines} - {u.path for u in wake_plan.usage_lines})
        self.usage_lines = wake_plan.usage_lines
        self.limits = wake_plan.limits
        self.uncovered = bool(armed.uncovered)
        self.armed_psi = armed.psi
        self.armed_events = armed.events
        self._events_unread = set(armed.events)  # read each once: changes are reported from now on
        self._events_resting = frozenset()  # arming opened every file afresh
        self.calm = None
        self.tree_watched = armed.tree
        if armed.tree and self._tree_moved(wake_plan):
            # a group or a level made between the walks and the watch: the watch did not see it
            # come, so the next tick walks again and plans for the tree as it is now
            self._scanned_us = None
            self._replan = True

    def _tree_moved(self, wake_plan: WakePlan) -> bool:
        """A directory or a matching group made or removed since the walks the watch was planned
        from (inotify reports only what happens after a directory is watched)."""
        if rule_directories(self.host, self.policy) != list(wake_plan.directories):
            return True
        return self._matching() != self.watched

    def woke(self, wake: Wake, now_us: int) -> None:
        """What the kernel said while the loop slept."""
        self.metrics.woke("kernel" if wake.kernel or wake.stalled else "signal" if wake.signal else "timer")
        for key in wake.psi:
            self.psi_fired_us[key] = now_us
        self._events_unread |= wake.events
        self._events_resting = wake.resting
        if wake.kernel:
            self.calm = None  # the kernel saw something: look properly
        elif wake.stalled and self.calm is not None:
            # memory stalled: read every quantity now (a line reached makes it a full look); a
            # full look here would only read the same and more, every 2 s of a long episode
            self.calm.due_us.clear()
        if wake.cgroups:
            self._scanned_us = None  # a cgroup came or went under a rule's subtree: rescan now
        if wake.filled:  # planned empty, filled now: plan again, for its limits as they are
            self._replan = True
        hold = PSI_HOLD_S * 1e6
        self.psi_fired_us = {k: t for k, t in self.psi_fired_us.items() if now_us - t <= hold}

    def _quiet_psi(self, now_us: int) -> frozenset[PsiKey]:
        """PSI sources whose kernel trigger is armed and has not fired in PSI_HOLD_S: the policy
        does not read them (the kernel is watching)."""
        hold = PSI_HOLD_S * 1e6
        return frozenset(k for k in self.armed_psi if now_us - self.psi_fired_us.get(k, -(1 << 62)) > hold)

    def kill_fds(self) -> list[tuple[int, int]]:
        """(fd, poll events) of the kills in flight."""
        return [pair for flight in self.flights.values() for pair in flight.kill.fds]

    # --- one tick -------------------------------------------------------------------------------

    def tick(self, now_us: Optional[int] = None) -> TickResult:
        now_us = self.clock.monotonic_us() if now_us is None else now_us
        sample = Sample(self.host, now_us, self.listing)
        changed = self.rescan(sample, now_us) or self._replan
        self._replan = False
        quiet_events = self.armed_events - self._events_unread - self._events_resting
        assessment = assess(
            sample, self.policy, self.state, now_us, self.watched, self._quiet_psi(now_us), quiet_events
        )
        if self._limits_moved(sample):  # plan the wake-ups for the limits as they are now
            self.rescan(sample, now_us, force=True)
            changed = True
        events = self.state.events
        self._events_unread = {p for p in self._events_unread if p in events and events[p][0] != now_us}
        result = TickResult(assessment, watch_changed=changed)
        self._record(sample, now_us)
        self._expire_cooldowns(assessment, now_us)
        self._advance(assessment, now_us, result)
        for trigger in self._actionable(assessment, now_us):
            result.started.append(self._start(sample, trigger))
        self._count_kernel_kills(sample, now_us)
        self.calm = self._calm(sample, assessment, now_us)
        result.interval_s = self._interval(sample, assessment, now_us)
        self._measured(sample, assessment, now_us)
        return result

    def _limits_moved(self, sample: Sample) -> bool:
        """A watched group's limit, as this tick read it, is not the one its wake-ups were
        planned for: a limit written since (systemd writes a unit's after making its group;
        ``systemctl set-property``), which no kernel event reports."""
        for limit in self.limits:
            group = sample.cgroup_if_read(limit.cgroup)
            usage = None if group is None else group.usage_if_read()
            if usage is not None and usage.max_bytes != limit.max_bytes:
                return True
        return False

    def _measured(self, sample: Sample, assessment: Assessment, now_us: int) -> None:
        """The metrics: the triggers crossed, and (while something reads them) what this look
        read, from the Sample as it stands: nothing is read for them."""
        metrics = self.metrics
        metrics.crossed((t.rule, t.scope, t.condition, t.level) for t in assessment.triggers)
        if not metrics.on:
            return
        meters = self.state.meters
        by_group: dict[str, StallMeter] = {}
        for (_rule, scope), meter in meters.items():
            if scope is not None:  # a meter is kept per rule: the first rule's speaks for the group
                by_group.setdefault(scope, meter)
        groups = {}
        for path in self.watched[: metrics.max_cgroups]:
            group = sample.cgroup_if_read(path)
            memory = None if group is None else group.usage_if_read()
            pressure = None if group is None else group.pressure_if_read()
            groups[path] = (memory, by_group.get(path), pressure)
        metrics.full_look(
            now_us,
            sample.meminfo_if_read(),
            (meters.get(("machine", None)), sample.pressure_if_read("memory")),
            self.watched,
            groups,
            len(self.flights),
        )

    @property
    def keeps_history(self) -> bool:
        """Some scorer of the policy ranks on growth: every cgroup's memory use is recorded."""
        return self.loaded.selector.uses_growth

    def _history_due_us(self, step_s: float) -> Optional[int]:
        """When the usage history is next recorded, ``step_s`` after the last recording; None
        when no scorer uses it."""
        if not self.keeps_history:
            return None
        last = self.history.cgroups.recorded_us
        return -(1 << 62) if last is None else last + int(step_s * 1e6)

    def _record(self, sample: Sample, now_us: int, step_s: float = HISTORY_STEP_S) -> None:
        """The usage history, every ``step_s`` at most: every cgroup's memory use, and the
        processes of watched cgroups past WARM of their limit (so that a ranking inside one
        knows which process grew; the machine's processes are recorded by its rankings only,
        reading them all every few seconds would cost more than it tells)."""
        due = self._history_due_us(step_s)
        if due is None or now_us < due:
            return
        usage, unreadable = sample.cgroup_usage()
        self.history.cgroups.record(now_us, usage, unreadable)
        for path in self.watched:
            try:
                memory = sample.cgroup(path).usage
                if memory.max_bytes and (memory.current_bytes or 0) >= WARM * memory.max_bytes:
                    self.history.record_processes(now_us, sample.processes_in(path))
            except GuardianError:
                continue  # gone or unreadable: the next full tick reports what matters

    def _interval(self, sample: Sample, assessment: Assessment, now_us: int) -> float:
        """When to look again. A crossed memory or headroom line that can be acted on is looked
        at again at once (assess); one whose scope cannot act (a kill in flight, a cooldown)
        needs a look only when its KILL line could be reached, when the kill or the cooldown
        is due, and at least every HELD_LOOK_S: polling it every few milliseconds through a
        victim's grace period would cost a CPU what acting on the next scope pays for."""
        interval = assessment.interval_s
        lows = [t for t in assessment.triggers if t.condition in ("memory", "headroom")]
        pending = [t for t in self._actionable(assessment, now_us) if t.condition in ("memory", "headroom")]
        if lows and not pending:
            held: dict[Optional[str], Level] = {}
            for t in lows:  # a scope held at TERM by any rule watches its KILL line
                held[t.scope] = TERM if TERM in (held.get(t.scope), t.level) else KILL
            look = next_look(sample, self.policy, self.state, now_us, self.watched, held)
            interval = bounded(min(look, HELD_LOOK_S), assessment.triggers, self.state, now_us)
        for flight in self.flights.values():
            interval = min(interval, max(0.0, (flight.kill.next_look_us(now_us) - now_us) / 1e6))
        for c in self.cooldowns:  # a cooldown's end, and the KILL level's settling
            for at_us in (c.until_us, c.since_us + int(SETTLE_S * 1e6)):
                if at_us > now_us:
                    interval = min(interval, (at_us - now_us) / 1e6)
        held_us = self.oom_ledger.next_due_us()  # a counter's rise the log has not explained yet
        if held_us is not None:
            interval = min(interval, max(0.0, (held_us - now_us) / 1e6))
        return max(interval, 0.0)

    def _calm(self, sample: Sample, assessment: Assessment, now_us: int) -> Optional[Calm]:
        """A Calm when the next wake-ups may take the fast path: nothing crossed, no kill in
        flight, no cooldown, no stall being timed, no PSI source being polled, every watched
        cgroup condition covered by a kernel wake-up."""
        state = self.state
        if assessment.triggers or self.flights or self.cooldowns or state.stalled_since_us or self.uncovered:
            return None
        if state.psi_polled_us == now_us or self.oom_ledger.pending:
            return None  # (a counter's rise waiting for the log's line: the next look reports it)
        # the lines themselves: no condition holds, so none is on and none has hysteresis
        line, swap_line = machine_lines(sample, self.policy)
        kill_line, kill_swap_line = machine_lines(sample, self.policy, KILL)
        # with the rules' subtrees watched a new group wakes the loop: the walk is only the full
        # tick's, at least every CALM_MAX_S; without, the walk on a timer is what finds one
        until = now_us + int(CALM_MAX_S * 1e6)
        if not self.tree_watched:
            until = min(until, (self._scanned_us or now_us) + int(RESCAN_S * 1e6))
        totals = (0, 0) if line is None else (sample.meminfo.total_bytes, sample.meminfo.swap_total_bytes)
        return Calm(line, until, self.usage_lines, swap_line, kill_line, kill_swap_line, self.limits, totals)

    def quick(self, now_us: int, cap_s: Optional[float] = None) -> Optional[float]:
        """The idle fast path: with the machine calm at the last full tick, a read of
        MemAvailable (and SwapFree) and one of the usage of each watched group with a limit
        (memory.current, v1's memory.usage_in_bytes) decide, and the watched groups' limits
        are read every ``max_interval_s`` (no kernel event reports a limit written). Each is
        read when its pace planned (``Calm.due_us``: at most every ``max_interval_s``), and
        then with it whatever would be due before the next wake-up, the usage history too, so
        that no reading wakes the loop on its own: a group near its line is not a reason to
        read the machine's memory every time, and a reading due a few milliseconds after
        another is not a wake-up of its own. ``cap_s``: the loop wakes by then anyway (the
        watchdog's next ping), which the plan counts as its next wake-up. Returns the next
        interval, or None when a full tick must run. (A cold full tick costs ~240 us of CPU on
        the development machine, this ~40 us; near a cgroup's line, where the interval shrinks
        to milliseconds, that is the difference between a few percent of a CPU and a third of
        one under emulation.)"""
        calm = self.calm
        if calm is None or now_us >= calm.until_us:
            return None
        poll = self.policy.poll
        longest_s = poll.max_interval_s if cap_s is None else max(0.0, min(poll.max_interval_s, cap_s))
        due = calm.due_us
        quantities: list[tuple[object, Optional[UsageLine]]] = [(u.cgroup, u) for u in calm.usage_lines]
        if calm.mem_line_bytes is not None:
            quantities.insert(0, (MEMORY, None))  # the machine: usage None
        if calm.limits:
            quantities.append((LIMITS, None))
        waits: dict[object, float] = {}
        # read what is due by the next wake-up, which is never sooner than min_interval_s
        horizon_us = now_us + int(min(poll.min_interval_s, longest_s) * 1e6)
        # woken with nothing due (for the watchdog): the next wake-up comes by cap_s anyway, and
        # what is due before it is read on this one
        latest_us = horizon_us if cap_s is None else now_us + int(longest_s * 1e6)
        while True:
            todo = [(k, u) for k, u in quantities if k not in waits and due.get(k, 0) <= horizon_us]
            if not todo:
                if waits or horizon_us >= latest_us:
                    break
                horizon_us = latest_us
                continue
            for key, usage in todo:
                if key is LIMITS:
                    seconds = self._quick_limits(calm)
                elif usage is None:
                    seconds = self._quick_machine(calm, now_us)
                else:
                    seconds = self._quick_usage(usage, now_us)
                if seconds is None:
                    return None
                waits[key] = seconds
                due[key] = now_us + int(min(seconds, poll.max_interval_s) * 1e6)
            horizon_us = now_us + int(bounded_wait(waits.values(), poll.min_interval_s, longest_s) * 1e6)
        planned = [*waits.values(), *((due[k] - now_us) / 1e6 for k, _ in quantities if k not in waits)]
        history_due = self._history_due_us(HISTORY_IDLE_S)
        if history_due is not None:  # calm: the history is recorded here, no full look needed
            next_us = now_us + int(bounded_wait(planned, poll.min_interval_s, longest_s) * 1e6)
            # due before the next wake-up: on whichever of this one and that one it is nearer to
            # (never within STEP of the last), so that it never makes a wake-up of its own and is
            # at most half a wake-up early or late. (Taking it on this one whenever it fell due
            # before the next took it at every watchdog ping: a loop wakes a few ms late, so a
            # 10 s step always fell due just before the second 5 s wake-up.)
            if history_due >= next_us:
                planned.append((history_due - now_us) / 1e6)
            elif 2 * history_due <= now_us + next_us:
                try:
                    self._record(Sample(self.host, now_us, self.listing), now_us)
                except Exception:  # a full tick records it again, where failures are reported
                    return None
                history_due = self._history_due_us(HISTORY_IDLE_S) or history_due
                planned.append(max(0, history_due - now_us) / 1e6)
        return bounded_wait(planned, poll.min_interval_s, longest_s)

    def _quick_machine(self, calm: Calm, now_us: int) -> Optional[float]:
        """MemAvailable and SwapFree against their lines: how long until the machine's condition
        could hold, or None when a full tick must look (it holds, or the read failed)."""
        pace = self.state.pace
        try:
            text = self.host.read_hot(self.host.meminfo_path(), "meminfo")
        except (GuardianError, OSError):
            return None  # a full tick reads it properly and reports what is wrong
        available = quick_field(text, "MemAvailable")
        swap_free = None if calm.swap_line_bytes is None else quick_field(text, "SwapFree")
        if available is None or (calm.swap_line_bytes is not None and swap_free is None):
            return None
        if (quick_field(text, "MemTotal"), quick_field(text, "SwapTotal") or 0) != calm.totals:
            return None  # the lines' totals moved: a full tick draws them again
        pace.read(MEMORY, now_us, available)
        if swap_free is not None:
            pace.read(SWAP, now_us, swap_free)
        if self.metrics.on:
            self.metrics.quick_memory(now_us, available, swap_free)
        seconds = machine_seconds(
            pace,
            now_us,
            self.policy.poll.fill_rate_bytes_per_s,
            available,
            swap_free,
            (calm.mem_line_bytes, calm.swap_line_bytes),
            (calm.mem_kill_bytes, calm.swap_kill_bytes),
        )
        return seconds or None  # 0: the condition holds, a full tick decides

    def _quick_limits(self, calm: Calm) -> Optional[float]:
        """The watched groups' limits against those the wake-ups were planned for: None (a full
        tick, which plans them again) when one moved or cannot be read, else when to read them
        again (``max_interval_s``: a limit written to a running group is seen that soon)."""
        for limit in calm.limits:
            try:
                if read_cgroup_limit(self.host, limit.cgroup) != limit.max_bytes:
                    return None
            except GuardianError:
                return None
        return self.policy.poll.max_interval_s

    def _quick_usage(self, usage: UsageLine, now_us: int) -> Optional[float]:
        """A watched group's usage against its line: how long until it could be
        reached, or None when a full tick must look (reached, gone or unreadable)."""
        try:
            current = int(self.host.read_hot(usage.path, "cgroup memory usage").strip())
        except (GuardianError, OSError, ValueError):
            return None  # gone or unreadable: a full tick sorts it out
        if current >= usage.line_bytes:
            return None
        if self.metrics.on:
            self.metrics.quick_cgroup(usage.cgroup, now_us, current)
        pace = self.state.pace
        pace.read(usage.cgroup, now_us, usage.max_bytes - current)
        kill_gap = None if usage.kill_bytes is None else usage.kill_bytes - current
        return pace.seconds(
            usage.cgroup, usage.line_bytes - current, now_us, self.policy.poll.fill_rate_bytes_per_s, kill_gap
        )

    # --- deciding whom to act on ---------------------------------------------------------------

    def _expire_cooldowns(self, assessment: Assessment, now_us: int) -> None:
        active = {t.key for t in assessment.triggers}
        self.cooldowns = [c for c in self.cooldowns if now_us < c.until_us and c.key in active]

    def _cooling(self, trigger: Trigger, now_us: int) -> bool:
        for c in self.cooldowns:
            if c.key != trigger.key and c.scope != trigger.scope:
                continue
            settled = now_us - c.since_us >= SETTLE_S * 1e6
            if trigger.level != KILL or not settled or c.both_levels:
                return True
        return False

    def _actionable(self, assessment: Assessment, now_us: int) -> list[Trigger]:
        """The triggers to act on now: the worst first (KILL before TERM, the machine before a
        cgroup), one per scope, none in a scope with a kill in flight or cooling down.

        Scopes nested in one another (the machine holds every cgroup) share memory: a kill in
        one frees memory the other counts. So never two kills in nested scopes in one tick; at
        the TERM level a scope waits while a nested one has a kill in flight; at the KILL level
        it waits while that kill has not sent SIGKILL yet (the flight is escalated instead:
        _advance, earlier in the same tick) or sent it less than SETTLE_S ago."""
        chosen: list[Trigger] = []
        for trigger in sorted(assessment.triggers, key=lambda t: (t.level != KILL, t.scope is not None)):
            if trigger.scope in self.flights or self._cooling(trigger, now_us):
                continue
            if any(_nested(trigger.scope, c.scope) for c in chosen):
                continue
            nested = [f for f in self.flights.values() if _nested(trigger.scope, f.trigger.scope)]
            if nested and trigger.level != KILL:
                continue
            settle_us = SETTLE_S * 1e6
            if any(f.kill.killed_us is None or now_us - f.kill.killed_us < settle_us for f in nested):
                continue
            chosen.append(trigger)
        return chosen

    def _busy_pids(self) -> set[int]:
        pids: set[int] = set()
        for flight in self.flights.values():
            pids.update(p.pid for p in flight.victim.candidate.processes)
            pids.update(flight.kill.targets)
        return pids

    def _report_failures(self, ranking: Ranking) -> None:
        for failure in ranking.failures:
            self.metrics.plugin_failure(failure.plugin, failure.hook)
            self.reporter.lifecycle(failure.describe(), PRIORITY_WARNING)
        if ranking.fallback:
            self.reporter.lifecycle(ranking.fallback, PRIORITY_WARNING)

    def _not_done(self, act: Act, outcome: NotDone, detail: str) -> Act:
        act.skipped = detail
        self.reporter.not_done(act.trigger, outcome, detail)
        self._start_cooldown(act.trigger)
        return act

    def _rank(self, sample: Sample, scope: Optional[str], whole_group: bool) -> Ranking:
        """The ranking a trigger in ``scope`` acts on: the group itself for a rule's ``action =
        "group"``, else the processes in scope; the kills in flight's victims busy."""
        selector = self.loaded.selector
        busy = busy_with(self._busy_pids())
        if whole_group and scope is not None:
            return selector.rank_group(sample, scope, busy, self.history)
        return selector.rank(sample, "process", scope, busy, self.history)

    def _start(self, sample: Sample, trigger: Trigger) -> Act:
        """Choose, pin, re-check, first signal."""
        act = Act(trigger)
        selector = self.loaded.selector
        group_rule = trigger.action == "group" and trigger.scope is not None
        ranking = self._rank(sample, trigger.scope, group_rule)
        self._report_failures(ranking)
        self._reap_dying(ranking)
        victim = ranking.top
        if victim is None:
            if group_rule and ranking.excluded:
                why = ranking.excluded[0]
                kind: NotDone = "protected" if why.protects else "no-candidate"
                return self._not_done(act, kind, f"group {trigger.scope}: {why.reason}")
            return self._not_done(act, "no-candidate", "nothing in scope may be killed")
        budget_ms = self.policy.plugins.budget_ms
        victim = first_allowed(
            selector.plugins, ranking, trigger, self.killer.dry_run, budget_ms, self.reporter
        )
        if victim is None:
            return self._not_done(act, "vetoed", "a plugin vetoed the kill of every candidate asked about")
        act.victim = victim
        candidate = victim.candidate
        group = candidate.kill_group
        action = action_for(victim, trigger)
        process = candidate.process

        # pin the victim now, then re-check that the trigger still holds on a fresh read
        pidfd = None
        if process is not None and group is None and not self.killer.dry_run:
            try:
                pidfd = self.killer.open_victim(process)
            except GuardianError as exc:
                result: OutcomeResult = "vanished"
                if isinstance(exc, AlreadyDying):
                    result = "already-dying"
                elif isinstance(exc, PidReused):
                    result = "pid-reused"
                act.outcome = Outcome(result, pids=[process.pid], detail=str(exc))
                act.action = action
                self.reporter.decision(trigger, victim, action, act.outcome)
                # the victim is gone or going: memory is coming back; let it show before the
                # next choice (else the same trouble chose and reported every tick)
                self._start_cooldown(trigger)
                return act
        now_us = self.clock.monotonic_us()
        try:
            fresh = recheck(Sample(self.host, now_us), self.policy, self.state, trigger)
        except BaseException:  # the tick fails (and is reported); the pinned victim's fd must not leak
            if pidfd is not None:
                os.close(pidfd)
            raise
        if fresh is None:
            if pidfd is not None:
                os.close(pidfd)
            act.victim = None
            return self._not_done(act, "recovered", "the condition cleared before the kill")
        level = fresh.level
        if level == KILL and action == "term":
            action = "kill"
        # report the level acted on, after the re-check, and the reading that showed it
        trigger = replace(trigger, level=level, reason=fresh.reason, values=fresh.values)
        act.trigger, act.action = trigger, action

        started: Union[Outcome, Kill]
        if group is not None:
            hierarchy: Hierarchy = "v1" if self.host.cgroup_layout().memory_controller == "v1" else "v2"
            started = self.killer.start_group(
                group, hierarchy, selector.guard(self.host, whole_group=True), now_us
            )
        else:
            assert process is not None
            started = self.killer.start_process(
                process, level, self.policy.grace_s, selector.guard(self.host), now_us, pidfd
            )
        self.metrics.latency((self.clock.monotonic_us() - trigger.detected_us) / 1e6)
        if isinstance(started, Outcome):
            self._ended(act, started)
        else:
            self.flights[trigger.scope] = Flight(trigger, victim, action, started)
        return act

    def _reap_dying(self, ranking: Ranking) -> None:
        """Processes in scope that someone else has SIGKILLed and that are not gone yet (frozen,
        not scheduled) hold their memory: reap it (process_mrelease, no signal), once each.
        The fresh look right before guardian's own first signal then sees what that freed."""
        if self.killer.dry_run:
            return
        for exclusion in ranking.excluded:
            process = exclusion.candidate.process
            if not exclusion.dying or process is None:
                continue
            key = (process.pid, process.starttime_ticks)
            if key in self._reaped:
                continue
            self._reaped[key] = None
            while len(self._reaped) > REAPED_KEPT:
                del self._reaped[next(iter(self._reaped))]
            if reap_dying(self.host, process):
                self.reporter.lifecycle(
                    f"reaped the memory of pid {process.pid} ({shown(process.comm)}), "
                    f"{process.rss_bytes >> 20} MiB: it was SIGKILLed by someone else and had not died",
                    PRIORITY_NOTICE,
                )

    def _advance(self, assessment: Assessment, now_us: int, result: TickResult) -> None:
        """Move every kill in flight on. A TERM is escalated to SIGKILL when a scope that holds
        its victim reaches the KILL level: the machine's shortage is answered by the victim
        already chosen, not by a second one (_actionable makes nested scopes wait for it)."""
        for scope, flight in list(self.flights.items()):
            escalating = next(
                (t for t in assessment.triggers if t.level == KILL and _holds(t.scope, flight)), None
            )
            escalate = escalating is not None
            outcome = flight.kill.step(now_us, escalate)
            if outcome is None:
                continue
            del self.flights[scope]
            act = Act(flight.trigger, flight.victim, flight.action)
            if escalating is not None and flight.action == "term" and "SIGKILL" in outcome.signals:
                reason = f"{flight.trigger.reason}; SIGKILL at once when {escalating.reason}"
                act.trigger = replace(flight.trigger, level=KILL, reason=reason)
            self._ended(act, outcome)
            result.finished.append(act)

    def _ended(self, act: Act, outcome: Outcome) -> None:
        """A kill is over (or never got going): report it, count it, cool the scope down."""
        assert act.victim is not None and act.action is not None
        if act.action == "term" and "SIGKILL" in outcome.signals:
            act.action = "kill"
        act.outcome = outcome
        self.reporter.decision(act.trigger, act.victim, act.action, outcome)
        self.after_kill.told(act.trigger, act.victim, act.action, outcome, self.killer.dry_run)
        if outcome.result in ENDED:
            self.kills += outcome.result != "dry-run"
            self._start_cooldown(act.trigger)
        if outcome.result in ("terminated", "killed"):
            self._forget_victim(act.victim, outcome)

    def _forget_victim(self, victim: Ranked, outcome: Outcome) -> None:
        """The victim's memory is gone: out of the history of its cgroup and of every cgroup
        above it, so that growth there is the survivors' (history.History.discount)."""
        candidate = victim.candidate
        freed = freed_bytes(victim, outcome.result, outcome.pids)
        if candidate.cgroup and freed:
            self.history.cgroups.discount(
                cgroup_ancestors(candidate.cgroup), freed, self.clock.monotonic_us()
            )

    def _start_cooldown(self, trigger: Trigger) -> None:
        now = self.clock.monotonic_us()
        until = now + int(self.policy.cooldown_s * 1e6)
        self.cooldowns.append(Cooldown(trigger.key, trigger.scope, now, until, self.policy.dry_run))

    def _abandon(self, why: str) -> None:
        """End every kill in flight without another signal, and report each as abandoned."""
        for flight in self.flights.values():
            outcome = flight.kill.outcome
            outcome.result = "abandoned"
            outcome.detail = "; ".join(filter(None, [outcome.detail, why]))
            flight.kill.close()
            self.reporter.decision(flight.trigger, flight.victim, flight.action, outcome)
            self.after_kill.told(flight.trigger, flight.victim, flight.action, outcome, self.killer.dry_run)
        self.flights.clear()

    # --- the kernel's own OOM kills (kernel_kills.py) -------------------------------------------

    def follow_kernel_log(self) -> Optional[str]:
        """Follow the kernel log from its end, for the kernel's OOM kills; why it cannot be read
        (a container without /dev/kmsg, kernel.dmesg_restrict without CAP_SYSLOG), or None."""
        follower = KmsgFollower(self.host)
        try:
            follower.open()
        except Unavailable as exc:
            return exc.reason
        self.kernel_log = follower
        return None

    def stop_kernel_log(self) -> None:
        """Follow the kernel log no more (the counters' rises are then reported at once)."""
        if self.kernel_log is not None:
            self.kernel_log.close()
            self.kernel_log = None

    def kernel_log_fd(self) -> Optional[int]:
        """The kernel log's descriptor, to poll for POLLIN (None: not followed, or a recorded
        file under --root, which every full tick reads instead)."""
        return None if self.kernel_log is None else self.kernel_log.fileno()

    def read_kernel_log(self, now_us: int, sample: Optional[Sample] = None) -> list[SeenKill]:
        """Report every kill the kernel log completed since the last read. No full look: the
        log is read, and for a kill, the ranking of its scope (once per scope per read)."""
        if self.kernel_log is None:
            return []
        kills = self.kernel_log.read()
        if not kills:
            return []
        sample = sample if sample is not None else Sample(self.host, now_us)
        choices: dict[tuple[Optional[str], bool], tuple[Optional[Ranked], str]] = {}
        seen = []
        for kill in kills:
            where = kill_location(kill)
            self.oom_ledger.logged(where, now_us)
            scope, known = kill_scope(kill)
            logged = SeenKill("kmsg", now_us, where, scope, known, kill)
            seen.append(self._kernel_kill(sample, logged, choices))
        return seen

    def _count_kernel_kills(self, sample: Sample, now_us: int) -> None:
        """Kernel OOM kills the log did not report: a watched group's oom_kill counter that rose
        (read every OOM_COUNT_S at most, by full ticks only). Under --root the recorded log is
        read here too: a regular file always polls readable, so there is no descriptor to wait on."""
        log = self.kernel_log
        if log is not None and log.fileno() is None:
            self.read_kernel_log(now_us, sample)
        ledger = self.oom_ledger
        last = self._oom_counted_us
        if last is None or now_us - last >= OOM_COUNT_S * 1e6:
            self._oom_counted_us = now_us
            ledger.hierarchical = self.host.cgroup_layout().memory_controller == "v2"
            counts: dict[str, int] = {}
            for path in self.watched:
                try:
                    value = sample.cgroup(path).oom_kills
                except GuardianError:
                    continue  # gone or unreadable: its count starts again when it is read
                if value is not None:
                    counts[path] = value
            due = ledger.counted(counts, now_us, hold=log is not None)
        else:
            due = ledger.due(now_us)
        choices: dict[tuple[Optional[str], bool], tuple[Optional[Ranked], str]] = {}
        for group, kills in due:
            self._kernel_kill(sample, SeenKill("memory.events", now_us, group, group, count=kills), choices)

    def _kernel_kill(
        self,
        sample: Sample,
        seen: SeenKill,
        choices: dict[tuple[Optional[str], bool], tuple[Optional[Ranked], str]],
    ) -> SeenKill:
        """Complete a kernel kill with the rule that watches its scope and whom the policy would
        have chosen there (a ranking, as a trigger there would have run it, acting on nothing);
        report it, count it, tell the listeners."""
        rule = self._covering(seen.scope, seen.scope_known)
        key = (seen.scope, seen.scope_known)
        if key not in choices:
            choices[key] = self._would_choose(sample, seen.scope, seen.scope_known, rule)
        choice, note = choices[key]
        label = None if rule is None else ("machine" if isinstance(rule, str) else rule.label)
        seen = replace(seen, rule=label, choice=choice, choice_note=note)
        self.kernel_kills += seen.count
        constraint = None if seen.kill is None else seen.kill.constraint
        for _ in range(seen.count):
            self.metrics.kernel_oom_kill(constraint, covered=rule is not None)
        self.reporter.kernel_oom_kill(seen)
        for listener in self.kernel_kill_listeners:
            listener(seen)
        return seen

    def _covering(self, scope: Optional[str], known: bool) -> Union[CgroupRule, str, None]:
        """The policy's rule that watches ``scope``: the first cgroup rule matching it, or for
        the machine its rule ("machine") when enabled; None when none does."""
        if not known:
            return None
        if scope is None:
            return "machine" if self.policy.machine.enabled else None
        return next((rule for rule in self.policy.cgroups if rule.matches(scope)), None)

    def _would_choose(
        self, sample: Sample, scope: Optional[str], known: bool, rule: Union[CgroupRule, str, None]
    ) -> tuple[Optional[Ranked], str]:
        """Whom the policy ranks first in ``scope`` now (the kernel's victim is dead or dying by
        then, and out of the ranking), or None and why."""
        if not known:
            return None, "the kernel's report does not say where the OOM was"
        if scope is not None and not self.host.cgroup_exists(scope):
            return None, f"{shown(scope)} is gone"
        whole_group = isinstance(rule, CgroupRule) and rule.action == "group"
        try:
            ranking = self._rank(sample, scope, whole_group)
        except GuardianError as exc:
            return None, f"no ranking: {exc}"
        self._report_failures(ranking)
        if ranking.top is not None:
            return ranking.top, ""
        if ranking.excluded:
            return None, f"nothing may be killed there: {ranking.excluded[0].reason}"
        return None, "no process is left there"

    def close(self) -> None:
        """The loop is stopping: kills in flight end here (what was sent is sent), reported."""
        self._abandon("guardian stopped before the kill was over")
        self.stop_kernel_log()
        self.after_kill.close()
