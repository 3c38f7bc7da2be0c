"""What starting costs: CPU and wall time from exec to READY=1, and RSS once started.

Starts each command as a child with ``NOTIFY_SOCKET`` pointing at a unix datagram socket this
script owns, and at the moment ``READY=1`` arrives reads the child's CPU time: utime + stime of
the whole thread group from /proc/PID/stat (whole clock ticks) and the threads' schedstat run
time (exact to the nanosecond). ``--rss-after`` seconds later (default 0.3) it reads VmRSS,
RssAnon, VmHWM and VmLck from /proc/PID/status, then stops the child. Each subject runs
``--runs`` times (default 10), the subjects taking turns; the table gives the median and the
largest of each figure.

    .venv/bin/python bench/startup.py [--runs 10] [--guardian PATH] [--rss-after 0.3] [--earlyoom-at 0.5]
        [--earlyoom-cmd "/usr/bin/earlyoom --dryrun -r 0 -m 1 -s 1"] [--only NAME ...]

The subjects:

* ``guardian``: this venv's ``guardian run --dry-run --policy etc/guardian.toml`` from the
  repository root, on this machine (the shipped policy: entry-point plugins on). --dry-run,
  because a benchmark must not kill anything on the machine it measures. ``--guardian`` starts
  another installed copy instead (``python -m venv DIR && DIR/bin/pip install .`` is what
  scripts/install.sh does, without the example plugin and the editable install of .venv).
* ``guardian, no entry points``: the same with a copy of the policy that says
  ``[plugins] entry_points = false`` (no importlib.metadata at start).
* ``guardian, no mlockall``: the shipped policy again, with CAP_IPC_LOCK dropped from the
  child's capability bounding set and RLIMIT_MEMLOCK 0, so guardian's mlockall fails (it warns
  and runs on): the RSS that locking adds is the difference from ``guardian``. Root only.
* ``python``: the same interpreter (the ``python`` beside ``--guardian``), with the same
  site-packages (so the same ``site`` work), sending READY=1 itself as soon as it runs
  (``import os, socket``): the floor an interpreter sets before any of guardian is imported.
* ``python + dependencies``: the same, having imported first what a run needs from outside
  guardian and the standard library's basics: pluggy, tomllib, systemd-python's journald
  ``sendv`` and the RE2 binding. The floor of any daemon built on them.
* ``earlyoom``: Debian's earlyoom, where installed, with --dryrun and thresholds (1 % of
  memory and swap) far below anything this machine reaches, so it never acts. earlyoom has no
  READY=1: its CPU and RSS are read ``--earlyoom-at`` seconds after exec (default 0.5), long
  after its start-up (it prints its thresholds, checks /proc once and locks its memory in a
  few milliseconds); its wall column is that delay, not a start-up time.

Bytecode: Python compiles a module whose .pyc is missing each time it is imported, which costs
more than importing it. An installed package has its .pyc files (pip writes them); a
checkout run with PYTHONDONTWRITEBYTECODE=1 has none. So this script drops
PYTHONDONTWRITEBYTECODE from the children's environment and runs each subject once, unmeasured,
before the measured runs: the .pyc files are then there (``__pycache__`` is ignored by git).

Every child is stopped through a pidfd (SIGTERM, then SIGKILL after ``--stop-timeout``
seconds); nothing but the processes this script started is signalled.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

from idle_cost import pidfd_missing, print_machine, print_results  # bench/ is this script's sys.path[0]

ROOT = Path(__file__).resolve().parent.parent
EARLYOOM = "/usr/bin/earlyoom"
POLICY = ROOT / "etc" / "guardian.toml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
# a child started here must not think systemd supervises it: NOTIFY_SOCKET is set to ours
SUPERVISOR_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
PR_CAPBSET_DROP = 24  # include/uapi/linux/prctl.h
CAP_IPC_LOCK = 14  # include/uapi/linux/capability.h
# The python subject: READY=1 the way guardian/notify.py sends it, then wait to be stopped.
BARE_PYTHON = (
    "import os, socket; "
    "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); "
    "import signal; signal.pause()"
)
# The python subject again, having first imported what a run imports from outside guardian and
# the standard library's basics: pluggy (the scorer plugins), tomllib (the policy), journald's
# sendv (systemd-python's C part) and RE2 (the policy's patterns, whichever binding this copy
# has). No daemon written against these can start smaller than this.
DEPENDENCIES = (
    "import pluggy, tomllib; from systemd._journal import sendv\n"
    "try:\n    from guardian import _re2\nexcept ImportError:\n    import re2\n"
)


@dataclass
class Reading:
    """One run: CPU and wall time at the ready point, memory a moment later."""

    cpu_ticks_s: float
    cpu_sched_s: Optional[float]
    wall_s: float
    vm_rss: int
    rss_anon: int
    vm_hwm: int
    vm_lck: int
    threads: int


def cpu_now(pid: int) -> tuple[float, Optional[float]]:
    """utime + stime of the thread group (ticks, in seconds), and the sum of its threads'
    schedstat run times (None without CONFIG_SCHED_INFO, or when a thread was missed)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read().decode()
    # comm may hold spaces and parentheses: the fields start after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    sched_ns = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                sched_ns += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return ticks, None
    return ticks, sched_ns / 1e9


def status_of(pid: int) -> dict[str, str]:
    status: dict[str, str] = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f.read().decode().splitlines():
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return status


def kib(status: dict[str, str], key: str) -> int:
    value = status.get(key, "0 kB").split()
    return int(value[0]) * 1024 if value else 0


def without_mlock() -> None:
    """In the child, before exec: no CAP_IPC_LOCK after exec and no lockable memory, so
    mlockall fails with EPERM whatever the uid."""
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK)")


@dataclass
class Subject:
    name: str
    cmd: list[str]
    ready: str  # "notify": READY=1 on NOTIFY_SOCKET; else seconds after exec, as text
    preexec: Optional[Callable[[], None]] = None
    note: str = ""
    readings: list[Reading] = field(default_factory=list)
    error: str = ""

    def run_once(
        self, sock_path: str, sock: socket.socket, rss_after_s: float, timeout_s: float, stop_s: float
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k not in SUPERVISOR_ENV}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module docstring: "Bytecode"
        env["NOTIFY_SOCKET"] = sock_path
        drain(sock)
        with tempfile.TemporaryFile() as log:
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.cmd,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=self.preexec,  # noqa: PLW1509 - this script runs no threads
                )
            except OSError as exc:
                self.error = f"cannot start {shlex.join(self.cmd)}: {exc.strerror}"
                return
            # our own unreaped child: its pid cannot be reused before this open
            pidfd = os.pidfd_open(proc.pid)
            try:
                reading = self.measure(proc, pidfd, sock, started, rss_after_s, timeout_s)
                if reading is None:
                    self.error = self.error or f"no READY=1 within {timeout_s:g} s: {tail(log)}"
                else:
                    self.readings.append(reading)
            finally:
                stop(proc, pidfd, stop_s)
                os.close(pidfd)

    def measure(
        self,
        proc: subprocess.Popen[bytes],
        pidfd: int,
        sock: socket.socket,
        started: float,
        rss_after_s: float,
        timeout_s: float,
    ) -> Optional[Reading]:
        if self.ready == "notify":
            if not wait_ready(sock, pidfd, started + timeout_s):
                if proc.poll() is not None:
                    self.error = f"exited with status {proc.returncode} before READY=1"
                return None
        else:
            time.sleep(max(0.0, started + float(self.ready) - time.monotonic()))
        wall = time.monotonic() - started
        try:
            ticks, sched = cpu_now(proc.pid)
            time.sleep(rss_after_s)
            status = status_of(proc.pid)
        except (OSError, ValueError) as exc:
            self.error = f"could not read /proc/{proc.pid}: {exc}"
            return None
        return Reading(
            cpu_ticks_s=ticks,
            cpu_sched_s=sched,
            wall_s=wall,
            vm_rss=kib(status, "VmRSS"),
            rss_anon=kib(status, "RssAnon"),
            vm_hwm=kib(status, "VmHWM"),
            vm_lck=kib(status, "VmLck"),
            threads=int(status.get("Threads", "0")),
        )


def drain(sock: socket.socket) -> None:
    """Drop datagrams a previous child left (STOPPING=1 and the like)."""
    while True:
        try:
            sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return


def wait_ready(sock: socket.socket, pidfd: int, deadline: float) -> bool:
    """True once a datagram holds the line READY=1; False when the child exits or time is up."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return False
        for fd, _ in poller.poll(left_ms):
            if fd == pidfd:
                return False
            message = sock.recv(4096)
            if b"READY=1" in message.split(b"\n"):
                return True


def stop(proc: subprocess.Popen[bytes], pidfd: int, grace_s: float) -> None:
    if proc.poll() is None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            pass
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(int(grace_s * 1000)):
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()


def tail(log: IO[bytes], lines: int = 3) -> str:
    log.seek(0)
    text = log.read().decode(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(no output)"


def no_entry_points_policy(directory: str) -> str:
    """A copy of the shipped policy with ``[plugins] entry_points = false``."""
    text = POLICY.read_text()
    changed = text.replace("\nentry_points = true\n", "\nentry_points = false\n")
    if changed == text:
        raise SystemExit(f"{POLICY}: no 'entry_points = true' line to turn off")
    path = os.path.join(directory, "no-entry-points.toml")
    with open(path, "w") as f:
        f.write(changed)
    return path


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def table(subjects: list[Subject]) -> list[tuple[str, list[str]]]:
    """Rows of (label, one value per subject): median and largest of each figure."""
    rows: list[tuple[str, list[str]]] = [
        ("ready point", [s.ready if s.ready == "notify" else f"{s.ready} s after exec" for s in subjects]),
        ("runs", [str(len(s.readings)) for s in subjects]),
    ]

    def row(label: str, get: Callable[[Reading], Optional[float]], show: Callable[[float], str]) -> None:
        values = []
        for s in subjects:
            got = [v for v in (get(r) for r in s.readings) if v is not None]
            values.append(f"{show(statistics.median(got))} / {show(max(got))}" if got else "-")
        rows.append((label, values))

    row("CPU to ready (schedstat), median / max", lambda r: r.cpu_sched_s, ms)
    row("CPU to ready (utime+stime), median / max", lambda r: r.cpu_ticks_s, ms)
    row("wall to ready, median / max", lambda r: r.wall_s, ms)
    row("VmRSS after, median / max", lambda r: r.vm_rss, mib)
    row("RssAnon after, median / max", lambda r: r.rss_anon, mib)
    row("VmHWM after, median / max", lambda r: r.vm_hwm, mib)
    row("VmLck (locked mappings), median / max", lambda r: r.vm_lck, mib)
    row("threads, median / max", lambda r: r.threads, lambda n: f"{n:g}")
    return rows


def subjects_for(args: argparse.Namespace, scratch: str) -> list[Subject]:
    guardian = [args.guardian, "run", "--dry-run", "--policy"]
    subjects = [
        Subject("guardian", [*guardian, "etc/guardian.toml"], "notify"),
        Subject("guardian, no entry points", [*guardian, no_entry_points_policy(scratch)], "notify"),
    ]
    if os.geteuid() == 0:
        subjects.append(
            Subject(
                "guardian, no mlockall", [*guardian, "etc/guardian.toml"], "notify", preexec=without_mlock
            )
        )
    else:
        print("not root: guardian's mlockall fails anyway (no CAP_IPC_LOCK); no 'no mlockall' subject")
    python = str(Path(args.guardian).parent / "python")  # the interpreter of guardian's venv
    subjects.append(Subject("python", [python, "-c", BARE_PYTHON], "notify"))
    subjects.append(Subject("python + dependencies", [python, "-c", DEPENDENCIES + BARE_PYTHON], "notify"))
    earlyoom = shlex.split(args.earlyoom_cmd)
    if earlyoom:
        if Path(earlyoom[0]).exists() or "/" not in earlyoom[0]:
            subjects.append(Subject("earlyoom", earlyoom, f"{args.earlyoom_at:g}"))
        else:
            print(f"earlyoom: {earlyoom[0]} not found (apt-get install earlyoom); measuring without it")
    if args.only:
        subjects = [s for s in subjects if s.name in args.only]
    return subjects


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    venv_guardian = Path(sys.executable).parent / "guardian"  # not resolved: that would leave the venv
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--guardian",
        default=str(venv_guardian),
        help="the guardian command to start, in a venv whose python is the bare subject "
        "(default: this venv's, %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=10, help="measured runs per subject (default 10)")
    parser.add_argument(
        "--rss-after", type=float, default=0.3, help="seconds from READY=1 to the RSS reading (default 0.3)"
    )
    parser.add_argument(
        "--earlyoom-at", type=float, default=0.5, help="seconds from exec to earlyoom's reading (default 0.5)"
    )
    parser.add_argument(
        "--earlyoom-cmd",
        default=f"{EARLYOOM} --dryrun -r 0 -m 1 -s 1",
        help="earlyoom command line, one string (default: %(default)s); empty to leave earlyoom out",
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="longest wait for READY=1 (default 20 s)")
    parser.add_argument("--stop-timeout", type=float, default=3.0, help="SIGTERM to SIGKILL (default 3 s)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these subjects")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rss_after < 0 or args.earlyoom_at <= 0:
        parser.error("--runs must be >= 1, --rss-after >= 0, --earlyoom-at > 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if pidfd_missing():
        return 1
    print_machine()
    with tempfile.TemporaryDirectory(prefix="guardian-startup-") as scratch:
        subjects = subjects_for(args, scratch)
        for s in subjects:
            print(f"{s.name + ':':27} {shlex.join(s.cmd)}  (cwd {ROOT})")
        print(f"runs:      {args.runs} per subject, taking turns, after one unmeasured run each")
        print(f"memory:    read {args.rss_after:g} s after the ready point")
        print()
        sock_path = os.path.join(scratch, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.bind(sock_path)
            for s in subjects:  # the unmeasured run: writes the .pyc files
                s.run_once(sock_path, sock, 0.0, args.timeout, args.stop_timeout)
                s.readings.clear()
            for _ in range(args.runs):
                for s in subjects:
                    if not s.error:
                        s.run_once(sock_path, sock, args.rss_after, args.timeout, args.stop_timeout)
    return print_results([s.name for s in subjects], table(subjects), [(s.name, s.error) for s in subjects])


if __name__ == "__main__":
    sys.exit(main())
