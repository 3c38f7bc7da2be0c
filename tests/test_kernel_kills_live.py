"""Live: a real kernel memcg OOM kill, inside a confined arena cgroup the test makes (256 MiB,
tests/support/arena.py), reported by the daemon's loop (Service, in-process) once, with the
victim's pid, comm and memory cgroup, although the group is watched and its oom_kill counter
counts the same kill."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from support.arena import Arena, hog_program
from support.bounds import hard_timeout
from support.sinks import MemorySink

from guardian.clock import Clock
from guardian.daemon.engine import OOM_COUNT_S, Engine
from guardian.daemon.service import Service
from guardian.host import Host
from guardian.kernel_kills import HOLD_US, SeenKill
from guardian.loaded import load
from guardian.notify import Notifier
from guardian.report import MSG_KERNEL_OOM_KILL, Reporter

pytestmark = pytest.mark.live

MiB = 1 << 20


def test_the_daemon_reports_a_real_kernel_oom_kill_once(live_host: Host, tmp_path: Path) -> None:
    layout = live_host.cgroup_layout()
    if os.geteuid() != 0 or layout.memory_controller is None:
        pytest.skip("needs root and a memory controller")
    if not os.access(live_host.kmsg_path(), os.R_OK):
        pytest.skip(f"{live_host.kmsg_path()} is not readable here")
    arena = Arena(live_host, limit_bytes=256 * MiB, prefix="guardian-test")
    # the arena is watched, by a condition that cannot act first (an anonymous hog shows little
    # memory pressure before its OOM): the kernel kills, guardian's counter look sees it too
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[machine]\nenabled = false\n[[cgroup]]\nmatch = "{arena.name.strip("/")}"\n'
        'psi = { kind = "full", stall_pct = 99, duration_s = 60 }\n'
    )
    sink = MemorySink()
    engine = Engine(live_host, load(live_host, str(policy)), Reporter(sink), Clock())
    service = Service(engine, str(policy), False, Notifier({}))
    seen: list[SeenKill] = []
    reported = threading.Event()
    hog_pid: list[int] = []
    hog_comm: list[str] = []

    def heard(kill: SeenKill) -> None:
        seen.append(kill)
        if kill.kill is not None and hog_pid and kill.kill.pid == hog_pid[0]:
            reported.set()

    engine.kernel_kill_listeners.append(heard)
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            deadline = time.monotonic() + 20
            while engine._oom_counted_us is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the loop follows the log, and has read the counters once
            assert service.waiter.kmsg_fd is not None, "the loop never followed the kernel log"
            hog = arena.spawn(hog_program(rate_mb_s=400))  # past the 256 MiB limit in < 1 s
            hog_pid.append(hog.pid)
            assert hog.stdout is not None and hog.stdout.readline() == b"ready\n"
            with open(live_host.pid_path(hog.pid, "comm"), "rb") as f:
                hog_comm.append(os.fsdecode(f.read().rstrip(b"\n")))
            assert hog.wait(timeout=30) == -9
            assert reported.wait(30), "no kernel OOM kill reported within 30 s"
        except BaseException as exc:
            failure.append(exc)
        finally:
            service.stop = True
            os.write(service._pipe_w, b"x")

    driver = threading.Thread(target=drive)
    try:
        with hard_timeout(90):
            driver.start()
            assert service.run() == 0
            driver.join(timeout=60)
        assert not failure, failure
        (event,) = [
            e
            for e in sink.events
            if e.get("MESSAGE_ID") == MSG_KERNEL_OOM_KILL and e.get("GUARDIAN_VICTIM_PID") == str(hog_pid[0])
        ]
        assert event["GUARDIAN_SOURCE"] == "kmsg"
        assert event["GUARDIAN_VICTIM_CGROUP"] == arena.name
        assert event["GUARDIAN_SCOPE"] == arena.name
        assert event["GUARDIAN_OOM_CONSTRAINT"] == "CONSTRAINT_MEMCG"
        assert event["GUARDIAN_RULE"] == "cgroup[0]"
        assert int(event["GUARDIAN_VICTIM_ANON_RSS_BYTES"]) > 128 * MiB
        assert event["GUARDIAN_VICTIM_COMM"] == hog_comm[0]
        assert arena.oom_kills() == 1
        # the kill is in the arena's oom_kill counter too: a counter look after the hold finds
        # it explained by the log's report (one kernel kill, one report)
        engine.tick(engine.clock.monotonic_us() + int(OOM_COUNT_S * 1e6) + HOLD_US)
        assert [k.source for k in seen if k.cgroup == arena.name] == ["kmsg"]
        assert engine.kernel_kills == len(seen)
    finally:
        arena.cleanup()
