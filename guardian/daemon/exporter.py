"""The [metrics] of the policy: an HTTP endpoint and/or a node_exporter text file, served with
prometheus_client from threads of their own. Imported only when a policy turns metrics on, so
a daemon without them never loads prometheus_client (tests/test_startup.py).

The values are guardian.metrics.Metrics, which the loop fills from what it read anyway; the
collector here turns them into metric families when a scrape (or the text file's writer) asks,
in the asking thread. It reads no file for the loop: the only reads a scrape makes are
prometheus_client's process collector's, of the daemon's own /proc/self (its CPU time, RSS and
open files), in the scrape's thread. Nothing a scrape does can hold up the loop: there is no
lock between them (guardian/metrics.py), the server runs in its own thread, a client gets
SCRAPE_TIMEOUT_S to send its request, and at most MAX_SCRAPES are answered at a time (each
costs a thread; more are closed at once), so a flood of connections costs a few threads, not
the daemon's memory.

Starting and stopping follow the policy: ``Export.prepare`` (any thread: the reload's loader)
binds the new address where it changed, so a port that is taken rejects the reloaded policy
while the running one, and its endpoint, stay; ``Export.apply`` (the loop) starts what was
prepared and stops what is no longer wanted without waiting for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.process_collector import ProcessCollector

from guardian.config import Listen, MetricsSettings
from guardian.metrics import Metrics, Stall
from guardian.report import PRIORITY_ERR, PRIORITY_INFO, PRIORITY_WARNING, Reporter
from guardian.text import shown

MAX_SCRAPES = 4  # requests answered at once; more are closed unanswered
SCRAPE_TIMEOUT_S = 5.0  # a client must send its request within this


class GuardianCollector:
    """Metric families from a Metrics, built when asked (in the asking thread)."""

    def __init__(self, metrics: Metrics, monotonic_us: Callable[[], int]) -> None:
        self.metrics = metrics
        self.monotonic_us = monotonic_us

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        now_us = self.monotonic_us()
        yield from self._machine(m, now_us)
        yield from self._cgroups(m)
        yield from self._counters(m)

    def _machine(self, m: Metrics, now_us: int) -> Iterator[Metric]:
        meminfo, available = m.meminfo, m.available
        mem_avail = GaugeMetricFamily(
            "guardian_memory_available_bytes", "MemAvailable, as guardian last read it"
        )
        swap_free = GaugeMetricFamily("guardian_swap_free_bytes", "SwapFree, as guardian last read it")
        age = GaugeMetricFamily(
            "guardian_memory_read_age_seconds",
            "Seconds since guardian last read MemAvailable (at most a full look's interval)",
        )
        if available is not None:
            at_us, avail, free = available
            mem_avail.add_metric([], avail)
            if free is None and meminfo is not None:  # the fast path reads SwapFree only where it decides
                free = meminfo.swap_free_bytes
            if free is not None:
                swap_free.add_metric([], free)
            age.add_metric([], max(0.0, (now_us - at_us) / 1e6))
        elif meminfo is not None:
            mem_avail.add_metric([], meminfo.available_bytes)
            swap_free.add_metric([], meminfo.swap_free_bytes)
        yield from (mem_avail, swap_free, age)
        total = GaugeMetricFamily("guardian_memory_total_bytes", "MemTotal")
        swap_total = GaugeMetricFamily("guardian_swap_total_bytes", "SwapTotal")
        if meminfo is not None:
            total.add_metric([], meminfo.total_bytes)
            swap_total.add_metric([], meminfo.swap_total_bytes)
        yield from (total, swap_total)

        live = GaugeMetricFamily(
            "guardian_memory_stall_ratio",
            "The machine's live memory stall rate (over the last second, from PSI totals), as last measured",
            labels=["kind"],
        )
        avg10 = GaugeMetricFamily(
            "guardian_memory_stall_avg10_ratio",
            "The kernel's memory avg10 (as a ratio), as last read",
            labels=["kind"],
        )
        stalled = CounterMetricFamily(
            "guardian_memory_stall_seconds",
            "The kernel's total memory stall time, as last read",
            labels=["kind"],
        )
        stall_age = GaugeMetricFamily(
            "guardian_memory_stall_read_age_seconds",
            "Seconds since guardian last read the machine's PSI (not while the kernel's trigger watches)",
        )
        if m.stall is not None:
            _stall_samples(m.stall, [], live, avg10, stalled)
            stall_age.add_metric([], max(0.0, (now_us - m.stall.seen_us) / 1e6))
        yield from (live, avg10, stalled, stall_age)
        flying = GaugeMetricFamily("guardian_kills_in_flight", "Kills sent and not over yet")
        flying.add_metric([], m.kills_in_flight)
        yield flying

    def _cgroups(self, m: Metrics) -> Iterator[Metric]:
        watched = GaugeMetricFamily(
            "guardian_watched_cgroups",
            "Cgroups the policy's rules watch (the first max_cgroups have series of their own)",
        )
        watched.add_metric([], m.watched)
        yield watched
        labels = ["cgroup"]
        current = GaugeMetricFamily(
            "guardian_cgroup_memory_current_bytes", "memory.current of a watched cgroup", labels=labels
        )
        limit = GaugeMetricFamily(
            "guardian_cgroup_memory_max_bytes",
            "memory.max of a watched cgroup (none: no limit)",
            labels=labels,
        )
        headroom = GaugeMetricFamily(
            "guardian_cgroup_memory_headroom_bytes",
            "memory.max - memory.current of a watched cgroup with a limit",
            labels=labels,
        )
        live = GaugeMetricFamily(
            "guardian_cgroup_memory_stall_ratio",
            "A watched cgroup's live memory stall rate, as last measured",
            labels=["cgroup", "kind"],
        )
        avg10 = GaugeMetricFamily(
            "guardian_cgroup_memory_stall_avg10_ratio",
            "A watched cgroup's memory.pressure avg10 (as a ratio), as last read",
            labels=["cgroup", "kind"],
        )
        stalled = CounterMetricFamily(
            "guardian_cgroup_memory_stall_seconds",
            "A watched cgroup's total memory stall time, as last read",
            labels=["cgroup", "kind"],
        )
        for path, seen in m.cgroups.copy().items():
            name = shown(path)  # a cgroup's name is any bytes; a label is UTF-8
            if seen.current_bytes is not None:
                current.add_metric([name], seen.current_bytes)
            if seen.max_bytes is not None:
                limit.add_metric([name], seen.max_bytes)
            if seen.headroom_bytes is not None:
                headroom.add_metric([name], seen.headroom_bytes)
            if seen.stall is not None:
                _stall_samples(seen.stall, [name], live, avg10, stalled)
        yield from (current, limit, headroom, live, avg10, stalled)

    def _counters(self, m: Metrics) -> Iterator[Metric]:
        yield _counter(
            "guardian_looks", "Looks at memory: quick (the idle fast path) and full", ["kind"], m.looks
        )
        yield _counter("guardian_wakeups", "Waits ended, by what ended them", ["source"], m.wakeups)
        yield _counter(
            "guardian_triggers",
            "Conditions crossed (counted when they start to hold, per level)",
            ["rule", "condition", "level"],
            m.triggers,
        )
        yield _counter(
            "guardian_kills",
            "Kills, by action, outcome and rule (dry-run: would have been)",
            ["action", "outcome", "rule"],
            m.kills,
        )
        yield _counter(
            "guardian_triggers_without_kill",
            "Triggers that led to no kill, and why",
            ["rule", "outcome"],
            m.not_done,
        )
        yield _counter(
            "guardian_plugin_failures",
            "Plugin calls that failed (raised, overran, bad answer)",
            ["plugin", "hook"],
            m.plugin_failures,
        )
        yield _counter(
            "guardian_kernel_oom_kills",
            "Processes the kernel's OOM killer killed, by constraint and whether a rule watched the scope",
            ["constraint", "covered"],
            m.kernel_oom_kills,
        )
        yield _counter(
            "guardian_policy_loads", "Policies loaded by a reload, or rejected", ["result"], m.policy_loads
        )
        hist = m.decision_seconds
        counts, total = list(hist.counts), hist.sum
        buckets, running = [], 0
        for bound, count in zip((*(repr(b) for b in hist.bounds), "+Inf"), counts):
            running += count
            buckets.append((bound, running))
        latency = HistogramMetricFamily(
            "guardian_decision_seconds",
            "From the look that saw a trigger to the first signal",
            buckets=buckets,
            sum_value=total,
        )
        yield latency


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.copy().items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _stall_samples(
    stall: Stall,
    labels: list[str],
    live: GaugeMetricFamily,
    avg10: GaugeMetricFamily,
    total: CounterMetricFamily,
) -> None:
    for kind, pct in (("some", stall.some_pct), ("full", stall.full_pct)):
        if pct is not None:
            live.add_metric([*labels, kind], pct / 100)
    if stall.pressure is not None:
        lines = (("some", stall.pressure.some), ("full", stall.pressure.full))
        for kind, line in lines:
            if line is not None:
                avg10.add_metric([*labels, kind], line.avg10_pct / 100)
                total.add_metric([*labels, kind], line.total_us / 1e6)


def make_registry(metrics: Metrics, monotonic_us: Callable[[], int]) -> CollectorRegistry:
    """guardian's metrics and prometheus_client's process collector (the daemon's own CPU time,
    RSS and open files, read from /proc/self when scraped)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardianCollector(metrics, monotonic_us))
    ProcessCollector(registry=registry)
    return registry


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    timeout = 0  # handle_request() is called when a connection is ready: never wait in it

    def __init__(self, address: tuple[str, int], handler: type, family: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed unanswered
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scrape that failed (the client left, timed out): the scraper's to see, not a
        traceback on guardian's stderr, which is its journal."""


class Endpoint:
    """An HTTP server for /metrics, bound when made (OSError: the address cannot be had),
    serving once started. Its thread sleeps in poll() until a client connects or ``stop``
    writes to its pipe: socketserver's serve_forever() would wake every half second for as
    long as guardian runs (bench/idle_cost.py: 132 wake-ups a minute instead of 43)."""

    def __init__(self, listen: Listen, registry: CollectorRegistry) -> None:
        handler = type(
            "GuardianMetricsHandler", (MetricsHandler,), {"registry": registry, "timeout": SCRAPE_TIMEOUT_S}
        )
        family = socket.AF_INET6 if ":" in listen.address else socket.AF_INET
        self.listen = listen
        self.server = _Server((listen.address, listen.port), handler, family)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.thread = threading.Thread(target=self._serve, name="guardian-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{Listen(self.listen.address, self.port)}/metrics"

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.server.fileno(), selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while True:
                    ready = {key.fd for key, _ in selector.select()}
                    if self._wake_r in ready:
                        return
                    self.server.handle_request()
        finally:
            self._close()

    def _close(self) -> None:
        self.server.server_close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def stop(self) -> threading.Thread:
        """Stop serving and close the socket; the caller goes on at once (the serving thread,
        returned, ends by itself)."""
        if self.thread.is_alive():
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        elif self.thread.ident is None:  # never started: prepared, then not applied
            self._close()
        return self.thread


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """The metrics in ``path``, replaced whole: written to ``PATH.PID.tmp`` beside it (a name
    node_exporter does not read), then renamed, as prometheus_client's write_to_textfile does,
    but readable by all (0644): the unit's UMask=0077 would otherwise leave it to root alone, and
    node_exporter runs as its own user."""
    data = generate_latest(registry)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# what an errno means under the shipped unit (packaging/guardian.service), for the operator
UNIT_HINTS = {
    errno.EAFNOSUPPORT: " (the unit allows AF_UNIX sockets only: install packaging/guardian-metrics.conf "
    "as a drop-in, README: Metrics)",
    errno.EROFS: " (the unit's ProtectSystem=strict: name the directory in ReadWritePaths=, as "
    "packaging/guardian-metrics.conf does for node_exporter's)",
}


class TextFile:
    """Writes the metrics to ``path`` every ``interval_s`` (write_textfile: never half a file),
    from its own thread; removes it when stopped, so that a stopped daemon's last numbers are
    not read as a quiet machine's. A write that fails is reported, once until one succeeds
    again."""

    def __init__(self, path: str, interval_s: float, registry: CollectorRegistry, reporter: Reporter) -> None:
        self.path = path
        self.interval_s = interval_s
        self.registry = registry
        self.reporter = reporter
        self.writes = 0
        self._stop = threading.Event()
        self._failed: Optional[str] = None
        self.thread = threading.Thread(target=self._main, name="guardian-metrics-file", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        while not self._stop.is_set():
            self._write()
            self._stop.wait(self.interval_s)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _write(self) -> None:
        try:
            write_textfile(self.path, self.registry)
        except OSError as exc:
            error = _strerror(exc)
            if error != self._failed:
                self._failed = error
                self.reporter.lifecycle(
                    f"metrics: cannot write {shown(self.path)}: {error}",
                    PRIORITY_WARNING,
                    metrics_textfile=self.path,
                )
            return
        self.writes += 1
        if self._failed is not None:
            self._failed = None
            self.reporter.lifecycle(
                f"metrics: writing {shown(self.path)} again", PRIORITY_INFO, metrics_textfile=self.path
            )

    def stop(self) -> threading.Thread:
        self._stop.set()
        return self.thread


@dataclass
class Pending:
    """A [metrics] setting prepared (its new endpoint bound), to be applied or discarded."""

    settings: MetricsSettings
    endpoint: Optional[Endpoint]  # a new one; None: keep the running one (same address) or none


class Export:
    """The daemon's endpoint and text file, following the policy in force."""

    def __init__(self, metrics: Metrics, reporter: Reporter, monotonic_us: Callable[[], int]) -> None:
        self.metrics = metrics
        self.reporter = reporter
        self.registry = make_registry(metrics, monotonic_us)
        self.settings = MetricsSettings()
        self.endpoint: Optional[Endpoint] = None
        self.textfile: Optional[TextFile] = None

    def prepare(self, settings: MetricsSettings) -> Pending:
        """Bind the endpoint ``settings`` name, where it is not the one serving; raises OSError
        when the address cannot be had. Any thread."""
        listen = settings.listen
        serving = None if self.endpoint is None else (self.endpoint.listen.address, self.endpoint.port)
        if listen is None or (listen.address, listen.port) == serving:
            return Pending(settings, None)  # the one serving (port 0 asks for a new free port)
        return Pending(settings, Endpoint(listen, self.registry))

    def discard(self, pending: Pending) -> None:
        if pending.endpoint is not None:
            pending.endpoint.stop()

    def apply(self, pending: Pending) -> list[threading.Thread]:
        """Start what ``pending`` holds and stop what it no longer wants, without waiting (the
        loop calls this); the threads that are stopping are returned (tests join them)."""
        settings, old = pending.settings, self.settings
        stopping = []
        if pending.endpoint is not None or settings.listen is None:
            if self.endpoint is not None:
                stopping.append(self.endpoint.stop())
                self.endpoint = None
            if pending.endpoint is not None:
                self.endpoint = pending.endpoint
                self.endpoint.start()
                self.reporter.lifecycle(
                    f"metrics: serving {self.endpoint.url}", PRIORITY_INFO, metrics_url=self.endpoint.url
                )
        same_file = (settings.textfile, settings.textfile_interval_s) == (
            old.textfile,
            old.textfile_interval_s,
        )
        if self.textfile is not None and not same_file:
            stopping.append(self.textfile.stop())
            self.textfile = None
        if settings.textfile is not None and self.textfile is None:
            self.textfile = TextFile(
                settings.textfile, settings.textfile_interval_s, self.registry, self.reporter
            )
            self.textfile.start()
            self.reporter.lifecycle(
                f"metrics: writing {shown(settings.textfile)} every {settings.textfile_interval_s:g}s",
                PRIORITY_INFO,
                metrics_textfile=settings.textfile,
            )
        self.settings = settings
        self.metrics.configure(settings.enabled, settings.max_cgroups)
        return stopping

    def start_failed(self, settings: MetricsSettings, error: OSError) -> None:
        """At start, the endpoint's address could not be had: guardian guards without it (an
        OOM daemon that does not start leaves the machine unguarded), says so, and a reload
        tries again. The text file, if any, is written all the same."""
        assert settings.listen is not None
        self.reporter.lifecycle(
            f"metrics: cannot listen on {settings.listen}: {_strerror(error)}; guardian runs without "
            "its endpoint (a reload tries again)",
            PRIORITY_ERR,
        )
        self.apply(Pending(dataclasses.replace(settings, listen=None), None))

    def close(self) -> list[threading.Thread]:
        return self.apply(Pending(MetricsSettings(), None))


def _strerror(error: OSError) -> str:
    if not error.errno:
        return str(error)
    return os.strerror(error.errno) + UNIT_HINTS.get(error.errno, "")


def listen_error(settings: MetricsSettings, error: OSError) -> str:
    """Why a reloaded policy's endpoint cannot be had: its address and the OS's reason."""
    return f"cannot listen on {settings.listen}: {_strerror(error)}"
