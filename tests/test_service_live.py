"""Live: nothing on the loop waits for another process.

journald's socket is a blocking datagram socket: when journald stops reading (stalled, itself
short of memory), libsystemd's sd_journal_send() blocks. guardian reports through a sender
thread (report.QueuedSink), so a log that never reads delays neither the watchdog nor a kill.
The stuck log here is a real unix datagram socket that nobody reads, filled before the daemon
starts, so every send to it blocks, as sd_journal_send() would.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from support.arena import Arena, hog_program, skip_without_arena
from support.sinks import MemorySink

from guardian.clock import Clock
from guardian.daemon.engine import Engine
from guardian.daemon.service import Service
from guardian.host import Host
from guardian.loaded import load
from guardian.notify import Notifier
from guardian.report import MSG_KILL, Field, QueuedSink, Reporter

pytestmark = pytest.mark.live

MiB = 1 << 20
LIMIT = 320 * MiB
WATCHDOG_S = 3.0


class StuckLog:
    """A sink writing to a datagram socket whose reader never reads: each send blocks."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.prefilled = 0
        while True:  # fill the reader's queue, so that the next send blocks
            try:
                self.sock.send(b"x" * 512)
            except BlockingIOError:
                break
            self.prefilled += 1
        self.sock.setblocking(True)
        self.blocked = threading.Event()

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        self.blocked.set()
        self.sock.send(json.dumps({"MESSAGE": message, **fields}).encode())


class Tee:
    def __init__(self, *sinks: object) -> None:
        self.sinks = sinks

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        for sink in self.sinks:
            sink.send(message, fields)  # type: ignore[attr-defined]


def test_a_log_that_never_reads_delays_neither_the_watchdog_nor_a_kill(
    live_host: Host, tmp_path: Path
) -> None:
    skip_without_arena(live_host)
    arena = Arena(live_host, limit_bytes=LIMIT, prefix="guardian-test")
    log_reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log_reader.bind(str(tmp_path / "journal.sock"))  # bound, never read
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    stuck = StuckLog(str(tmp_path / "journal.sock"))
    queued = QueuedSink(stuck, capacity=8)
    seen = MemorySink()  # what the log would have received, seen without waiting on it
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[machine]\nenabled = false\n[[cgroup]]\nmatch = "{arena.name.strip("/")}"\n'
        'min_headroom = { term = "64M", kill = "32M" }\n[scorers]\nkernel_badness = 1.0\n'
    )
    engine = Engine(live_host, load(live_host, str(policy)), Reporter(Tee(queued, seen)), Clock())
    notifier = Notifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
    )
    service = Service(engine, str(policy), False, notifier)
    dogs: list[float] = []
    outcome: dict[str, object] = {}

    def drive() -> None:
        try:
            ready = False
            deadline = time.monotonic() + 60
            hog = None
            while time.monotonic() < deadline:
                try:
                    message = notify.recv(4096).decode()
                except OSError:
                    message = ""
                if "WATCHDOG=1" in message.split("\n"):
                    dogs.append(time.monotonic())
                if "READY=1" in message.split("\n") and not ready:
                    ready = True
                    hog = arena.spawn(hog_program(100, arena.usage_file, LIMIT - 64 * MiB))
                    assert hog.stdout is not None and hog.stdout.readline() == b"ready\n"
                if hog is not None and hog.poll() is not None:
                    outcome["code"] = hog.returncode
                    end = time.monotonic() + 2 * WATCHDOG_S  # and the watchdog goes on after the kill
                    while time.monotonic() < end:
                        try:
                            if "WATCHDOG=1" in notify.recv(4096).decode().split("\n"):
                                dogs.append(time.monotonic())
                        except OSError:
                            pass
                    break
        finally:
            service.stop = True
            os.write(service._pipe_w, b"x")

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        assert service.run() == 0
        driver.join(timeout=90)
        assert outcome.get("code") in (143, -9), f"the hog was not stopped by guardian: {outcome}"
        assert arena.oom_kills() == 0, "the kernel's OOM killer acted first"
        assert [e for e in seen.events if e["MESSAGE_ID"] == MSG_KILL], "no kill decision"
        assert stuck.blocked.is_set() and not queued.flush(0.2), "the log was never stuck"
        gaps = [b - a for a, b in zip(dogs, dogs[1:])]
        assert len(dogs) >= 3 and max(gaps) < WATCHDOG_S, f"watchdog pings at {dogs}"
    finally:
        queued.close(0.1)
        for sock in (log_reader, notify, stuck.sock):
            sock.close()
        arena.cleanup()
