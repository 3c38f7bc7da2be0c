"""What wakes the loop: a plan (a value: which kernel events each watched condition needs) and
the Waiter that arms it and sleeps on it.

The loop sleeps until the kernel says something changed or the engine's interval runs out,
whichever comes first:

* PSI triggers on /proc/pressure/memory and on watched cgroups' memory.pressure (a 2 s window:
  the finest an opener without CAP_SYS_RESOURCE may ask for), falling back to polling where the
  kernel refuses;
* a wake-up trigger on the same files, whatever the policy's PSI conditions: 100 ms of "some"
  stall within 2 s (WAKE_STALL_PCT). Between two looks the interval trusts the speed at which
  memory was measured filling (pace.py); a burst faster than planned for needs direct reclaim,
  and reclaim is a memory stall: this trigger brings the next look forward, a look at every
  quantity the fast path reads (``Wake.stalled``; a full look only where a line is reached, as
  a swapping machine fires it in every window). Nothing is polled for it where the kernel
  refuses it;
* memory.events of watched cgroup2 groups (kernfs wakes pollers with POLLPRI on every change,
  at most every 10 ms: a group that sits at its limit changes its ``max`` counter at every
  reclaim, so its file wakes a poller up to a hundred times a second; after each wake-up it
  rests, below);
* on the v1 memory controller, a usage threshold registered through cgroup.event_control at the
  TERM headroom line of each watched group: an eventfd the kernel signals the moment usage
  crosses it (the notifier the kubelet uses on v1);
* inotify on the directories where a cgroup matching a rule can appear;
* the ``cgroup.events`` of watched cgroup2 groups still empty: it changes when the first process
  enters. A unit's cgroup is made before its limits are written (systemd writes them after the
  mkdir that inotify reports, and before the first process enters), so a group found without a
  limit, or with another one, is looked at again then. A limit written later, to a group that
  runs (``systemctl set-property``, a pod resized in place), raises no kernel event at all: the
  fast path reads the limits (``WatchedLimit``, Engine.quick);
* the kills in flight: a victim's pidfd polls readable when it exits, a group's cgroup.events
  changes when it empties;
* SIGHUP (reload) and SIGTERM/SIGINT (stop), through a wakeup pipe;
* the kernel log (/dev/kmsg polls readable for each new record): a kernel OOM kill is reported
  as soon as it is logged. It is registered apart from the plan's descriptors, so a rearm keeps
  it, and a wake that brought only log records is no reason to look at memory.

A kernel file that says "changed" can say it far more often than a look is worth: besides a
group at its limit, a v1 threshold fires at every crossing of a group that swings about its line.
So a memory.events file or a v1 threshold that wakes the loop a second time within ``REST_S``
rests for ``REST_S``: it is not polled, and a change meanwhile wakes the loop when the rest ends
(the file still reads as changed, the eventfd still counts). A change that comes alone, or the
second of two (a hog's group falling below its line as its last victim dies and crossing it again
as the next one grows), wakes the loop at once; each file's rest is its own (a second group's
first change is not held back by the first's); and the loop's own interval (the pace, a stall
timed every STALL_POLL_S) runs as before: what a rest removes is only wake-ups between two looks
that would have read the same thing. Through a file-cache thrash inside ``MemoryMax=``
(tests/e2e/scenarios/thrash) that was about 50 full looks a second.

Arming a PSI trigger or a v1 threshold writes to a kernel file. Under ``--root`` (a fixture tree
or a chroot, not this machine's kernel) nothing is ever written: those conditions are polled.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from typing import Optional

from guardian.config import CgroupRule, Policy
from guardian.errors import Unavailable
from guardian.frozen import frozen
from guardian.host import Host
from guardian.kernel import inotify_directories
from guardian.kinds import Level, PsiKind
from guardian.sample import Sample
from guardian.sources.cgroups import v2_file
from guardian.sources.psi import PsiTrigger, TriggerRefused, TriggerSpec

PSI_WINDOW_US = 2_000_000
WAKE_STALL_PCT = 5.0  # the wake-up trigger: 100 ms of "some" stall within the 2 s window
# a memory.events file or a v1 threshold wakes the loop at most twice in this (the stall poll's)
REST_S = 0.25
RESTING = frozenset({"events", "threshold"})  # the kinds of descriptor that rest after waking the loop
WAKE = "wake"  # the label of the wake-up triggers' keys: no rule is called that (config.py)
PsiKey = tuple[str, Optional[str]]  # (rule label or "machine", cgroup path or None)


@frozen
class PsiSource:
    """One PSI file the loop is woken by (and, unless ``wake_only``, a condition polls)."""

    path: str
    kind: PsiKind
    stall_pct: float
    key: PsiKey
    wake_only: bool = False  # a wake-up, not a condition: never polled, covers nothing


@frozen
class UsageLine:
    """A group's usage file (cgroup2's memory.current, v1's memory.usage_in_bytes) and the
    usage at which a full look must run, with its limit and the usage at which its KILL line is
    reached (what the poll floor plans for: pace.py). cgroup2 has no usage event, and v1's
    can come late (plan()): the fast path reads it, each at the pace its measured growth asks."""

    path: str
    line_bytes: int
    cgroup: str
    max_bytes: int = 0
    kill_bytes: Optional[int] = None  # None: as line_bytes


@frozen
class WatchedLimit:
    """A watched group and the limit its wake-ups were planned for (memory.max; v1
    memory.limit_in_bytes; None: no limit). Writing a limit notifies nobody: the fast path reads
    these, and a group whose limit moved is planned again."""

    cgroup: str
    max_bytes: Optional[int]


@frozen
class WakePlan:
    """Which kernel events the watched conditions need. Made by ``plan()``, armed by a Waiter."""

    psi: tuple[PsiSource, ...] = ()
    events: tuple[tuple[str, str], ...] = ()  # (memory.events file, cgroup)
    thresholds: tuple[tuple[str, int, str], ...] = ()  # (v1 memory dir, usage bytes, cgroup)
    usage_lines: tuple[UsageLine, ...] = ()
    limits: tuple[WatchedLimit, ...] = ()  # of the groups whose headroom is watched
    unpopulated: tuple[tuple[str, str], ...] = ()  # (cgroup.events file, cgroup) of those still empty
    directories: tuple[str, ...] = ()  # where a cgroup matching a rule can appear
    # per watched cgroup: the conditions a wake-up must cover, and those covered without arming
    needs: Mapping[str, frozenset[str]] = field(default_factory=dict)
    covered: Mapping[str, frozenset[str]] = field(default_factory=dict)
    writes: bool = True  # may arming write to kernel files (False under --root)


@frozen
class Armed:
    """What the kernel accepted of a plan."""

    psi: frozenset[PsiKey] = frozenset()  # sources with a registered kernel trigger
    psi_modes: Mapping[str, str] = field(default_factory=dict)  # path -> "trigger" or why polled
    uncovered: tuple[str, ...] = ()  # watched cgroups with a condition no kernel event reports
    events: frozenset[str] = frozenset()  # cgroups whose memory.events changes wake the loop
    # every directory where a cgroup matching a rule can appear is watched (inotify), so a new
    # group wakes the loop and no rescan on a timer is needed to find it
    tree: bool = False


@frozen
class Wake:
    """What ended a wait."""

    psi: frozenset[PsiKey] = frozenset()  # PSI conditions' triggers that fired (not the wake-ups)
    cgroups: bool = False  # a cgroup was made or removed under a rule's subtree, or an empty one filled
    events: frozenset[str] = frozenset()  # cgroups whose memory.events changed
    filled: frozenset[str] = frozenset()  # watched groups planned empty whose cgroup.events changed
    # any kernel event that needs a full look (a PSI condition's trigger, memory.events, a v1
    # threshold, a kill, cgroups); not a wake-up trigger, which is `stalled`
    kernel: bool = False
    signal: bool = False
    kmsg: bool = False  # the kernel log has new records
    # a wake-up trigger fired (WAKE_STALL_PCT of "some" stall): memory may be filling faster than
    # the interval planned for, so the fast path reads every quantity now instead of when due
    stalled: bool = False
    # cgroups whose memory.events rests (REST_S): a change there is not reported yet, so their
    # counters as last read may be stale
    resting: frozenset[str] = frozenset()

    @property
    def kmsg_only(self) -> bool:
        """Nothing but kernel log records: nothing the loop looks at changed."""
        return self.kmsg and not (self.psi or self.cgroups or self.kernel or self.signal or self.stalled)


def headroom_usage_line(
    sample: Sample, path: str, rules: Sequence[CgroupRule], level: Level = "TERM"
) -> Optional[int]:
    """The usage (bytes) at which the widest headroom line of ``rules`` at ``level`` is crossed
    in the cgroup (a rule without a KILL line counts with its TERM one, and the other way
    round), or None when it has no limit. Raises Unavailable where its memory cannot be read."""
    memory = sample.cgroup(path).usage
    if level == "TERM":
        lines = [r.headroom.term or r.headroom.kill for r in rules if r.headroom.enabled]
    else:
        lines = [r.headroom.kill or r.headroom.term for r in rules if r.headroom.enabled]
    amounts = [line for line in lines if line is not None]
    if not amounts or not memory.max_bytes:
        return None
    return memory.max_bytes - max(line.resolve(memory.max_bytes) for line in amounts)


def rule_directories(host: Host, policy: Policy) -> list[str]:
    """The directories in which a cgroup matching a rule could appear: each glob's literal
    prefix, its parent (the prefix itself may not exist yet: a glob naming one unit), and the
    levels below it that the glob reaches, in every mounted hierarchy. Where the prefix or its
    parent does not exist, its nearest ancestor that does: the first level made below it is
    what wakes the loop, whose rescan then watches the levels as they are."""
    found: set[str] = set()
    layout = host.cgroup_layout()
    trees = [
        directory_of
        for directory_of, mount in (
            (host.cgroup_v2_dir, layout.v2_mount),
            (host.cgroup_v1_memory_dir, layout.v1_memory_mount),
        )
        if mount is not None
    ]
    for rule in policy.cgroups:
        prefix, depth = rule.walk()
        parent = prefix.rsplit("/", 1)[0] or "/"
        below = host.cgroups_below(prefix, None if depth is None else max(0, depth - 1))
        for directory_of in trees:
            for path in (parent, prefix):
                nearest = _nearest_directory(host, path, directory_of)
                if nearest is not None:
                    found.add(nearest)
            for path in below:
                with contextlib.suppress(Unavailable):
                    found.add(directory_of(path))
    return sorted(d for d in found if host.is_dir(d))


def _nearest_directory(host: Host, cgroup: str, directory_of: Callable[[str], str]) -> Optional[str]:
    """The directory of ``cgroup`` in one hierarchy, or of its nearest ancestor that exists."""
    while True:
        with contextlib.suppress(Unavailable):
            directory = directory_of(cgroup)
            if host.is_dir(directory):
                return directory
        if cgroup in ("", "/"):
            return None
        cgroup = cgroup.rsplit("/", 1)[0] or "/"


def plan(host: Host, policy: Policy, watched: Sequence[str], sample: Sample) -> WakePlan:
    """The wake-ups the policy's conditions need for the watched cgroups (reads limits through
    the sample; writes nothing)."""
    psi: list[PsiSource] = []
    events: list[tuple[str, str]] = []
    thresholds: list[tuple[str, int, str]] = []
    usage_lines: list[UsageLine] = []
    limits: list[WatchedLimit] = []
    unpopulated: list[tuple[str, str]] = []
    needs: dict[str, frozenset[str]] = {}
    covered: dict[str, frozenset[str]] = {}
    machine_pressure = host.pressure_path("memory")
    if policy.machine.enabled and policy.machine.psi is not None:
        machine_psi = policy.machine.psi
        psi.append(PsiSource(machine_pressure, machine_psi.kind, machine_psi.stall_pct, ("machine", None)))
    if policy.machine.enabled and policy.machine.mem_available.enabled:
        psi.append(PsiSource(machine_pressure, "some", WAKE_STALL_PCT, (WAKE, None), wake_only=True))
    layout = host.cgroup_layout()
    v1 = layout.memory_controller == "v1"
    for path in watched:
        rules = [r for r in policy.cgroups if r.matches(path)]
        need: set[str] = set()
        free: set[str] = set()  # covered without arming anything
        for rule in rules:
            need |= {"psi"} if rule.psi is not None else set()
            need |= {"events"} if rule.events is not None else set()
            need |= {"headroom"} if rule.headroom.enabled else set()
        with contextlib.suppress(Unavailable):
            v2 = host.cgroup_v2_dir(path)
            psi_rule = next((r for r in rules if r.psi is not None), None)
            if psi_rule is not None and psi_rule.psi is not None and os.path.exists(f"{v2}/memory.pressure"):
                psi.append(
                    PsiSource(
                        f"{v2}/memory.pressure",
                        psi_rule.psi.kind,
                        psi_rule.psi.stall_pct,
                        (psi_rule.label, path),
                    )
                )
            if layout.v2_memory and os.path.exists(f"{v2}/memory.events"):
                events.append((f"{v2}/memory.events", path))
        if "headroom" in need and layout.memory_controller in ("v1", "v2"):
            # empty, read before the limit: a group found filled has its limits written already
            empty = _empty_group_events(host, sample, path)
            try:
                line = headroom_usage_line(sample, path, rules)
            except Unavailable:
                line = -1  # unreadable: stays uncovered, the full ticks look at it
            if line is None or line >= 0:  # readable: a limit written from now on is seen
                limits.append(WatchedLimit(path, sample.cgroup(path).usage.max_bytes))
                unpopulated.extend([(empty, path)] if empty is not None else [])
            if line is None:
                free.add("headroom")  # no limit: no headroom to watch
            elif line >= 0:
                if v1:
                    # the kernel's event at the line itself: at once, most of the time. Not
                    # always: the kernel checks a group's thresholds once every so many pages
                    # charged on a CPU (memcg's event ratelimit), so a burst that ends just past
                    # the line is reported with the next one (bench/reaction.py: one run in 25
                    # at 50 MB/s, 42 ms late, the hog's next 2 MiB step). Its usage is also
                    # read on the fast path, as cgroup2's memory.current is: near the line at
                    # the pace its growth asks, so a late event is at most one look late.
                    with contextlib.suppress(Unavailable):
                        thresholds.append((host.cgroup_v1_memory_dir(path), line, path))
                with contextlib.suppress(Unavailable):
                    limit = sample.cgroup(path).usage.max_bytes or 0
                    kill = headroom_usage_line(sample, path, rules, "KILL")
                    if v1:
                        usage = f"{host.cgroup_v1_memory_dir(path)}/memory.usage_in_bytes"
                    else:
                        v2 = host.cgroup_v2_dir(path)
                        usage = f"{v2}/memory.current"
                    usage_lines.append(UsageLine(usage, line, path, limit, kill))
                    free.add("headroom")
                    if not v1 and os.path.exists(f"{v2}/memory.pressure"):
                        psi.append(
                            PsiSource(f"{v2}/memory.pressure", "some", WAKE_STALL_PCT, (WAKE, path), True)
                        )
        needs[path] = frozenset(need)
        covered[path] = frozenset(free)
    return WakePlan(
        psi=tuple(psi),
        events=tuple(events),
        thresholds=tuple(thresholds),
        usage_lines=tuple(usage_lines),
        limits=tuple(limits),
        unpopulated=tuple(unpopulated),
        directories=tuple(rule_directories(host, policy)),
        needs=needs,
        covered=covered,
        writes=host.is_live,
    )


def _empty_group_events(host: Host, sample: Sample, path: str) -> Optional[str]:
    """The group's cgroup2 cgroup.events while it is still empty (its limits may not be written
    yet), else None (filled, or no cgroup2 namesake: a pure v1 host reads the limits alone)."""
    with contextlib.suppress(Unavailable):
        if not sample.cgroup(path).populated:
            return v2_file(host, path, "cgroup.events")
    return None


class Waiter:
    """The file descriptors that wake the loop: armed from a plan, rebuilt when it changes."""

    def __init__(self, wakeup_fd: Optional[int] = None) -> None:
        self.poller = select.poll()
        self.resting: dict[int, float] = {}  # fd (of a kind in RESTING) -> when it is polled again
        self.woke_at: dict[int, float] = {}  # fd (of a kind in RESTING) -> when it last woke the loop
        self.fds: dict[int, str] = {}  # fd -> "psi", "events", "populated", "threshold", "cgroups"
        self.masks: dict[int, int] = {}  # fd -> what it is polled for
        self.triggers: dict[int, tuple[PsiTrigger, PsiKey]] = {}
        self.events_of: dict[int, str] = {}  # memory.events fd -> its cgroup
        self.filled_of: dict[int, str] = {}  # cgroup.events fd of a group planned empty -> its cgroup
        self._filled: set[str] = set()  # of those, found filled when armed: the next wait reports them
        self.kill_fds: dict[int, int] = {}  # fd -> events; owned by the kills in flight, only polled here
        self.kmsg_fd: Optional[int] = None  # the kernel log's; owned by its follower, only polled here
        self.wakeup_fd = wakeup_fd
        if wakeup_fd is not None:
            self.poller.register(wakeup_fd, select.POLLIN)

    def _add(self, fd: int, mask: int, what: str) -> None:
        self.poller.register(fd, mask)
        self.fds[fd] = what
        self.masks[fd] = mask

    def _drop(self, fd: int) -> None:
        with contextlib.suppress(KeyError, OSError, ValueError):
            self.poller.unregister(fd)
        self.resting.pop(fd, None)
        self.woke_at.pop(fd, None)
        with contextlib.suppress(OSError):
            os.close(fd)
        self.fds.pop(fd, None)
        self.masks.pop(fd, None)
        self.triggers.pop(fd, None)
        self.events_of.pop(fd, None)
        self.filled_of.pop(fd, None)

    def close(self) -> None:
        self.set_kills([])
        self.set_kmsg(None)
        for fd in list(self.fds):
            self._drop(fd)

    def arm(self, wake_plan: WakePlan) -> Armed:
        """Register what the plan asks for (closing whatever was armed before); what the kernel
        accepted comes back."""
        for fd in list(self.fds):
            self._drop(fd)
        covered = {path: set(free) for path, free in wake_plan.covered.items()}
        modes: dict[str, str] = {}
        armed: set[PsiKey] = set()
        for source in wake_plan.psi:
            if not wake_plan.writes:
                if not source.wake_only:
                    modes[source.path] = "polling: nothing is written under --root"
                continue
            stall_us = max(1, min(PSI_WINDOW_US, int(PSI_WINDOW_US * source.stall_pct / 100)))
            try:
                trigger = PsiTrigger(source.path, TriggerSpec(source.kind, stall_us, PSI_WINDOW_US))
            except TriggerRefused as exc:
                if not source.wake_only:
                    modes[source.path] = f"polling: {exc.reason}"
                continue
            self._add(trigger.fd, select.POLLPRI, "psi")
            self.triggers[trigger.fd] = (trigger, source.key)
            if source.wake_only:
                continue
            modes[source.path] = "trigger"
            armed.add(source.key)
            if source.key[1] is not None:
                covered.setdefault(source.key[1], set()).add("psi")
        for path, cgroup in wake_plan.events:
            watching = self._watch_kernfs(path, "events")
            if watching is not None:
                self.events_of[watching[0]] = cgroup
                covered.setdefault(cgroup, set()).add("events")
        self._filled = set()
        for path, cgroup in wake_plan.unpopulated:
            watching = self._watch_kernfs(path, "populated")
            if watching is not None:
                self.filled_of[watching[0]] = cgroup
                # filled between the plan's read and this one: no change is left to notify
                if b"populated 1" in watching[1].splitlines():
                    self._filled.add(cgroup)
        for directory, usage_bytes, cgroup in wake_plan.thresholds:
            if wake_plan.writes and self._threshold(directory, usage_bytes):
                covered.setdefault(cgroup, set()).add("headroom")
        watch = inotify_directories(wake_plan.directories)
        if watch is not None:
            self._add(watch[0], select.POLLIN, "cgroups")
        tree = not wake_plan.directories or (watch is not None and watch[1])
        uncovered = tuple(path for path, need in wake_plan.needs.items() if need - covered.get(path, set()))
        events = frozenset(self.events_of.values())
        return Armed(psi=frozenset(armed), psi_modes=modes, uncovered=uncovered, events=events, tree=tree)

    def _watch_kernfs(self, path: str, what: str) -> Optional[tuple[int, bytes]]:
        """Poll a cgroup file that kernfs notifies changes of (POLLPRI) as ``what``: its fd and
        the text the arming read gave, or None where it cannot be read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            text = os.read(fd, 4096)  # a read arms kernfs change notification
        except OSError:
            os.close(fd)
            return None
        self._add(fd, select.POLLPRI, what)
        return fd, text

    def _threshold(self, directory: str, threshold_bytes: int) -> bool:
        """cgroup v1: an eventfd signalled when memory.usage_in_bytes crosses the threshold."""
        make_eventfd = getattr(os, "eventfd", None)  # Python 3.10+
        if make_eventfd is None or threshold_bytes <= 0:
            return False
        try:
            efd = make_eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except OSError:
            return False
        try:
            usage = os.open(f"{directory}/memory.usage_in_bytes", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(efd)
            return False
        try:
            with open(f"{directory}/cgroup.event_control", "w") as control:
                control.write(f"{efd} {usage} {threshold_bytes}")
        except OSError:
            os.close(efd)
            return False
        finally:
            os.close(usage)  # the kernel holds its own reference once registered
        self._add(efd, select.POLLIN, "threshold")
        return True

    def _rest(self, fd: int, now: float) -> None:
        """Stop polling ``fd`` for REST_S (it woke the loop twice within that)."""
        with contextlib.suppress(KeyError, OSError, ValueError):
            self.poller.unregister(fd)
        self.resting[fd] = now + REST_S

    def _end_rests(self, now: float) -> Optional[float]:
        """Poll again the descriptors whose rest is over; the seconds until the next rest ends
        (None: none rests)."""
        for fd in [fd for fd, until in self.resting.items() if until <= now]:
            del self.resting[fd]
            self.poller.register(fd, self.masks[fd])
        return min(self.resting.values()) - now if self.resting else None

    def set_kills(self, fds: Sequence[tuple[int, int]]) -> None:
        """Poll the kills' descriptors too, each for its own events (they stay the kills': never
        closed here). Call it right after a tick, before anything else opens a descriptor: a
        kill that ended closed its fd, and the number may be handed out again."""
        wanted = dict(fds)
        for fd in set(self.kill_fds) - set(wanted):
            if fd not in self.fds:  # the number may be an armed wake-up's now: leave that one
                with contextlib.suppress(KeyError, OSError, ValueError):
                    self.poller.unregister(fd)
        for fd, events in wanted.items():
            if self.kill_fds.get(fd) != events:
                self.poller.register(fd, events)
        self.kill_fds = wanted

    def set_kmsg(self, fd: Optional[int]) -> None:
        """Poll the kernel log's descriptor for POLLIN (None: stop); never closed here."""
        if self.kmsg_fd is not None and self.kmsg_fd not in self.fds and self.kmsg_fd not in self.kill_fds:
            with contextlib.suppress(KeyError, OSError, ValueError):
                self.poller.unregister(self.kmsg_fd)
        self.kmsg_fd = fd
        if fd is not None:
            self.poller.register(fd, select.POLLIN)

    def wait(self, timeout_s: float) -> Wake:
        """Sleep until an fd fires or the timeout passes; what fired, drained for the next wait
        (a descriptor of a kind in RESTING that woke it twice within REST_S rests)."""
        filled, self._filled = self._filled, set()
        deadline = time.monotonic() + timeout_s
        try:
            while True:  # a rest that ends before the timeout: poll its descriptor from then on
                now = time.monotonic()
                rest_s = self._end_rests(now)
                if filled:
                    events, last = self.poller.poll(0), True
                elif rest_s is None or rest_s >= deadline - now:
                    events, last = self.poller.poll(max(0, int((deadline - now) * 1000))), True
                else:
                    events, last = self.poller.poll(math.ceil(rest_s * 1000)), False
                if events or last:
                    break
        except InterruptedError:
            return Wake(
                signal=True,
                cgroups=bool(filled),
                filled=frozenset(filled),
                kernel=bool(filled),
                resting=self._resting_groups(),
            )
        now = time.monotonic()
        psi: set[PsiKey] = set()
        changed: set[str] = set()
        cgroups = kernel = bool(filled)
        signalled = kmsg = stalled = False
        for fd, mask in events:
            if fd == self.kmsg_fd:
                kmsg = True  # the follower reads it (and an overrun's POLLERR with it)
                continue
            if fd in self.kill_fds:
                kernel = True  # the kill's own step() reads and re-arms it
                continue
            what = self.fds.get(fd)
            if what is None:  # the wakeup pipe
                signalled = True
                with contextlib.suppress(OSError):
                    os.read(fd, 4096)
                continue
            if what == "psi":
                trigger, key = self.triggers[fd]
                state = trigger.fired(mask)
                if state == "gone":
                    self._drop(fd)  # a cgroup trigger reports POLLERR once the cgroup is gone
                    kernel = True
                elif key[0] == WAKE:  # a wake-up is only a wake-up: a quick look at everything
                    stalled = True
                else:
                    kernel = True
                    if state == "fired":
                        psi.add(key)
                continue
            kernel = True
            if what in ("threshold", "cgroups"):
                with contextlib.suppress(OSError):
                    os.read(fd, 4096)
                cgroups = cgroups or what == "cgroups"
            elif what in ("events", "populated"):
                if what == "events":
                    changed.add(self.events_of[fd])
                else:  # an empty group's first process: its limits are written by now
                    cgroups = True
                    filled.add(self.filled_of[fd])
                with contextlib.suppress(OSError):
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.read(fd, 4096)
            if what in RESTING:
                if now - self.woke_at.get(fd, -math.inf) < REST_S:  # the second wake-up within REST_S
                    self._rest(fd, now)
                self.woke_at[fd] = now
        return Wake(
            psi=frozenset(psi),
            cgroups=cgroups,
            events=frozenset(changed),
            filled=frozenset(filled),
            kernel=kernel,
            signal=signalled,
            kmsg=kmsg,
            stalled=stalled,
            resting=self._resting_groups(),
        )

    def _resting_groups(self) -> frozenset[str]:
        return frozenset(self.events_of[fd] for fd in self.resting if fd in self.events_of)
