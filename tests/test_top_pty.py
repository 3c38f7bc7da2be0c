"""``guardian top`` on a pseudo-terminal (the ``pty`` module's openpty), as a person would run
it: the redraw in place, lines cut to the terminal's width, keys read without echo, a resize
drawn at once, and the terminal's mode given back however the view ends (its count run out, q,
Ctrl-C).

The child is a session leader with the pty as its controlling terminal, so Ctrl-C written to
the master is a real SIGINT from the line discipline and a new window size a real SIGWINCH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

import pytest
from conftest import fixture_root
from test_top import odd_machine

from guardian.text import cells, human_bytes
from guardian.top import CLEAR_BELOW, CLEAR_LINE, CLEAR_SCREEN, HIDE_CURSOR, HOME, SHOW_CURSOR

FIXTURE = fixture_root("v2-systemd")
# every escape sequence a frame may hold: the view's own, and nothing else
OURS = {HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN, HIDE_CURSOR, SHOW_CURSOR}
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[^\[]")


def set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


# a new session whose controlling terminal is the pty on stdin, then guardian in its place
SESSION = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'guardian.cli', *sys.argv[1:]])"
)
# as a shell runs a job: the session leader stays, guardian runs in a process group of its own
# in the foreground, so that Ctrl-Z stops it (the kernel ignores it in an orphaned group)
JOB = """
import fcntl, os, signal, sys, termios
os.setsid()
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    os.tcsetpgrp(0, os.getpid())
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)
    os.execv(sys.executable, [sys.executable, "-m", "guardian.cli", *sys.argv[1:]])
os.write(2, b"%d\\n" % pid)
while True:
    _, status = os.waitpid(pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        sys.exit(os.waitstatus_to_exitcode(status))
"""


class Pty:
    """A child on a fresh pseudo-terminal, and everything it wrote."""

    def __init__(
        self, args: list[str], columns: int, rows: int, job: bool = False, term: str = "xterm"
    ) -> None:
        self.master, self.slave = os.openpty()
        set_size(self.slave, columns, rows)
        self.before = termios.tcgetattr(self.slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = term
        self.child = subprocess.Popen(
            [sys.executable, "-c", JOB if job else SESSION, "top", *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.out = b""
        self.job: Optional[int] = None  # a pidfd of guardian, when it runs as a job under JOB

    def job_pid(self) -> int:
        assert self.child.stderr is not None
        pid = int(self.child.stderr.readline())
        self.job = os.pidfd_open(pid)  # running (it is not reaped before it exits): it is ours
        return pid

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            self.out += os.read(self.master, 65536)

    def until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out; so far: {self.text()[-2000:]!r}"
            self.read(0.1)

    def text(self) -> str:
        return self.out.decode("utf-8")

    def frames(self) -> list[list[str]]:
        """Each drawn frame as the lines it shows (not the clear when the terminal is taken)."""
        out = []
        for drawn in self.text().split(HOME)[1:]:
            if drawn.startswith(CLEAR_SCREEN):
                continue
            plain = (
                drawn.split(SHOW_CURSOR)[0].replace(CLEAR_LINE, "").replace(CLEAR_BELOW, "").replace("\r", "")
            )
            out.append(plain.split("\n"))
        return out

    def wait(self) -> int:
        self.until(lambda: self.child.poll() is not None)
        self.read(0.2)  # what is left in the master
        return self.child.returncode

    def close(self) -> None:
        if self.job is not None:  # our grandchild, by pidfd: gone or not, never another process
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.job, signal.SIGKILL)
            os.close(self.job)
        if self.child.poll() is None:
            self.child.kill()  # ours, by its pid
            self.child.wait()
        assert self.child.stderr is not None
        self.child.stderr.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_run() -> Iterator[Callable[..., Pty]]:
    started: list[Pty] = []

    def start(*args: str, columns: int = 80, rows: int = 40, job: bool = False, term: str = "xterm") -> Pty:
        run = Pty(list(args), columns, rows, job, term)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def lflag(fd: int) -> int:
    return int(termios.tcgetattr(fd)[3])


def check_frame(lines: list[str], columns: int, rows: int) -> None:
    assert 0 < len(lines) <= rows
    for line in lines:
        assert sum(map(cells, line)) <= columns, line
        assert ESCAPE.search(line) is None, line


def test_count_two_redraws_in_place_and_gives_the_terminal_back(pty_run: Callable[..., Pty]) -> None:
    run = pty_run("--root", str(FIXTURE), "--count", "2", "--interval", "0.2", columns=60, rows=40)
    assert run.wait() == 0, run.child.stderr.read() if run.child.stderr else None
    text = run.text()
    assert text.startswith(HIDE_CURSOR + HOME + CLEAR_SCREEN)
    assert text.replace("\r", "").endswith(SHOW_CURSOR + "\n")  # the tty adds a CR to each LF
    assert set(ESCAPE.findall(text)) <= OURS  # plain ANSI, nothing else
    frames = run.frames()
    assert len(frames) == 2
    for lines in frames:
        check_frame(lines, 60, 40)
        assert lines[0].startswith("guardian top  ")
        assert "memory     total 15.6 GiB, available 6.1 GiB (39.3%)" in lines
        assert any(line.startswith("  1. pid 3190 (Web Content)") for line in lines)
        assert "\u2026" in "".join(lines)  # something was too wide and was cut
    assert any(line.startswith("stall      some 0.00%") for line in frames[1])
    assert termios.tcgetattr(run.slave) == run.before  # the terminal's mode, as it was


@pytest.mark.parametrize("key", [b"q", b"\x03", b""], ids=["q", "ctrl-c", "sigterm"])
def test_keys_are_not_echoed_and_quitting_restores_the_terminal(
    pty_run: Callable[..., Pty], key: bytes
) -> None:
    run = pty_run("--root", str(FIXTURE), "--interval", "0.3")
    run.until(lambda: len(run.frames()) >= 1 and "first to go" in run.text())
    mode = lflag(run.slave)
    assert not mode & termios.ECHO and not mode & termios.ICANON  # keys do not scribble on the view
    assert mode & termios.ISIG  # Ctrl-C still interrupts
    run.until(lambda: len(run.frames()) >= 2)  # it keeps refreshing on its own
    if key:
        os.write(run.master, key)
    else:
        run.child.send_signal(signal.SIGTERM)  # our child, by its pid
    assert run.wait() == 0
    assert run.text().replace("\r", "").endswith(SHOW_CURSOR + "\n")
    assert termios.tcgetattr(run.slave) == run.before
    assert run.child.stderr is not None and run.child.stderr.read() == b""  # no traceback


def test_a_resize_is_drawn_at_once_at_the_new_size(pty_run: Callable[..., Pty]) -> None:
    run = pty_run("--root", str(fixture_root("k8s-node")), "--interval", "30", columns=120, rows=50)
    run.until(lambda: len(run.frames()) == 1 and "first to go" in run.text())
    check_frame(run.frames()[0], 120, 50)
    wide = max(sum(map(cells, line)) for line in run.frames()[0])
    assert wide > 60
    set_size(run.slave, 60, 16)  # the kernel sends the child SIGWINCH
    run.until(lambda: len(run.frames()) == 2 and run.text().endswith(CLEAR_BELOW), timeout=20)
    check_frame(run.frames()[1], 60, 16)  # long before the next refresh was due
    os.write(run.master, b"q")
    assert run.wait() == 0
    assert termios.tcgetattr(run.slave) == run.before


def test_a_dumb_terminal_gets_plain_lines(pty_run: Callable[..., Pty]) -> None:
    run = pty_run("--root", str(FIXTURE), "--count", "2", "--interval", "0.2", term="dumb")
    assert run.wait() == 0
    text = run.text()
    assert "\x1b" not in text
    assert text.count("guardian top  ") == 2 and "memory     total 15.6 GiB" in text
    assert termios.tcgetattr(run.slave) == run.before


def mem_total_bytes() -> Optional[int]:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemTotal:\s+(\d+) kB$", text, flags=re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


@pytest.mark.live
def test_on_this_machine(pty_run: Callable[..., Pty]) -> None:
    total = mem_total_bytes()
    if total is None:
        pytest.skip("no /proc/meminfo here")
    run = pty_run("--count", "2", "--interval", "0.2", columns=100, rows=50)
    assert run.wait() == 0, run.child.stderr.read() if run.child.stderr else None
    frames = run.frames()
    assert len(frames) == 2
    for lines in frames:
        check_frame(lines, 100, 50)
        assert any(line.startswith(f"memory     total {human_bytes(total)}, available ") for line in lines)
        assert any(line.startswith("first to go (process, machine-wide; policy ") for line in lines)
    assert termios.tcgetattr(run.slave) == run.before


def test_hostile_names_reach_the_terminal_as_text(pty_run: Callable[..., Pty], tmp_path: Path) -> None:
    root = odd_machine(tmp_path / "root")
    run = pty_run("--root", str(root.root), "--count", "2", "--interval", "0.2", columns=70, rows=40)
    assert run.wait() == 0
    text = run.text()
    assert set(ESCAPE.findall(text)) <= OURS  # the names' escape sequences were not sent as such
    assert not any(c in text for c in "\x07\x0c\x9b\u2028")
    frames = run.frames()
    assert len(frames) == 2
    for lines in frames:
        check_frame(lines, 70, 40)
        assert any(line.startswith("  1. pid 500 (\\x1b]0;pwn\\x07\\xff\\n)") for line in lines)
    assert termios.tcgetattr(run.slave) == run.before


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def test_ctrl_z_gives_the_terminal_back_while_stopped(pty_run: Callable[..., Pty]) -> None:
    run = pty_run("--root", str(FIXTURE), "--interval", "0.3", job=True)
    pid = run.job_pid()  # guardian, in its own process group
    run.until(lambda: "first to go" in run.text())
    os.write(run.master, b"\x1a")  # Ctrl-Z: SIGTSTP from the line discipline
    run.until(lambda: stopped(pid))
    assert termios.tcgetattr(run.slave) == run.before  # a shell gets its terminal as it was
    run.read(0.2)
    assert run.text().replace("\r", "").endswith(SHOW_CURSOR + "\n")
    drawn = len(run.frames())
    assert run.job is not None
    signal.pidfd_send_signal(run.job, signal.SIGCONT)  # `fg`, without the shell
    run.until(lambda: not lflag(run.slave) & termios.ECHO and len(run.frames()) > drawn)
    assert run.text().count(HIDE_CURSOR + HOME + CLEAR_SCREEN) == 2  # taken again, drawn whole
    os.write(run.master, b"q")
    assert run.wait() == 0
    assert termios.tcgetattr(run.slave) == run.before
