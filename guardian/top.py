"""``guardian top``: what guardian sees, refreshed in place every ``--interval`` seconds.

One refresh is one Sample, and everything on the screen comes from the code of the other
commands, run on that Sample: ``build_status()`` (status.py) gives memory, swap, zram and the
cgroups nearest their lines; the policy's Selector (selection.py) ranks the candidates and
``build_rank_report()`` (explain.py) says who the first three are and how their totals are
made. Ranking reads every process, so it is done again only once the last one's CPU time is
at most ``RANK_SHARE`` of the time since (every refresh on a small machine, every few seconds
on one with thousands of processes; the frame says how old the ranking is).

The live stall rate is ``stall_rate()`` of two readings of the memory PSI totals, as
``guardian status`` measures it, except that the two readings are this refresh's and the one
before: the file is read once per refresh, and the refreshes are the measuring window. A short
history of it is drawn as a sparkline.

``Monitor`` keeps what lasts between refreshes (the last PSI reading, the stall history, the
memory-use history the scorers take growth from, as the daemon keeps it); ``layout()`` is pure
(a Frame and a size in, lines out); ``Terminal`` and ``LogLines`` put the lines on a screen or
in a log. A terminal gets plain ANSI: the cursor sent home, each line cleared to its end, the
rest of the screen cleared, every line cut to the width (``cut()``) and the frame to the
height. Keys are read without echo; the terminal's mode, the cursor and the signal handlers
are put back however the view ends (q, Ctrl-C, SIGTERM, SIGHUP, an error), and Ctrl-Z gives
the terminal back while stopped. Anything else gets one block of plain lines per refresh,
without an escape sequence. Every name on the screen went through shown() on its way into the
reports.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import termios
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, Literal, Optional, Protocol

from guardian.clock import Clock
from guardian.explain import build_rank_report, number, terms
from guardian.frozen import frozen
from guardian.history import Histories
from guardian.host import Host
from guardian.isolation import PluginFailure
from guardian.records import Pressure
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.sources.psi import stall_rate
from guardian.status import Report, build_status, memory_lines
from guardian.text import counted, cut, human_bytes, middle

SPARKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"  # ▁ to █
SPARK_FLOOR_PCT = 1.0  # the sparkline's scale tops out at its peak, or at this when all is calm
HISTORY = 600  # stall rates kept: 10 minutes at the default interval, more than a screen shows
CANDIDATES = 3
CGROUPS = 5  # rows of the cgroup table, fewer on a short terminal
LOG_SPARK = 60  # points of the sparkline in a log, where there is no width to fill
LABEL = 11  # "memory     ": the label column, as in ``guardian status``
# Ranking reads every process (about 0.1 s of CPU per 1000 processes, README "Cost of ranking"),
# the rest of a refresh a few files: the candidates are ranked again only once the last ranking's
# CPU time is at most this share of the time since. On a machine of any size, ranking then takes
# at most this share of one CPU, and a refresh that does not rank costs a ``status`` read (at the
# default interval every refresh ranks below about 500 processes).
RANK_SHARE = 0.05


def sparkline(values: Sequence[float], width: int, top: float) -> str:
    """The last ``width`` values as bars: no stall as the lowest bar, ``top`` or more as the
    highest, and any stall above nothing at least the second, so that a small one is seen."""
    if width <= 0:
        return ""
    bars = []
    for value in list(values)[-width:]:
        if value <= 0 or top <= 0:
            bars.append(SPARKS[0])
        else:
            bars.append(SPARKS[max(1, min(len(SPARKS) - 1, round(value / top * (len(SPARKS) - 1))))])
    return "".join(bars)


@frozen
class Frame:
    """What one refresh saw, ready to be laid out at any size (a resize lays it out again)."""

    status: Report  # build_status(): names already shown()
    rank: Report  # build_rank_report() of the first CANDIDATES
    excluded: int  # candidates the policy keeps out of the ranking
    stalls: tuple[float, ...]  # live some-stall rates, oldest first, this refresh's last
    interval_s: float
    when: str  # wall-clock time of the refresh, as the caller wants it printed
    cpu_ms: float  # what the refresh cost this process in CPU time
    ranked_ago_s: float  # how old the ranking is: 0 when this refresh ranked
    rank_ms: float  # the CPU time of that ranking
    policy: str  # shown() already


def _stall_lines(frame: Frame, width: Optional[int]) -> list[str]:
    psi = frame.status["psi"]["memory"]
    if psi is None:
        return ["stall      unavailable (no memory PSI)"]
    kernel = f"kernel avg10 some {psi['some']['avg10']:.2f}"
    if psi["full"] is not None:
        kernel += f" full {psi['full']['avg10']:.2f}"
    live = psi["live"]
    if live is None:
        lines = [f"stall      live: measuring until the next refresh   {kernel}"]
    else:
        full = "" if live["full_pct"] is None else f"  full {live['full_pct']:.2f}%"
        lines = [
            f"stall      some {live['some_pct']:.2f}%{full} live over "
            f"{live['window_us'] / 1e6:.1f} s   {kernel}"
        ]
    if frame.stalls:
        room = LOG_SPARK if width is None else max(0, width - LABEL - 34)
        points = frame.stalls[-room:] if room else ()
        if points:
            peak = max(points)
            span = len(points) * frame.interval_s
            lines.append(
                " " * LABEL
                + sparkline(points, room, max(peak, SPARK_FLOOR_PCT))
                + f"  some, last {span:.{0 if span >= 10 else 1}f} s, peak {peak:.2f}%"
            )
    return lines


def _cgroup_lines(report: Report, rows: int, width: Optional[int]) -> list[str]:
    groups = [g for g in report["cgroups"] if g["usage_pct"] is not None or g["pressure"] is not None]
    if not groups:
        return [
            "nearest their lines: no cgroup with a memory limit or memory PSI "
            f"(of {counted(len(report['cgroups']), 'cgroup')})"
        ]
    path_w = 40 if width is None else max(16, width - 56)
    out = [
        f"nearest their lines ({counted(len(groups), 'cgroup')}; guardian status lists them all)",
        f"  {'cgroup':{path_w}} {'current':>10} {'limit':>10} {'headroom':>10} {'used':>6} {'some10':>7}",
    ]
    for g in groups[:rows]:
        used = "-" if g["usage_pct"] is None else f"{g['usage_pct']:.0f}%"
        some = "-" if g["pressure"] is None else f"{g['pressure']['some']['avg10']:.2f}"
        out.append(
            f"  {middle(g['path'], path_w):{path_w}} {human_bytes(g['current_bytes']):>10} "
            f"{human_bytes(g['max_bytes']):>10} {human_bytes(g['headroom_bytes']):>10} {used:>6} {some:>7}"
        )
    return out


def _candidate_lines(frame: Frame, width: Optional[int]) -> list[str]:
    rank = frame.rank
    scope = "machine-wide" if rank["scope"] == "/" else f"in {rank['scope']}"
    out = [f"first to go ({rank['mode']}, {scope}; policy {frame.policy})"]
    if frame.ranked_ago_s > 0:
        out[0] += (
            f", ranked {frame.ranked_ago_s:.0f} s ago: a ranking costs {frame.rank_ms:.0f} ms of CPU "
            "here, and is made again once that is 5 % of the time since"
        )
    path_w = 40 if width is None else max(16, width - 60)
    for i, c in enumerate(rank["candidates"], 1):
        cgroup = middle(c["cgroup"] or "-", path_w)
        if c["kind"] == "process":
            who = f"pid {c['pid']} ({c['comm']})  rss {human_bytes(c['rss_bytes'])}  adj {c['oom_score_adj']}"
        else:
            who = f"{counted(len(c['pids']), 'process', 'processes')}  rss {human_bytes(c['rss_bytes'])}"
        out.append(f"  {i}. {who}  {cgroup}")
        made = terms(rank["weights"], c["scores"]) or "no scores"
        out.append(f"     total {number(c['total'])} = {made}")
        out.extend(f"     {name}: {note}" for name, note in c["why"].items())
    if not rank["candidates"]:
        out.append("  (no candidate: nothing in scope may be killed)")
    if frame.excluded:
        out.append(f"  {counted(frame.excluded, 'candidate')} excluded; guardian rank --explain says why")
    out.extend(PluginFailure(f["plugin"], f["hook"], f["reason"]).describe() for f in rank["failures"])
    out.extend(f"plugin error: {error}" for error in rank["plugin_errors"])
    return out


def layout(frame: Frame, width: Optional[int] = None, height: Optional[int] = None) -> list[str]:
    """The frame as lines: cut to ``width`` columns and at most ``height`` lines where they are
    given (a terminal), whole where not (a log). A short terminal loses cgroup rows first, then
    the end of the frame, marked."""
    width = None if width is None else max(1, width)
    height = None if height is None else max(1, height)
    status = frame.status
    head = [
        f"guardian top  {frame.when}  every {frame.interval_s:g} s  root {status['root']}  "
        f"refresh {frame.cpu_ms:.0f} ms CPU" + ("  (q quits)" if height is not None else ""),
        *memory_lines(status),
        *_stall_lines(frame, width),
    ]
    tail = ["", *_candidate_lines(frame, width)]
    tail.extend(f"unavailable: {u['feature']}: {u['reason']}" for u in status["unavailable"])
    rows = CGROUPS
    if height is not None:  # the table gives way first: the candidates matter more
        rows = max(1, min(CGROUPS, height - len(head) - len(tail) - 3))
    lines = [*head, "", *_cgroup_lines(status, rows, width), *tail]
    if height is not None and len(lines) > height:
        hidden = len(lines) - height + 1
        lines = [*lines[: height - 1], f"... {counted(hidden, 'more line')}: a taller terminal shows them"]
    if width is not None:
        lines = [cut(line, width) for line in lines]
    return lines


class Monitor:
    """What ``guardian top`` keeps from one refresh to the next."""

    def __init__(
        self, host: Host, selector: Selector, plugin_errors: Sequence[str], clock: Clock, interval_s: float
    ) -> None:
        self.host = host
        self.selector = selector
        self.plugin_errors = list(plugin_errors)
        self.clock = clock
        self.interval_s = interval_s
        self.previous: Optional[tuple[int, Pressure]] = None
        self.stalls: deque[float] = deque(maxlen=HISTORY)
        # growth counts as in the daemon once a few refreshes have been recorded
        self.history = Histories() if selector.uses_growth else None
        self.rank_share = RANK_SHARE
        self.ranked: Optional[tuple[int, float, Report, int]] = None  # when, CPU s, report, excluded

    def refresh(self, when: str, policy: str) -> Frame:
        started = time.process_time()
        sample = Sample(self.host, self.clock.monotonic_us())
        pressure = sample.pressure_or_none("memory")
        live = None
        if pressure is not None and self.previous is not None and sample.time_us > self.previous[0]:
            live = stall_rate(self.previous[1], pressure, sample.time_us - self.previous[0])
            self.stalls.append(live.some_pct)
        self.previous = None if pressure is None else (sample.time_us, pressure)
        status = build_status(sample, live)
        if self.history is not None:
            # memory.current of each group was read by build_status: recording costs no read
            self.history.cgroups.record(sample.time_us, *sample.cgroup_usage())
        if self.ranked is None or (sample.time_us - self.ranked[0]) / 1e6 * self.rank_share >= self.ranked[1]:
            rank_started = time.process_time()
            ranking = self.selector.rank(sample, history=self.history, explained=CANDIDATES)
            report = build_rank_report(self.host, ranking, self.plugin_errors, top=CANDIDATES)
            self.ranked = (sample.time_us, time.process_time() - rank_started, report, len(ranking.excluded))
        ranked_us, rank_s, rank, excluded = self.ranked
        return Frame(
            status=status,
            rank=rank,
            excluded=excluded,
            stalls=tuple(self.stalls),
            interval_s=self.interval_s,
            when=when,
            cpu_ms=(time.process_time() - started) * 1000,
            ranked_ago_s=(sample.time_us - ranked_us) / 1e6,
            rank_ms=rank_s * 1000,
            policy=policy,
        )


class Quit(Exception):
    """Raised by a handler of SIGTERM or SIGHUP: leave as for q."""


def _quit(signum: int, _frame: Optional[FrameType]) -> None:
    raise Quit(signal.Signals(signum).name)


@contextmanager
def quit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) end the view as q does: cleanly, status 0."""
    old = {sig: signal.signal(sig, _quit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


Wait = Literal["quit", "resize", "time"]


class Screen(Protocol):
    """Where the frames go: a terminal, or lines for a log."""

    def stamp(self) -> str:
        """The wall-clock time, as this screen prints it in a frame's first line."""

    def show(self, frame: Frame) -> None:
        """Put the frame on the screen."""

    def wait(self, seconds: float) -> Wait:
        """Until ``seconds`` pass, or earlier when there is something to do."""


class LogLines:
    """Not a terminal: one block of plain lines per refresh, blocks apart by an empty line."""

    def __init__(self, write: Callable[[str], None], clock: Clock) -> None:
        self.write = write
        self.clock = clock
        self.blocks = 0

    def stamp(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def show(self, frame: Frame) -> None:
        self.write(("\n" if self.blocks else "") + "\n".join(layout(frame)) + "\n")
        self.blocks += 1

    def wait(self, seconds: float) -> Wait:
        self.clock.sleep(seconds)
        return "time"


HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"  # to the end of the line
CLEAR_BELOW = "\x1b[J"
CLEAR_SCREEN = "\x1b[2J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


class Terminal:
    """A terminal on ``out_fd`` (keys from ``in_fd`` when that is a terminal too). Use it as a
    context manager: entering takes the terminal (no echo, no line buffering, cursor hidden,
    SIGWINCH and Ctrl-Z handled), leaving gives everything back."""

    def __init__(self, write: Callable[[str], None], out_fd: int, in_fd: Optional[int]) -> None:
        self.write = write
        self.out_fd = out_fd
        self.in_fd = in_fd if in_fd is not None and os.isatty(in_fd) else None
        self.saved: Optional[list[Any]] = None
        self.resized = False
        self.wake_r = self.wake_w = -1
        self.old_wakeup_fd = -1
        self.old_handlers: dict[int, Any] = {}

    def stamp(self) -> str:
        return time.strftime("%H:%M:%S")

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.out_fd)
        except OSError:
            return 80, 24
        return size.columns or 80, size.lines or 24

    # -- taking and giving back the terminal --

    def _take(self) -> None:
        if self.in_fd is not None:
            self.saved = termios.tcgetattr(self.in_fd)
            mode = termios.tcgetattr(self.in_fd)
            mode[3] &= ~(termios.ECHO | termios.ICANON)  # keys one by one, not echoed over the view
            mode[6][termios.VMIN] = 0
            mode[6][termios.VTIME] = 0
            termios.tcsetattr(self.in_fd, termios.TCSANOW, mode)
        self.write(HIDE_CURSOR + HOME + CLEAR_SCREEN)

    def _give_back(self) -> None:
        # each step even when the one before failed: a terminal that went away (SIGHUP) fails
        # the write, and the mode is still someone else's to find as it was
        with contextlib.suppress(OSError):
            self.write(SHOW_CURSOR + "\r\n")  # the cursor below the last frame, which stays
        if self.saved is not None and self.in_fd is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self.saved)
            self.saved = None

    def __enter__(self) -> Terminal:
        # a signal wakes the wait at once (select() would otherwise sleep through SIGWINCH)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.old_wakeup_fd = signal.set_wakeup_fd(self.wake_w)
        for sig, handler in ((signal.SIGWINCH, self._resize), (signal.SIGTSTP, self._suspend)):
            self.old_handlers[sig] = signal.signal(sig, handler)
        self._take()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._give_back()
        finally:
            for sig, handler in self.old_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self.old_wakeup_fd)
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _resize(self, _signum: int, _frame: Optional[FrameType]) -> None:
        self.resized = True

    def _suspend(self, _signum: int, _frame: Optional[FrameType]) -> None:
        """Ctrl-Z: give the terminal back, stop, and take it again when continued."""
        self._give_back()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until SIGCONT
        signal.signal(signal.SIGTSTP, self._suspend)
        self._take()
        self.resized = True  # the screen was someone else's meanwhile: draw it all again

    # -- drawing and waiting --

    def show(self, frame: Frame) -> None:
        columns, rows = self.size()
        lines = layout(frame, columns, rows)
        # home, each line over the old one and cleared to its end, the rest cleared: no flicker,
        # and no newline after the last line, which on the bottom row would scroll the frame
        self.write(HOME + "\r\n".join(line + CLEAR_LINE for line in lines) + CLEAR_BELOW)

    def wait(self, seconds: float) -> Wait:
        """Until ``seconds`` pass, q is pressed, or the terminal is resized."""
        deadline = time.monotonic() + seconds
        while True:
            if self.resized:
                self.resized = False
                return "resize"
            left = deadline - time.monotonic()
            if left <= 0:
                return "time"
            watched = [self.wake_r] + ([self.in_fd] if self.in_fd is not None else [])
            ready, _, _ = select.select(watched, [], [], left)
            if self.wake_r in ready:
                while True:  # drain: the bytes are signal numbers, the handlers ran already
                    try:
                        if not os.read(self.wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            if self.in_fd is not None and self.in_fd in ready:
                keys = os.read(self.in_fd, 64)
                if not keys or b"q" in keys or b"Q" in keys:
                    return "quit"  # nothing to read from a terminal said to be readable: it hung up


def watch(
    monitor: Monitor,
    screen: Screen,
    clock: Clock,
    count: Optional[int],
    policy: str,
) -> None:
    """Refresh every ``monitor.interval_s`` seconds (on a fixed beat: a slow refresh does not
    push the later ones back), ``count`` times or until told to quit."""
    interval_us = int(monitor.interval_s * 1e6)
    beat = clock.monotonic_us()
    done = 0
    while True:
        frame = monitor.refresh(screen.stamp(), policy)
        screen.show(frame)
        done += 1
        if count is not None and done >= count:
            return
        beat = max(beat + interval_us, clock.monotonic_us())
        while (now := clock.monotonic_us()) < beat:
            event = screen.wait((beat - now) / 1e6)
            if event == "quit":
                return
            if event == "resize":
                screen.show(frame)  # laid out again at the new size; nothing is read again
