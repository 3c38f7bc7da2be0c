"""Live: ``guardian run``'s Service on this host with [metrics] on an ephemeral loopback port,
scraped over HTTP with urllib while the loop runs: the counters move, a reload moves the
endpoint (or, when the new port is taken, is rejected and the endpoint stays), and a kill in a
cgroup of the test's own is counted."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.arena import Arena, hog_program, skip_without_arena
from support.sinks import MemorySink

from guardian.clock import Clock
from guardian.daemon.engine import Engine
from guardian.daemon.service import Service
from guardian.host import Host
from guardian.loaded import load
from guardian.notify import Notifier
from guardian.report import MSG_KILL, MSG_POLICY_REJECTED, Reporter

pytestmark = pytest.mark.live

MiB = 1 << 20


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items())
    )


class Running:
    """A Service run in this thread, driven from another one by ``drive(service)``."""

    def __init__(self, host: Host, policy: Path, sink: MemorySink, dry_run: bool = True) -> None:
        engine = Engine(host, load(host, str(policy), dry_run=dry_run), Reporter(sink), Clock())
        self.service = Service(engine, str(policy), dry_run, Notifier({}))
        self.failure: list[BaseException] = []

    def run(self, drive: Callable[[Service], None]) -> None:
        service = self.service

        def driver() -> None:
            try:
                drive(service)
            except BaseException as exc:  # handed to the test's thread
                self.failure.append(exc)
            finally:
                service.stop = True
                os.write(service._pipe_w, b"x")

        thread = threading.Thread(target=driver)
        thread.start()
        assert service.run() == 0
        thread.join(120)
        if self.failure:
            raise self.failure[0]


def wait_for(what: Callable[[], Optional[str]], seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def endpoint_url(service: Service, other_than: str = "") -> Optional[str]:
    export = service.export
    if export is None or export.endpoint is None or export.endpoint.url == other_than:
        return None
    return export.endpoint.url


def test_counters_move_and_a_reload_moves_the_endpoint(live_host: Host, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    body = "[plugins]\nentry_points = false\n[poll]\nmax_interval_s = 0.05\n[metrics]\n"
    policy.write_text(body + 'listen = "127.0.0.1:0"\n')
    sink = MemorySink()
    running = Running(live_host, policy, sink)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    seen: dict[str, object] = {}

    def drive(service: Service) -> None:
        url = wait_for(lambda: endpoint_url(service))
        first = scrape(url)
        time.sleep(0.5)
        second = scrape(url)
        seen["looks"] = (total(first, "guardian_looks_total"), total(second, "guardian_looks_total"))
        seen["wakeups"] = (total(first, "guardian_wakeups_total"), total(second, "guardian_wakeups_total"))
        seen["memtotal"] = total(second, "guardian_memory_total_bytes")
        seen["rss"] = total(second, "process_resident_memory_bytes")
        seen["cpu"] = total(second, "process_cpu_seconds_total")
        # a reload to a port that is taken: rejected, the endpoint stays where it was
        policy.write_text(body + f'listen = "127.0.0.1:{taken}"\n')
        service.reload = True
        os.write(service._pipe_w, b"r")
        wait_for(lambda: "yes" if any(e["MESSAGE_ID"] == MSG_POLICY_REJECTED for e in sink.events) else None)
        seen["kept"] = endpoint_url(service)
        seen["after_rejected"] = total(scrape(url), "guardian_policy_loads_total", result="rejected")
        # a reload to another free port: served there, and no longer at the old one
        policy.write_text(body + 'listen = "127.0.0.1:0"\n')
        service.reload = True
        os.write(service._pipe_w, b"r")
        moved = wait_for(lambda: endpoint_url(service, other_than=url))
        seen["moved"] = total(scrape(moved), "guardian_policy_loads_total", result="loaded")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                scrape(url)
            except OSError:  # refused, or reset by the server as it closes
                seen["old_closed"] = True
                break
            time.sleep(0.1)

    try:
        running.run(drive)
    finally:
        holder.close()
    looks, wakeups = seen["looks"], seen["wakeups"]
    assert isinstance(looks, tuple) and looks[1] > looks[0] > 0, looks
    assert isinstance(wakeups, tuple) and wakeups[1] > wakeups[0], wakeups
    with open(live_host.meminfo_path()) as f:
        memtotal = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert seen["memtotal"] == memtotal
    assert isinstance(seen["rss"], float) and seen["rss"] > 10 * MiB
    assert isinstance(seen["cpu"], float) and seen["cpu"] > 0
    assert seen["kept"] is not None and seen["after_rejected"] == 1
    rejected = [e for e in sink.events if e["MESSAGE_ID"] == MSG_POLICY_REJECTED]
    assert "metrics.listen: cannot listen on 127.0.0.1:" in rejected[0]["GUARDIAN_POLICY_ERROR"]
    assert seen["moved"] == 1 and seen.get("old_closed") is True
    assert running.service.export is not None and running.service.export.endpoint is None  # closed at stop


def test_a_kill_is_counted(live_host: Host, tmp_path: Path) -> None:
    skip_without_arena(live_host)
    limit = 256 * MiB
    arena = Arena(live_host, limit_bytes=limit, prefix="guardian-test")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[plugins]\nentry_points = false\n[machine]\nenabled = false\n[[cgroup]]\nmatch = "{arena.name.strip("/")}"\n'
        'min_headroom = { term = "64M", kill = "32M" }\n[scorers]\nkernel_badness = 1.0\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
    )
    sink = MemorySink()
    running = Running(live_host, policy, sink, dry_run=False)
    seen: dict[str, float] = {}

    def drive(service: Service) -> None:
        url = wait_for(lambda: endpoint_url(service))
        before = scrape(url)
        seen["watched"] = total(before, "guardian_cgroup_memory_max_bytes", cgroup=arena.name)
        hog = arena.spawn(hog_program(100, arena.usage_file, limit - 64 * MiB))
        assert hog.stdout is not None and hog.stdout.readline() == b"ready\n"
        hog.wait(60)
        wait_for(lambda: "yes" if any(e["MESSAGE_ID"] == MSG_KILL for e in sink.events) else None)
        after = scrape(url)
        seen["kills"] = total(after, "guardian_kills_total", rule="cgroup[0]")
        seen["triggers"] = total(after, "guardian_triggers_total", rule="cgroup[0]", condition="headroom")
        seen["latency"] = total(after, "guardian_decision_seconds_count")

    try:
        running.run(drive)
    finally:
        arena.cleanup()
    assert seen["watched"] == limit
    assert seen["kills"] == 1 and seen["triggers"] >= 1 and seen["latency"] == 1
