"""``guardian run``: the engine in a loop, with signals, sd_notify, the watchdog and reload.

The loop never waits on anything but its own poll(): kills are state in the engine, reports go
through a sender thread (report.QueuedSink), sd_notify datagrams are sent non-blocking, and a
reload loads the new policy and its plugins in a thread of its own (a plugin's import may take
up to its budget, 10 s, and the unit's watchdog is 10 s) while the loop goes on with the old
policy; the new one is swapped in, or rejected, between two passes. So the watchdog is fed from
the loop itself, whatever is in flight: a pass sends ``WATCHDOG=1`` as it goes to sleep when a
quarter of ``WatchdogSec=`` has passed since the last, and sleeps at most half of it (what
sd_watchdog_enabled(3) recommends). The fast path counts that wake-up as its next one, so a calm
loop's looks and pings share their wake-ups; and the ping, sent after the pass's work, does not
wake systemd in the middle of it. A pass that ends without sleeping (a reload, a stop) pings
at its start once three quarters have passed.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Optional, Union

from guardian import __version__
from guardian.config import BUILT_IN, MetricsSettings, PolicyError
from guardian.daemon.engine import Engine
from guardian.daemon.wakeups import Waiter, Wake
from guardian.host import Host
from guardian.kernel import mlockall
from guardian.loaded import Loaded, load, summarize
from guardian.notify import Notifier
from guardian.oomd import oomd_warnings
from guardian.report import PRIORITY_ERR, PRIORITY_WARNING, Reporter
from guardian.sample import Sample

if TYPE_CHECKING:  # imported when a policy turns metrics on, not before (prometheus_client)
    from guardian.daemon.exporter import Export, Pending

MAX_TICK_FAILURES = 10  # full ticks in a row that raise before the daemon gives up
# kernel log wakes in a row that read nothing: a descriptor that polls readable for ever (a read
# that fails the same way each time) would make the loop spin; it is no longer followed then
IDLE_LOG_WAKES = 100


def protect_self(host: Host, adj: int, reporter: Reporter) -> None:
    """mlockall (so guardian itself is never paged out when memory is short) and a low
    oom_score_adj, where permitted; a warning where not."""
    if not host.is_live:
        return
    err = mlockall()
    if err is not None:
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
    def __init__(self, engine: Engine, policy_path: Optional[str], dry_run: bool, notifier: Notifier) -> None:
        self.engine = engine
        self.policy_path = policy_path
        self.dry_run = dry_run
        self.notifier = notifier
        self.stop = False
        self.reload = False
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._last_dog: Optional[float] = None
        self.waiter = Waiter(self._pipe_r)
        self._loader: Optional[threading.Thread] = None  # a reload being loaded
        self._loaded: Optional[Union[Loaded, PolicyError]] = None
        self._reload_again = False  # a SIGHUP came while a reload was being loaded
        self.export: Optional[Export] = None  # the metrics endpoint and text file, once wanted
        self._pending: Optional[Pending] = None  # a reloaded policy's metrics, prepared
        self._idle_log_wakes = 0  # kernel log wakes in a row that read no record

    def _export(self) -> Export:
        """The metrics' exporter, made on first use (any thread: the reload's loader too)."""
        if self.export is None:
            from guardian.daemon.exporter import Export  # noqa: PLC0415 - prometheus_client

            engine = self.engine
            self.export = Export(engine.metrics, engine.reporter, engine.clock.monotonic_us)
        return self.export

    def _prepare_metrics(self, settings: MetricsSettings, source: str) -> Optional[Pending]:
        """A reloaded policy's metrics, prepared in the loader's thread: its endpoint bound
        where it moved (PolicyError when the address cannot be had: the policy is rejected and
        the running one keeps its endpoint)."""
        if not settings.enabled and self.export is None:
            return None
        export = self._export()
        try:
            return export.prepare(settings)
        except OSError as exc:
            from guardian.daemon.exporter import listen_error  # noqa: PLC0415

            raise PolicyError(source, "metrics.listen", listen_error(settings, exc)) from None

    def start_metrics(self) -> None:
        """The start's policy's metrics; an address that cannot be had is reported and guardian
        runs without the endpoint (Export.start_failed)."""
        settings = self.engine.policy.metrics
        if not settings.enabled:
            return
        export = self._export()
        try:
            pending = export.prepare(settings)
        except OSError as exc:
            export.start_failed(settings, exc)
            return
        export.apply(pending)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True

    def _ping_due(self, dog: float, share: float) -> bool:
        """``share`` of ``WatchdogSec=`` (``dog``) has passed since the last ping."""
        return self._last_dog is None or time.monotonic() - self._last_dog >= dog * share

    def feed_watchdog(self, share: float = 0.25) -> None:
        """Ping when ``share`` of ``WatchdogSec=`` has passed since the last ping."""
        dog = self.notifier.watchdog_s
        if dog and self._ping_due(dog, share):
            self.notifier.send(WATCHDOG="1")
            self._last_dog = time.monotonic()

    def watchdog_cap(self) -> Optional[float]:
        """How long the loop may sleep once this pass has fed the watchdog (feed_watchdog, as it
        goes to sleep): half of ``WatchdogSec=`` after the last ping; None without a watchdog."""
        dog = self.notifier.watchdog_s
        if not dog:
            return None
        if self._last_dog is None or self._ping_due(dog, 0.25):  # this pass pings
            return dog / 2
        return max(0.0, self._last_dog + dog / 2 - time.monotonic())

    def start_reload(self) -> None:
        """Load the policy again, in a thread: the loop goes on meanwhile (finish_reload)."""
        if self._loader is not None:
            self._reload_again = True  # load once more when this one is done: the file changed
            return
        self.notifier.send(
            RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        )
        host, path, dry_run = self.engine.host, self.policy_path, self.dry_run

        def work() -> None:
            result: Union[Loaded, PolicyError]
            pending = None
            try:
                result = load(host, path, dry_run)
                if result.plugins.errors:
                    raise PolicyError(path or BUILT_IN, "", "; ".join(result.plugins.errors))
                pending = self._prepare_metrics(result.policy.metrics, path or BUILT_IN)
            except PolicyError as exc:
                result = exc
            self._pending = pending
            self._loaded = result
            with contextlib.suppress(OSError):  # a full pipe: the loop is awake anyway
                os.write(self._pipe_w, b"r")  # wake the loop to swap it in

        self._loaded = None
        self._pending = None
        self._loader = threading.Thread(target=work, name="guardian-reload", daemon=True)
        self._loader.start()

    def finish_reload(self) -> bool:
        """Swap a loaded policy in (or report it rejected: the running one stays in force);
        True when a reload ended in this pass."""
        if self._loader is None or self._loader.is_alive():
            return False
        self._loader = None
        engine, result = self.engine, self._loaded
        if isinstance(result, Loaded):
            engine.replace_policy(result)
            engine.reporter.policy_loaded(result.policy.source, summarize(result.policy))
            if self._pending is not None and self.export is not None:
                self.export.apply(self._pending)
                self._pending = None
        elif result is not None:
            engine.reporter.policy_rejected(self.policy_path or BUILT_IN, str(result))
        self.notifier.send(READY="1", STATUS=self.status())
        if self._reload_again:
            self._reload_again = False
            self.start_reload()
        return True

    def rearm(self) -> None:
        """Arm the wake-ups the engine's watched set needs now."""
        engine = self.engine
        now = engine.clock.monotonic_us()
        plan = engine.wake_plan(Sample(engine.host, now))
        engine.use_wakeups(plan, self.waiter.arm(plan))

    def _tick_failed(self, exc: Exception, failures: int) -> None:
        """A tick that raised (a race the readers do not know yet, a bug): reported with its
        traceback, and the loop goes on, because an OOM daemon that exits in the middle of an
        episode leaves the machine unguarded until systemd has restarted it. Ten in a row end
        the daemon after all (the unit restarts it)."""
        self._failed(f"a tick failed ({failures} in a row)", exc)
        if failures >= MAX_TICK_FAILURES:
            raise exc

    def _failed(self, what: str, exc: Exception) -> None:
        import traceback  # noqa: PLC0415 - only when something failed (it and textwrap: 1.5 ms of a start)

        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        self.engine.reporter.lifecycle(f"{what}: {type(exc).__name__}: {exc}", PRIORITY_ERR, traceback=detail)

    def status(self) -> str:
        engine = self.engine
        mode = "dry run, " if engine.policy.dry_run else ""
        flying = f", {len(engine.flights)} in flight" if engine.flights else ""
        kernel = f"; {engine.kernel_kills} kernel OOM kills seen" if engine.kernel_kills else ""
        watching = f"watching the machine and {len(engine.watched)} cgroups"
        return f"{mode}{watching}; {engine.kills} kills{flying}{kernel}"

    def wait(self, interval_s: float) -> Wake:
        """Sleep until something wakes the loop or ``interval_s`` passes. Kernel log records are
        read as they come (a kernel OOM kill is reported at once); a wake that brought nothing
        else sleeps on for the rest of the interval, without a look at memory."""
        deadline = time.monotonic() + interval_s
        while True:
            wake = self.waiter.wait(interval_s)
            if wake.kmsg:
                self._read_log()
            interval_s = deadline - time.monotonic()
            if not wake.kmsg_only or interval_s <= 0 or self.waiter.kmsg_fd is None:
                return wake

    def _read_log(self) -> None:
        engine = self.engine
        log = engine.kernel_log
        if log is None:
            return
        before = (log.records, log.overruns)
        try:
            if engine.read_kernel_log(engine.clock.monotonic_us()):
                self.notifier.send(STATUS=self.status())  # `systemctl status` counts them too
        except Exception as exc:  # a bug: reported; the loop, and the log's next records, go on
            self._failed("reading the kernel log failed", exc)
        if (log.records, log.overruns) != before:
            self._idle_log_wakes = 0
            return
        self._idle_log_wakes += 1
        if self._idle_log_wakes >= IDLE_LOG_WAKES:
            self.waiter.set_kmsg(None)
            engine.stop_kernel_log()
            engine.reporter.lifecycle(
                f"the kernel log woke guardian {IDLE_LOG_WAKES} times in a row with nothing to read: it is "
                "no longer followed; the kernel's OOM kills are seen only in the watched groups' "
                "oom_kill counters",
                PRIORITY_WARNING,
            )

    def run(self, ticks: Optional[int] = None) -> int:
        """The loop; ``ticks`` bounds the number of passes (tests)."""
        engine = self.engine
        previous = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        }
        old_wakeup = signal.set_wakeup_fd(self._pipe_w, warn_on_full_buffer=False)
        protect_self(engine.host, engine.policy.self_oom_score_adj, engine.reporter)
        summary = summarize(engine.policy)
        if engine.killer.dry_run and not engine.policy.dry_run:
            summary += f"; DRY RUN (--root {engine.host.root}: its pids are not this machine's)"
        engine.reporter.lifecycle(
            f"started: policy {self.policy_path or BUILT_IN}: {summary}", pid=os.getpid(), version=__version__
        )
        for error in engine.loaded.plugins.errors:
            engine.reporter.lifecycle(error, PRIORITY_WARNING)
        self.start_metrics()
        unreadable = engine.follow_kernel_log()
        if unreadable is not None:
            engine.reporter.lifecycle(
                f"the kernel log cannot be read ({unreadable}): the kernel's OOM kills are seen only "
                "in the watched groups' oom_kill counters",
                PRIORITY_WARNING,
            )
        self.waiter.set_kmsg(engine.kernel_log_fd())
        now = engine.clock.monotonic_us()
        engine.rescan(Sample(engine.host, now), now, force=True)
        try:
            warnings = oomd_warnings(engine.host, engine.policy, engine.watched)
        except Exception as exc:  # advisory: a failure here must never keep guardian from starting
            warnings = [f"could not check whether systemd-oomd acts where guardian does: {exc!r}"]
        for warning in warnings:
            engine.reporter.lifecycle(warning, PRIORITY_WARNING)
        self.rearm()
        self.notifier.send(READY="1", STATUS=self.status())
        # Everything allocated so far (imports, plugins, policy) lives as long as the process:
        # take it out of the cyclic collector's sight, so idle ticks do not pay for rescanning
        # it (gc.freeze, Python 3.7+; measured -27 % CPU per tick). `guardian run` holds the
        # collector off until here (cli.cmd_run): from now on it runs as usual.
        gc.collect()
        gc.freeze()
        gc.enable()
        count = 0
        full = 0  # passes that ran a full tick (the others took the fast path)
        failures = 0  # full ticks in a row that raised
        try:
            while not self.stop and (ticks is None or count < ticks):
                count += 1
                self.feed_watchdog(0.75)  # overdue: the last pass did not sleep
                if self.reload:
                    self.reload = False
                    self.start_reload()
                if self.finish_reload():
                    now = engine.clock.monotonic_us()
                    engine.rescan(Sample(engine.host, now), now, force=True)
                    self.rearm()
                interval = engine.quick(engine.clock.monotonic_us(), self.watchdog_cap())
                engine.metrics.look(full=interval is None)
                if interval is None:
                    full += 1
                    try:
                        result = engine.tick()
                    except Exception as exc:  # isolated, reported, bounded: see _tick_failed
                        failures += 1
                        self._tick_failed(exc, failures)
                        interval = engine.policy.poll.min_interval_s * failures
                    else:
                        failures = 0
                        interval = result.interval_s
                        # first the kills' descriptors (one that ended closed its fd, and the
                        # number may be handed out again by the rearm), then the rearm
                        self.waiter.set_kills(engine.kill_fds())
                        if result.watch_changed:
                            self.rearm()
                        if result.started or result.finished or result.watch_changed:
                            self.notifier.send(STATUS=self.status())
                self.waiter.set_kills(engine.kill_fds())
                if self.stop or self.reload:
                    continue
                if self._loader is not None:  # look at the reload again soon, whatever wakes us
                    interval = min(interval, 0.25)
                self.feed_watchdog()
                cap = self.watchdog_cap()
                if cap is not None:
                    interval = min(interval, cap)
                engine.woke(self.wait(interval), engine.clock.monotonic_us())
        finally:
            self.waiter.close()
            engine.close()
            if self.export is not None:
                if self._pending is not None:  # a reload loaded and not swapped in: its socket
                    self.export.discard(self._pending)
                self.export.close()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in previous.items():
                signal.signal(s, h)
            self.notifier.send(STOPPING="1")
            self.notifier.close()
            # what the loop cost, in looks: every pass, and those that were full ticks
            engine.reporter.lifecycle(
                "stopped",
                kills=engine.kills,
                looks=count,
                full_looks=full,
                kernel_oom_kills=engine.kernel_kills,
            )
        return 0
