"""What guardian costs while nothing happens, beside earlyoom doing the same job.

Starts ``guardian run`` and Debian's ``earlyoom --dryrun`` side by side, lets both settle (so the
one-off cost of starting, Python's imports for guardian, is measured separately), then watches
both for a window and prints one table: CPU time in the window (utime + stime of the whole
thread group from /proc/PID/stat) and per hour, VmRSS / RssAnon at the end and the largest
VmRSS seen (sampled every second), and voluntary context switches as a proxy for wakeups.

    .venv/bin/python bench/idle_cost.py [--seconds 60] [--settle 5]
        [--earlyoom-cmd "/usr/bin/earlyoom --dryrun -r 3600"] [--guardian-cmd CMD ARG...]

``--guardian-cmd`` takes the rest of the command line (so it comes last), or one quoted string.
Its default is this venv's ``guardian run --dry-run --policy etc/guardian.toml``, run from the
repository root: --dry-run because a benchmark must not kill anything on the machine it measures
(and earlyoom runs with --dryrun too); idle, a dry run does exactly the same work.
``--guardian-cmd sleep 3600`` tries the mechanics without guardian (sleep costs ~0 CPU).
``--watchdog 10`` runs guardian as its unit does (``WatchdogSec=10s``): with ``WATCHDOG_USEC`` set
and ``NOTIFY_SOCKET`` a socket this script reads, so the wake-ups its pings need are measured too
and the pings in the window are counted.

earlyoom runs with ``-r 3600`` because that is what Debian ships in /etc/default/earlyoom;
without it earlyoom prints a memory report every second and that printing would be measured.

Both daemons are stopped at the end through a pidfd (SIGTERM, then SIGKILL after
``--stop-timeout`` seconds); nothing but the processes this script started is signalled.
The issue's numbers need ``--seconds 60`` or more; less is for a quick try.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

ROOT = Path(__file__).resolve().parent.parent
EARLYOOM = "/usr/bin/earlyoom"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
# a daemon started by this script must not think systemd supervises it
SUPERVISOR_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


@dataclass
class Reading:
    """One look at a process: CPU ticks of its thread group and its memory."""

    at: float
    ticks: int
    sched_ns: Optional[int]
    vm_rss: int
    rss_anon: int
    vm_hwm: int
    threads: int
    voluntary: int
    involuntary: int


def read_process(pid: int) -> Reading:
    at = time.monotonic()
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read().decode()
    # comm may hold spaces and parentheses: the fields start after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15): whole thread group
    status: dict[str, str] = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f.read().decode().splitlines():
            key, _, value = line.partition(":")
            status[key] = value.strip()

    def kib(key: str) -> int:
        value = status.get(key, "0 kB").split()
        return int(value[0]) * 1024 if value else 0

    # per-thread counters: summed over the threads alive now (/proc/PID/status has the main thread's)
    voluntary = involuntary = 0
    sched_ns: Optional[int] = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
                for line in f.read().decode().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except (OSError, ValueError):
            continue  # the thread ended between listdir and open
        if sched_ns is not None:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    sched_ns += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                sched_ns = None  # no CONFIG_SCHED_INFO: the tick figure stands alone
    return Reading(
        at=at,
        ticks=ticks,
        sched_ns=sched_ns,
        vm_rss=kib("VmRSS"),
        rss_anon=kib("RssAnon"),
        vm_hwm=kib("VmHWM"),
        threads=int(status.get("Threads", "0")),
        voluntary=voluntary,
        involuntary=involuntary,
    )


@dataclass
class Daemon:
    name: str
    cmd: list[str]
    proc: Optional[subprocess.Popen[bytes]] = None
    pidfd: int = -1
    log: Optional[IO[bytes]] = None
    started: float = 0.0
    baseline: Optional[Reading] = None
    last: Optional[Reading] = None
    max_rss: int = 0
    exit_note: str = ""
    error: str = ""
    env: dict[str, str] = field(default_factory=dict)  # set for this daemon (the watchdog's)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in SUPERVISOR_ENV}
        env.update(self.env)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this method; stop() closes it
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.error = f"cannot start {shlex.join(self.cmd)}: {exc.strerror}"
            return
        self.started = time.monotonic()
        # our own unreaped child: its pid cannot be reused before this open
        self.pidfd = os.pidfd_open(self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> Optional[Reading]:
        if not self.running or self.proc is None:
            return None
        try:
            reading = read_process(self.proc.pid)
        except (OSError, ValueError):
            return None
        self.last = reading
        return reading

    def note_exit(self) -> None:
        if self.proc is not None and self.proc.poll() is not None and not self.error:
            self.error = f"exited by itself with status {self.proc.returncode}: {self.log_tail()}"

    def log_tail(self, lines: int = 3) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self, grace_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            how = "SIGTERM"
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_exit(self.pidfd, grace_s):
                how = f"SIGKILL ({grace_s:g} s after SIGTERM)"
                try:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            code = self.proc.wait()
            status = f"signal {-code}" if code < 0 else f"status {code}"
            self.exit_note = f"{how} -> {status}"
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.log is not None:
            self.log.close()


def wait_exit(pidfd: int, timeout_s: float) -> bool:
    """A pidfd becomes readable when its process exits."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout_s * 1000)))


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def table(daemons: list[Daemon]) -> list[tuple[str, list[str]]]:
    """Rows of (label, one value per daemon); "-" where a daemon has no window to show."""
    rows: list[tuple[str, list[str]]] = [("pid", [str(d.proc.pid) if d.proc else "-" for d in daemons])]

    def row(label: str, fn: Callable[[Reading, Reading], str]) -> None:
        values = []
        for d in daemons:
            b, e = d.baseline, d.last
            values.append("-" if b is None or e is None or e is b else fn(b, e))
        rows.append((label, values))

    def cpu_s(b: Reading, e: Reading) -> float:
        return (e.ticks - b.ticks) / CLK_TCK

    def sched(b: Reading, e: Reading) -> str:
        if b.sched_ns is None or e.sched_ns is None:
            return "n/a"
        return f"{(e.sched_ns - b.sched_ns) / 1e6:.1f} ms"

    def sched_per_hour(b: Reading, e: Reading) -> str:
        if b.sched_ns is None or e.sched_ns is None:
            return "n/a"
        return f"{(e.sched_ns - b.sched_ns) / 1e9 / (e.at - b.at) * 3600:.2f} s/h"

    row("startup CPU (start .. end of settle)", lambda b, e: f"{b.ticks / CLK_TCK:.2f} s")
    row("window measured", lambda b, e: f"{e.at - b.at:.1f} s")
    row("idle CPU in window (utime+stime)", lambda b, e: f"{cpu_s(b, e):.2f} s")
    row("idle CPU per hour", lambda b, e: f"{cpu_s(b, e) / (e.at - b.at) * 3600:.1f} s/h")
    row("idle CPU, share of one CPU", lambda b, e: f"{cpu_s(b, e) / (e.at - b.at) * 100:.3f} %")
    # utime+stime move in whole ticks (10 ms at CLK_TCK 100): +-0.6 s/h over a 60 s window.
    # The threads' schedstat run time is exact to the ns (but misses threads that ended).
    row("idle CPU in window (schedstat, ns-exact)", sched)
    row("idle CPU per hour (schedstat)", sched_per_hour)
    row("VmRSS at end", lambda b, e: mib(e.vm_rss))
    row("RssAnon at end", lambda b, e: mib(e.rss_anon))
    rows.append(("max VmRSS seen in window (sampled)", [mib(d.max_rss) if d.last else "-" for d in daemons]))
    row("VmHWM (peak RSS since start)", lambda b, e: mib(e.vm_hwm))
    row("threads at end", lambda b, e: str(e.threads))
    row("voluntary ctxt switches in window (~wakeups)", lambda b, e: str(e.voluntary - b.voluntary))
    row("  per second", lambda b, e: f"{(e.voluntary - b.voluntary) / (e.at - b.at):.2f}/s")
    row("involuntary ctxt switches in window", lambda b, e: str(e.involuntary - b.involuntary))
    rows.append(("stopped with", [d.exit_note or "-" for d in daemons]))
    return rows


def print_table(names: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """One column per name (bench/startup.py prints its table with this too)."""
    label_w = max(len(label) for label, _ in rows)
    widths = [max(len(name), *(len(values[i]) for _, values in rows)) for i, name in enumerate(names)]
    print(f"{'':{label_w}}  " + "  ".join(f"{name:>{w}}" for name, w in zip(names, widths)))
    for label, values in rows:
        print(f"{label:{label_w}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths)))


def print_machine() -> None:
    uname = os.uname()
    print(f"date:      {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"kernel:    {uname.sysname} {uname.release} {uname.version} {uname.machine}")
    print(f"CPUs:      {os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable by this process")
    print(f"python:    {platform.python_version()} ({sys.executable}); SC_CLK_TCK={CLK_TCK}")


class NotifySocket:
    """A $NOTIFY_SOCKET for guardian: a thread reads every datagram and keeps when each
    WATCHDOG=1 came."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        self.pings: list[float] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings.append(time.monotonic())

    def in_window(self, start: float, end: float) -> list[float]:
        return [t for t in self.pings if start <= t <= end]

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    venv_guardian = Path(sys.executable).parent / "guardian"  # not resolved: that would leave the venv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after start before the window (default 5)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval (default 1 s)")
    parser.add_argument("--stop-timeout", type=float, default=3.0, help="SIGTERM to SIGKILL (default 3 s)")
    parser.add_argument(
        "--earlyoom-cmd",
        default=f"{EARLYOOM} --dryrun -r 3600",
        help="earlyoom command line, one string (default: %(default)s); empty to leave earlyoom out",
    )
    parser.add_argument(
        "--watchdog",
        type=float,
        default=0.0,
        metavar="S",
        help="run guardian with WatchdogSec=S, as its unit does (10); default 0: no watchdog",
    )
    parser.add_argument(
        "--guardian-cmd",
        nargs=argparse.REMAINDER,
        default=[str(venv_guardian), "run", "--dry-run", "--policy", "etc/guardian.toml"],
        help="guardian command: the rest of the line, or one quoted string "
        "(default: this venv's guardian run --dry-run --policy etc/guardian.toml)",
    )
    args = parser.parse_args(argv)
    if len(args.guardian_cmd) == 1:
        args.guardian_cmd = shlex.split(args.guardian_cmd[0])
    if not args.guardian_cmd:
        parser.error("--guardian-cmd needs a command")
    if args.seconds <= 0 or args.settle < 0 or args.interval <= 0:
        parser.error("--seconds and --interval must be > 0, --settle >= 0")
    return args


def print_results(names: list[str], rows: list[tuple[str, list[str]]], errors: list[tuple[str, str]]) -> int:
    """The table, then what went wrong with each subject that failed; the exit status."""
    print_table(names, rows)
    problems = [(name, error) for name, error in errors if error]
    for name, error in problems:
        print(f"\n{name}: {error}")
    return 1 if problems else 0


def pidfd_missing() -> bool:
    """True (and says so) where os.pidfd_open is missing: the daemons are signalled through it."""
    if hasattr(os, "pidfd_open"):
        return False
    print("needs Linux 5.3+ and Python 3.9+ (os.pidfd_open)", file=sys.stderr)
    return True


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if pidfd_missing():
        return 1

    daemons = [Daemon("guardian", args.guardian_cmd)]
    earlyoom_cmd = shlex.split(args.earlyoom_cmd)
    if earlyoom_cmd:
        if Path(earlyoom_cmd[0]).exists() or "/" not in earlyoom_cmd[0]:
            daemons.append(Daemon("earlyoom", earlyoom_cmd))
        else:
            print(
                f"earlyoom: {earlyoom_cmd[0]} not found (apt-get install earlyoom); measuring guardian alone"
            )

    notify: Optional[NotifySocket] = None
    if args.watchdog > 0:
        notify = NotifySocket(tempfile.mkdtemp(prefix="guardian-idle-"))
        daemons[0].env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(int(args.watchdog * 1e6))}
    print_machine()
    for d in daemons:
        print(f"{d.name + ':':10} {shlex.join(d.cmd)}  (cwd {ROOT})")
    print(f"settle:    {args.settle:g} s after start (startup cost, e.g. imports, is reported apart)")
    print(f"window:    {args.seconds:g} s, sampled every {args.interval:g} s")
    if notify is not None:
        print(f"watchdog:  guardian with WATCHDOG_USEC for {args.watchdog:g} s, NOTIFY_SOCKET {notify.path}")
    if args.seconds < 60:
        print("           (shorter than 60 s: a quick try, not numbers to quote)")
    print()

    start = deadline = 0.0
    try:
        for d in daemons:
            d.start()
        time.sleep(args.settle)
        for d in daemons:
            d.baseline = d.sample()
            if d.baseline is not None:
                d.max_rss = d.baseline.vm_rss
            d.note_exit()
        start = time.monotonic()
        deadline = start + args.seconds
        next_at = start + args.interval
        while True:
            now = time.monotonic()
            if now < min(next_at, deadline):
                time.sleep(min(next_at, deadline) - now)
            for d in daemons:
                reading = d.sample()
                if reading is not None:
                    d.max_rss = max(d.max_rss, reading.vm_rss)
                d.note_exit()
            if time.monotonic() >= deadline or not any(d.running for d in daemons):
                break
            next_at += args.interval
    finally:
        for d in daemons:
            d.stop(args.stop_timeout)
        if notify is not None:
            notify.close()
            os.unlink(notify.path)
            os.rmdir(os.path.dirname(notify.path))

    if notify is not None:
        pings = notify.in_window(start, deadline)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        longest = f", the longest gap {max(gaps):.2f} s" if gaps else ""
        print(f"guardian's watchdog pings in the window: {len(pings)}{longest}\n")
    return print_results([d.name for d in daemons], table(daemons), [(d.name, d.error) for d in daemons])


if __name__ == "__main__":
    sys.exit(main())
