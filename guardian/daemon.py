"""The loop: sample -> assess -> rank -> act -> report. ``tick()`` is testable alone.

Waking up. The daemon sleeps until the kernel says something changed or the adaptive interval
(policy.py: headroom / fill rate) runs out, whichever comes first:

* PSI triggers on /proc/pressure/memory and on watched cgroups' memory.pressure (a 2 s window:
  the finest an opener without CAP_SYS_RESOURCE may ask for; with it, the kernel also accepts
  finer windows), falling back to polling where the kernel refuses;
* memory.events of watched cgroup2 groups (kernfs wakes pollers with POLLPRI on every change);
* on the v1 memory controller, a usage threshold registered through cgroup.event_control at the
  TERM headroom line of each watched group: an eventfd the kernel signals the moment usage
  crosses it (the notifier the kubelet uses on v1);
* SIGHUP (reload) and SIGTERM/SIGINT (stop), through a wakeup pipe.

After a kill: the victim has been waited for (actions.py); then, for ``cooldown_s``, TERM-level
triggers of the same scope are ignored until the condition clears (memory has recovered) and
KILL-level ones until ``SETTLE_S`` has passed, so that memory the kernel is still freeing is not
answered with a second kill (earlyoom#121/#309: "kills more than required").
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import select
import signal
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Optional

from guardian.actions import AlreadyDying, Killer, Outcome, PidReused
from guardian.candidates import Candidate, group_never_kill, memory_cgroup
from guardian.clock import Clock
from guardian.config import CgroupRule, Policy, PolicyError, load_policy
from guardian.errors import GuardianError, Unavailable
from guardian.host import Host
from guardian.notify import Notifier
from guardian.plugins import Plugins, make_plugin_manager
from guardian.policy import KILL, Assessment, PolicyState, Trigger, assess, current_level
from guardian.ranking import Ranked
from guardian.report import PRIORITY_ERR, PRIORITY_WARNING, Reporter
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.sources.meminfo import quick_available
from guardian.sources.psi import PsiTrigger, TriggerRefused, TriggerSpec

SETTLE_S = 1.0  # after a victim died, KILL-level triggers wait this long for memory to show it
MAX_TICK_FAILURES = 10  # full ticks in a row that raise before the daemon gives up
RESCAN_S = 30.0  # how often the rules' subtrees are rescanned for new cgroups
PSI_HOLD_S = 5.0  # after a PSI trigger fires, read that source every tick for this long
PSI_WINDOW_US = 2_000_000
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
IN_CREATE, IN_DELETE, IN_ONLYDIR = 0x100, 0x200, 0x01000000


@dataclass
class TickResult:
    assessment: Assessment
    trigger: Optional[Trigger] = None
    victim: Optional[Ranked] = None
    action: Optional[str] = None
    outcome: Optional[Outcome] = None
    skipped: Optional[str] = None  # why a trigger led to no kill


@dataclass
class Cooldown:
    key: tuple[str, Optional[str], str]
    scope: Optional[str]
    since_us: int
    until_us: int


@dataclass(frozen=True)
class Calm:
    """What a full tick that found nothing to do leaves for the idle fast path: the MemAvailable
    line below which a full tick must run, the memory.current lines of watched cgroups with a
    limit (cgroup2, where no kernel event reports usage), and when a full tick is due anyway."""

    mem_line_bytes: Optional[int]  # None: the machine rule does not watch memory
    until_us: int
    usage_lines: tuple[tuple[str, int], ...] = ()  # (memory.current file, bytes at which to look)


@dataclass
class Loaded:
    policy: Policy
    plugins: Plugins
    selector: Selector


def load(host: Host, path: Optional[str], dry_run: bool) -> Loaded:
    """Policy + plugins + selector, all or nothing (PolicyError if any part is invalid)."""
    policy = load_policy(path) if path else Policy()
    if dry_run:
        policy = replace(policy, dry_run=True)
    plugins = make_plugin_manager(policy.plugins.directory or host.plugin_dir(), policy.plugins.entry_points)
    return Loaded(policy, plugins, Selector(policy, plugins))


class Guardian:
    def __init__(
        self,
        host: Host,
        loaded: Loaded,
        reporter: Reporter,
        clock: Optional[Clock] = None,
    ) -> None:
        self.host = host
        self.loaded = loaded
        self.reporter = reporter
        self.clock = clock or Clock()
        self.state = PolicyState()
        self.killer = Killer(host, dry_run=loaded.policy.dry_run)
        self.cooldowns: list[Cooldown] = []
        self.watched: list[str] = []
        self._signature: list[tuple[str, Optional[int]]] = []
        self.watch_changed = False
        self.psi_fired_us: dict[tuple[str, Optional[str]], int] = {}
        self.calm: Optional[Calm] = None
        self.uncovered = True  # some watched condition has no kernel wake-up: poll fully
        # cgroup2 headroom conditions, watched by reading memory.current on the fast path
        self.usage_lines: tuple[tuple[str, int], ...] = ()
        self._scanned_us: Optional[int] = None
        self.kills = 0

    @property
    def policy(self) -> Policy:
        return self.loaded.policy

    # --- policy ------------------------------------------------------------------------------

    def replace_policy(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.killer = Killer(self.host, dry_run=loaded.policy.dry_run)
        self.state = PolicyState()
        self._scanned_us = None
        self._signature = []
        self.calm = None

    # --- what to watch ------------------------------------------------------------------------

    def rescan(self, sample: Sample, now_us: int, force: bool = False) -> bool:
        """Refresh the cgroups the rules match (walking only the subtrees their globs can reach);
        True if what is watched changed (a group came or went, or a watched limit moved), so
        that the kernel wake-ups are rebuilt."""
        if not force and self._scanned_us is not None and now_us - self._scanned_us < RESCAN_S * 1e6:
            return False
        self._scanned_us = now_us
        paths: set[str] = set()
        for rule in self.policy.cgroups:
            prefix, depth = rule.walk()
            paths.update(p for p in self.host.cgroups_below(prefix, depth) if rule.matches(p))
        matched = sorted(paths)
        signature = []
        for path in matched:
            try:
                signature.append((path, sample.cgroup(path).memory.max_bytes))
            except Unavailable:
                signature.append((path, None))
        changed = signature != self._signature
        self._signature = signature
        self.watched = matched
        self.watch_changed = self.watch_changed or changed
        return changed

    def rescan_soon(self) -> None:
        """A cgroup came or went under a rule's subtree: rescan on the next tick."""
        self._scanned_us = None

    def arm_psi(self, armed: Iterable[tuple[str, Optional[str]]], now_us: int) -> None:
        """PSI sources whose kernel trigger is armed and has not fired in PSI_HOLD_S: the policy
        does not read them (the kernel is watching)."""
        hold = PSI_HOLD_S * 1e6
        self.state.psi_armed = {k for k in armed if now_us - self.psi_fired_us.get(k, -(1 << 62)) > hold}

    # --- one tick -------------------------------------------------------------------------------

    def tick(self, now_us: Optional[int] = None) -> TickResult:
        now_us = self.clock.monotonic_us() if now_us is None else now_us
        sample = Sample(self.host, now_us)
        self.rescan(sample, now_us)
        assessment = assess(sample, self.policy, self.state, now_us, self.watched)
        result = TickResult(assessment)
        self._expire_cooldowns(assessment, now_us)
        self.calm = self._calm(sample, assessment, now_us)
        trigger = self._actionable(assessment, now_us)
        if trigger is None:
            return result
        result.trigger = trigger
        self._act(sample, trigger, result)
        return result

    def _calm(self, sample: Sample, assessment: Assessment, now_us: int) -> Optional[Calm]:
        """A Calm when the next wake-ups may take the fast path: nothing crossed, no cooldown,
        no stall being timed, no PSI source being polled, every watched cgroup condition covered
        by a kernel wake-up."""
        state = self.state
        if assessment.triggers or self.cooldowns or state.stalled_since_us or self.uncovered:
            return None
        if state.psi_polled_us == now_us:
            return None
        rule = self.policy.machine
        line: Optional[int] = None
        amount = rule.mem_available.term or rule.mem_available.kill
        if rule.enabled and amount is not None:
            total = sample.meminfo.total_bytes  # read by this tick already
            line = amount.resolve(total) + int(total * self.policy.hysteresis_pct / 100)
        next_scan = (self._scanned_us or now_us) + int(RESCAN_S * 1e6)
        return Calm(line, min(next_scan, now_us + 60_000_000), self.usage_lines)

    def quick(self, now_us: int) -> Optional[float]:
        """The idle fast path: with the machine calm at the last full tick, one read of
        MemAvailable and one of memory.current per watched cgroup2 group with a limit decide.
        Returns the next interval, or None when a full tick must run. (A cold full tick costs
        ~240 us of CPU on the development machine, this ~40 us; near a cgroup's line, where the
        interval shrinks to milliseconds, that is the difference between a few percent of a CPU
        and a third of one under emulation.)"""
        calm = self.calm
        if calm is None or now_us >= calm.until_us:
            return None
        poll = self.policy.poll
        gaps = []
        if calm.mem_line_bytes is not None:
            available = quick_available(self.host.read_hot(self.host.meminfo_path(), "meminfo"))
            if available is None or available <= calm.mem_line_bytes:
                return None
            gaps.append(available - calm.mem_line_bytes)
        for path, line in calm.usage_lines:
            try:
                current = int(self.host.read_hot(path, "cgroup2").strip())
            except (GuardianError, OSError, ValueError):
                return None  # gone or unreadable: a full tick sorts it out
            if current >= line:
                return None
            gaps.append(line - current)
        if not gaps:
            return poll.max_interval_s
        seconds = min(gaps) / poll.fill_rate_bytes_per_s
        return max(poll.min_interval_s, min(poll.max_interval_s, seconds))

    def _expire_cooldowns(self, assessment: Assessment, now_us: int) -> None:
        active = {t.key for t in assessment.triggers}
        self.cooldowns = [c for c in self.cooldowns if now_us < c.until_us and c.key in active]

    def _actionable(self, assessment: Assessment, now_us: int) -> Optional[Trigger]:
        for trigger in sorted(assessment.triggers, key=lambda t: (t.level != KILL, t.scope is not None)):
            blocked = False
            for c in self.cooldowns:
                if c.key != trigger.key and c.scope != trigger.scope:
                    continue
                settled = now_us - c.since_us >= SETTLE_S * 1e6
                if trigger.level != KILL or not settled:
                    blocked = True
            if not blocked:
                return trigger
        return None

    def _act(self, sample: Sample, trigger: Trigger, result: TickResult) -> None:
        selector = self.loaded.selector
        if trigger.action == "group" and trigger.scope is not None:
            victim = self._group_victim(sample, trigger.scope, result)
            if victim is None:
                return
            action = "group-kill"
        else:
            ranking = selector.rank(sample, "process", trigger.scope)
            for failure in ranking.failures:
                self.reporter.lifecycle(
                    f"scorer {failure.scorer} left out of a ranking: {failure.reason}", PRIORITY_WARNING
                )
            if ranking.top is None:
                result.skipped = "nothing in scope may be killed"
                self.reporter.not_done(trigger, "no-candidate", result.skipped)
                self._start_cooldown(trigger)
                return
            victim = ranking.top
            action = (
                "group-kill" if victim.candidate.kill_group else ("kill" if trigger.level == KILL else "term")
            )
        result.victim = victim

        # pin the victim now, then re-check that the trigger still holds on a fresh read
        pidfd = None
        process = victim.candidate.process
        if process is not None and action != "group-kill" and not self.killer.dry_run:
            try:
                pidfd = self.killer.open_victim(process)
            except GuardianError as exc:
                kind = {AlreadyDying: "already-dying", PidReused: "pid-reused"}.get(type(exc), "vanished")
                result.outcome = Outcome(kind, pids=[process.pid], detail=str(exc))
                self.reporter.decision(trigger, victim, action, result.outcome)
                return
        level = current_level(Sample(self.host, self.clock.monotonic_us()), self.policy, self.state, trigger)
        if level is None:
            if pidfd is not None:
                os.close(pidfd)
            result.skipped = "the condition cleared before the kill"
            self.reporter.not_done(trigger, "recovered", result.skipped)
            return
        if level == KILL and action == "term":
            action = "kill"
        trigger = replace(trigger, level=level)  # report the level acted on, after the re-check
        result.trigger = trigger
        result.action = action

        if action == "group-kill":
            group = victim.candidate.kill_group or victim.candidate.cgroup or trigger.scope or "/"
            outcome = self.killer.kill_group(group)
        else:
            assert process is not None

            def escalate() -> bool:
                fresh = Sample(self.host, self.clock.monotonic_us())
                return current_level(fresh, self.policy, self.state, trigger) == KILL

            outcome = self.killer.kill_process(
                process, "KILL" if action == "kill" else "TERM", self.policy.grace_s, escalate, pidfd
            )
            if "SIGKILL" in outcome.signals and action == "term":
                action = "kill"
        result.outcome = outcome
        result.action = action
        self.reporter.decision(trigger, victim, action, outcome)
        if outcome.result in ("terminated", "killed", "alive", "dry-run"):
            self.kills += outcome.result != "dry-run"
            self._start_cooldown(trigger)

    def _group_victim(self, sample: Sample, scope: str, result: TickResult) -> Optional[Ranked]:
        layout = self.host.cgroup_layout()
        members = tuple(
            p
            for p in sample.processes_in(scope)
            if not p.is_kernel_thread and _inside(memory_cgroup(p, layout), scope)
        )
        candidate = Candidate(kind="cgroup", cgroup=scope, members=members, kill_group=scope)
        context = self.loaded.selector.context(sample, "cgroup", scope)
        verdict = group_never_kill(members, context.self_pid, self.policy, context.facts_of, layout)
        reason = "no processes in the group" if not members else (verdict[0] if verdict else None)
        if reason is not None:
            result.skipped = f"group {scope}: {reason}"
            if result.trigger is not None:
                self.reporter.not_done(result.trigger, "protected", result.skipped)
                self._start_cooldown(result.trigger)
            return None
        ranking = self.loaded.selector.ranker.rank(context, [candidate])
        return ranking.ranked[0]

    def _start_cooldown(self, trigger: Trigger) -> None:
        now = self.clock.monotonic_us()
        self.cooldowns.append(
            Cooldown(trigger.key, trigger.scope, now, now + int(self.policy.cooldown_s * 1e6))
        )


def _inside(cgroup: Optional[str], scope: str) -> bool:
    return cgroup is not None and (cgroup == scope or cgroup.startswith(scope.rstrip("/") + "/"))


# --- waiting for the kernel -----------------------------------------------------------------------


class Waiter:
    """The file descriptors that wake the loop early, rebuilt when the watched set changes."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.poller = select.poll()
        self.fds: dict[int, str] = {}  # fd -> what it is, for logs
        self.psi_modes: dict[str, str] = {}  # path -> "trigger" or why polling
        self.psi_keys: dict[str, tuple[str, Optional[str]]] = {}  # "psi <path>" -> policy key
        self.uncovered: list[str] = []  # watched cgroups with a condition no kernel event reports

    def armed_psi(self) -> list[tuple[str, Optional[str]]]:
        return [key for what, key in self.psi_keys.items() if what in self.fds.values()]

    def close(self) -> None:
        for fd in list(self.fds):
            with contextlib.suppress(OSError):
                self.poller.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def _add(self, fd: int, mask: int, what: str) -> None:
        self.poller.register(fd, mask)
        self.fds[fd] = what

    def add_psi(self, path: str, kind: str, stall_pct: float, key: tuple[str, Optional[str]]) -> None:
        stall_us = max(1, min(PSI_WINDOW_US, int(PSI_WINDOW_US * stall_pct / 100)))
        try:
            trig = PsiTrigger(path, TriggerSpec(kind, stall_us, PSI_WINDOW_US))
        except TriggerRefused as exc:
            self.psi_modes[path] = f"polling: {exc.reason}"
            return
        self.psi_modes[path] = "trigger"
        self._add(trig.fd, select.POLLPRI, f"psi {path}")
        self.psi_keys[f"psi {path}"] = key

    def add_cgroup_watch(self, directories: list[str]) -> None:
        """inotify on cgroup directories: a cgroup made or removed under a rule's subtree wakes
        the loop at once (mkdir in cgroupfs raises IN_CREATE), instead of at the next rescan."""
        if not directories:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return
        added = 0
        for directory in directories:
            if libc.inotify_add_watch(fd, directory.encode(), IN_CREATE | IN_DELETE | IN_ONLYDIR) >= 0:
                added += 1
        if not added:
            os.close(fd)
            return
        self._add(fd, select.POLLIN, "cgroups")

    def add_events(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            os.read(fd, 4096)  # a read arms kernfs change notification
        except OSError:
            return
        self._add(fd, select.POLLPRI, f"events {path}")

    def add_v1_threshold(self, directory: str, threshold_bytes: int) -> None:
        """cgroup v1: eventfd signalled when memory.usage_in_bytes crosses ``threshold_bytes``."""
        make_eventfd = getattr(os, "eventfd", None)  # Python 3.10+
        if make_eventfd is None or threshold_bytes <= 0:
            return
        try:
            efd = make_eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except OSError:
            return
        try:
            usage = os.open(f"{directory}/memory.usage_in_bytes", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            return
        try:
            with open(f"{directory}/cgroup.event_control", "w") as control:
                control.write(f"{efd} {usage} {threshold_bytes}")
        except OSError:
            os.close(efd)
            return
        finally:
            os.close(usage)  # the kernel holds its own reference once registered
        self._add(efd, select.POLLIN, f"threshold {directory} at {threshold_bytes}")

    def wait(self, timeout_s: float) -> list[str]:
        """Sleep until an fd fires or the timeout passes; what fired, drained for the next wait."""
        try:
            events = self.poller.poll(max(0, int(timeout_s * 1000)))
        except InterruptedError:
            return ["signal"]
        fired = []
        for fd, mask in events:
            what = self.fds.get(fd, "signal")
            fired.append(what)
            if what.startswith("threshold") or what in ("signal", "cgroups"):
                with contextlib.suppress(OSError):
                    os.read(fd, 4096)
            elif what.startswith("events"):
                with contextlib.suppress(OSError):
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.read(fd, 4096)
            elif mask & (select.POLLERR | select.POLLNVAL) and what.startswith("psi"):
                # a cgroup trigger reports POLLERR once the cgroup is gone
                with contextlib.suppress(OSError):
                    self.poller.unregister(fd)
                    os.close(fd)
                self.fds.pop(fd, None)
        return fired


def build_waiter(guardian: Guardian, sample: Sample, wakeup_fd: Optional[int]) -> Waiter:
    host = guardian.host
    policy = guardian.policy
    waiter = Waiter(host)
    if wakeup_fd is not None:
        waiter.poller.register(wakeup_fd, select.POLLIN)
    if policy.machine.enabled and policy.machine.psi is not None:
        waiter.add_psi(
            host.pressure_path("memory"),
            policy.machine.psi.kind,
            policy.machine.psi.stall_pct,
            ("machine", None),
        )
    layout = host.cgroup_layout()
    usage_lines: list[tuple[str, int]] = []
    for path in guardian.watched:
        rules = [r for r in policy.cgroups if r.matches(path)]
        covered: set[str] = set()
        with contextlib.suppress(Unavailable):
            v2 = host.cgroup_v2_dir(path)
            for rule in rules:
                if rule.psi is not None and os.path.exists(f"{v2}/memory.pressure"):
                    armed = len(waiter.psi_keys)
                    waiter.add_psi(
                        f"{v2}/memory.pressure", rule.psi.kind, rule.psi.stall_pct, (rule.label, path)
                    )
                    if len(waiter.psi_keys) > armed:
                        covered.add("psi")
                    break
            if layout.v2_memory and os.path.exists(f"{v2}/memory.events"):
                waiter.add_events(f"{v2}/memory.events")
                covered.add("events")
        needs = set()
        for rule in rules:
            needs |= {"psi"} if rule.psi is not None else set()
            needs |= {"events"} if rule.events is not None else set()
            needs |= {"headroom"} if rule.headroom.enabled else set()
        if "headroom" in needs and layout.memory_controller in ("v1", "v2"):
            try:
                usage_line = headroom_usage_line(sample, path, rules)
            except Unavailable:
                continue
            if usage_line is None:
                covered.add("headroom")  # no limit: no headroom to watch
            elif layout.memory_controller == "v1":  # the kernel's usage threshold eventfd
                before = len(waiter.fds)
                waiter.add_v1_threshold(host.cgroup_v1_memory_dir(path), usage_line)
                if len(waiter.fds) > before:
                    covered.add("headroom")
            else:  # cgroup2 has no usage event: the fast path reads memory.current
                with contextlib.suppress(Unavailable):
                    limit = sample.cgroup(path).memory.max_bytes or 0
                    hysteresis = int(limit * policy.hysteresis_pct / 100)
                    usage_lines.append(
                        (f"{host.cgroup_v2_dir(path)}/memory.current", usage_line - hysteresis)
                    )
                    covered.add("headroom")
        if needs - covered:
            waiter.uncovered.append(path)
    guardian.uncovered = bool(waiter.uncovered)
    host.forget_hot({p for p, _ in guardian.usage_lines} - {p for p, _ in usage_lines})
    guardian.usage_lines = tuple(usage_lines)
    # A calm judged before these wake-ups existed (the tick that found a new group) knows neither
    # its usage line nor whether it is covered: the next wake-up must be a full tick.
    guardian.calm = None
    waiter.add_cgroup_watch(rule_directories(host, policy))
    return waiter


def headroom_usage_line(sample: Sample, path: str, rules: list[CgroupRule]) -> Optional[int]:
    """The usage (bytes) at which the widest headroom line of ``rules`` is crossed in the cgroup,
    or None when it has no limit. Raises Unavailable where its memory cannot be read."""
    memory = sample.cgroup(path).memory
    lines = [r.headroom.term or r.headroom.kill for r in rules if r.headroom.enabled]
    amounts = [line for line in lines if line is not None]
    if not amounts or not memory.max_bytes:
        return None
    return memory.max_bytes - max(line.resolve(memory.max_bytes) for line in amounts)


def rule_directories(host: Host, policy: Policy) -> list[str]:
    """The directories in which a cgroup matching a rule could appear: each glob's literal
    prefix and the levels below it that the glob reaches, in every mounted hierarchy."""
    found: set[str] = set()
    layout = host.cgroup_layout()
    for rule in policy.cgroups:
        prefix, depth = rule.walk()
        # where a matching group can appear: the prefix's parent (the prefix itself may not
        # exist yet: a glob naming one unit), the prefix, and the levels below it
        parent = prefix.rsplit("/", 1)[0] or "/"
        parents = [parent, prefix] + [
            p for p in host.cgroups_below(prefix, None if depth is None else max(0, depth - 1)) if p != prefix
        ]
        for path in parents:
            with contextlib.suppress(Unavailable):
                if layout.v2_mount is not None:
                    found.add(host.cgroup_v2_dir(path))
                if layout.v1_memory_mount is not None:
                    found.add(host.cgroup_v1_memory_dir(path))
    return sorted(d for d in found if os.path.isdir(d))


# --- the service --------------------------------------------------------------------------------


def protect_self(host: Host, adj: int, reporter: Reporter) -> None:
    """mlockall (so guardian itself is never paged out when memory is short) and a low
    oom_score_adj, where permitted; a warning where not."""
    if not host.is_live:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        reporter.lifecycle(
            f"mlockall failed ({os.strerror(err)}): guardian's memory may be paged out under pressure "
            "(needs CAP_IPC_LOCK)",
            PRIORITY_WARNING,
        )
    try:
        with open(host.pid_path(os.getpid(), "oom_score_adj"), "w") as f:
            f.write(str(adj))
    except OSError as exc:
        hint = (
            " (lowering needs CAP_SYS_RESOURCE; the unit sets OOMScoreAdjust=-1000)"
            if exc.errno == errno.EACCES
            else ""
        )
        reporter.lifecycle(f"cannot set own oom_score_adj to {adj}: {exc.strerror}{hint}", PRIORITY_WARNING)


class Service:
    """``guardian run``: the loop with signals, sd_notify and the watchdog."""

    def __init__(
        self, guardian: Guardian, policy_path: Optional[str], dry_run: bool, notifier: Notifier
    ) -> None:
        self.guardian = guardian
        self.policy_path = policy_path
        self.dry_run = dry_run
        self.notifier = notifier
        self.stop = False
        self.reload = False
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._last_dog = 0.0

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True

    def do_reload(self) -> None:
        g = self.guardian
        self.notifier.send(
            RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        )
        try:
            loaded = load(g.host, self.policy_path, self.dry_run)
        except PolicyError as exc:
            g.reporter.policy_rejected(self.policy_path or "<defaults>", str(exc))
        else:
            g.replace_policy(loaded)
            g.reporter.policy_loaded(loaded.policy.source, summarize(loaded.policy))
            for error in loaded.plugins.errors:
                g.reporter.lifecycle(error, PRIORITY_WARNING)
        self.notifier.send(READY="1", STATUS=self.status())

    def _wait(self, waiter: Waiter, timeout: float) -> None:
        """Sleep until a kernel event or ``timeout``; keep the watchdog fed on the way."""
        g = self.guardian
        if self.notifier.watchdog_s:
            timeout = min(timeout, self.notifier.watchdog_s / 3)
            if time.monotonic() - self._last_dog >= self.notifier.watchdog_s / 3:
                self.notifier.send(WATCHDOG="1")
                self._last_dog = time.monotonic()
        if self.stop or self.reload:
            return
        fired = waiter.wait(timeout)
        now = g.clock.monotonic_us()
        for what in fired:
            key = waiter.psi_keys.get(what)
            if key is not None:
                g.psi_fired_us[key] = now
        if fired:
            g.calm = None  # the kernel saw something: look properly
        if "cgroups" in fired:
            g.rescan_soon()
        if fired or g.psi_fired_us:  # holds start on a fire and expire with time
            g.arm_psi(waiter.armed_psi(), now)
            hold = PSI_HOLD_S * 1e6
            g.psi_fired_us = {k: t for k, t in g.psi_fired_us.items() if now - t <= hold}

    def _tick_failed(self, exc: Exception, failures: int) -> None:
        """A tick that raised (a race the readers do not know yet, a bug): reported with its
        traceback, and the loop goes on, because an OOM daemon that exits in the middle of an
        episode leaves the machine unguarded until systemd has restarted it. Ten in a row end
        the daemon after all (the unit restarts it)."""
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        self.guardian.reporter.lifecycle(
            f"a tick failed ({failures} in a row): {type(exc).__name__}: {exc}",
            PRIORITY_ERR,
            traceback=detail,
        )
        if failures >= MAX_TICK_FAILURES:
            raise exc

    def status(self) -> str:
        g = self.guardian
        mode = "dry run, " if g.policy.dry_run else ""
        return f"{mode}watching the machine and {len(g.watched)} cgroups; {g.kills} kills"

    def run(self, ticks: Optional[int] = None) -> int:
        g = self.guardian
        previous = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        }
        old_wakeup = signal.set_wakeup_fd(self._pipe_w, warn_on_full_buffer=False)
        protect_self(g.host, g.policy.self_oom_score_adj, g.reporter)
        g.reporter.lifecycle(f"started: {summarize(g.policy)}", pid=str(os.getpid()))
        for error in g.loaded.plugins.errors:
            g.reporter.lifecycle(error, PRIORITY_WARNING)
        now = g.clock.monotonic_us()
        g.rescan(Sample(g.host, now), now, force=True)
        waiter = build_waiter(g, Sample(g.host, now), self._pipe_r)
        g.watch_changed = False
        g.arm_psi(waiter.armed_psi(), now)
        self.notifier.send(READY="1", STATUS=self.status())
        # Everything allocated so far (imports, plugins, policy) lives as long as the process:
        # take it out of the cyclic collector's sight, so idle ticks do not pay for rescanning
        # it (gc.freeze, Python 3.7+; measured -27 % CPU per tick)
        gc.collect()
        gc.freeze()
        count = 0
        failures = 0  # full ticks in a row that raised
        try:
            while not self.stop and (ticks is None or count < ticks):
                count += 1
                if self.reload:
                    self.reload = False
                    self.do_reload()
                    waiter.close()
                    now = g.clock.monotonic_us()
                    g.rescan(Sample(g.host, now), now, force=True)
                    waiter = build_waiter(g, Sample(g.host, now), self._pipe_r)
                    g.watch_changed = False
                    g.arm_psi(waiter.armed_psi(), now)
                quick = None if self.reload or self.stop else g.quick(g.clock.monotonic_us())
                if quick is not None:
                    self._wait(waiter, quick)
                    continue
                try:
                    result = g.tick()
                except Exception as exc:  # isolated, reported, bounded: see _tick_failed
                    failures += 1
                    self._tick_failed(exc, failures)
                    self._wait(waiter, g.policy.poll.min_interval_s * failures)
                    continue
                failures = 0
                if result.outcome is not None or result.skipped:
                    self.notifier.send(STATUS=self.status())
                if g.watch_changed:  # a watched group came, went, or changed its limit
                    g.watch_changed = False
                    self.notifier.send(STATUS=self.status())
                    waiter.close()
                    waiter = build_waiter(g, Sample(g.host, result.assessment.time_us), self._pipe_r)
                    g.arm_psi(waiter.armed_psi(), result.assessment.time_us)
                self._wait(waiter, result.assessment.interval_s)
        finally:
            waiter.close()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in previous.items():
                signal.signal(s, h)
            self.notifier.send(STOPPING="1")
            g.reporter.lifecycle("stopped", kills=str(g.kills))
        return 0


def summarize(policy: Policy) -> str:
    parts = []
    m = policy.machine
    if m.enabled:
        mem = f"MemAvailable {m.mem_available.term or '-'}/{m.mem_available.kill or '-'}"
        swap = f"SwapFree {m.swap_free.term or '-'}/{m.swap_free.kill or '-'}"
        parts.append(
            f"machine: {mem}, {swap}"
            + (f", PSI {m.psi.kind} {m.psi.stall_pct:g}%/{m.psi.duration_s:g}s" if m.psi else "")
        )
    if policy.cgroups:
        parts.append(f"{len(policy.cgroups)} cgroup rules ({', '.join(r.match for r in policy.cgroups)})")
    parts.append("scorers " + ", ".join(f"{k} x{v:g}" for k, v in policy.scorers.items()))
    if policy.dry_run:
        parts.append("DRY RUN")
    return "; ".join(parts)
