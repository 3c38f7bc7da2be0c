"""Kill hooks: plugins' veto before a kill, and what runs after one (plugins and ``[[hook]]``).

Before: ``first_allowed`` asks ``guardian_before_kill`` about the victim chosen, on the loop,
each plugin under the budget; a veto moves on to the next candidate of the same ranking, at
most ``VETO_MAX`` candidates per trigger. A failing hook does not veto (fail open: a hook that
broke must not leave the machine to the kernel's OOM killer).

After: ``AfterKill.told`` hands the ended kill to one worker thread and returns at once, so
nothing here can delay the loop's next look. The worker tells every plugin's
``guardian_after_kill`` (each under the budget, through an ``Isolation`` of its own: runs are
started from that thread only), then starts each ``[[hook]]`` command of the policy:

* the command's argv as written, no shell; stdin ``/dev/null``; cwd ``/``; an environment of
  PATH and the decision (``guardian.decision.hook_env``) only;
* in a session and process group of its own; at ``timeout_s`` the group is sent SIGKILL, and
  when the command exits, whatever it left running in its group is too: a hook cannot leave
  work behind that outlives its bound. The group is signalled only while its leader is not
  yet reaped, so its id cannot name anyone else's group;
* its output (stdout and stderr together) is kept up to ``OUTPUT_MAX`` bytes and reported with
  its exit status (MESSAGE_ID ``report.MSG_HOOK``); the rest is read and dropped;
* at most ``MAX_RUNNING`` commands run at once, and at most ``QUEUE_MAX`` ended kills wait for
  the worker: beyond either, the hook is not run, and that is reported.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional

import pluggy

from guardian.actions import Outcome
from guardian.config import HookCommand
from guardian.decision import KillDecision, KillOutcome, decision_of, hook_env, outcome_of
from guardian.frozen import frozen
from guardian.isolation import Isolation, PluginFailure, call_impl, call_order
from guardian.kinds import KillAction
from guardian.plugins import Plugins
from guardian.policy import KILL, Trigger
from guardian.ranking import Ranked, Ranking
from guardian.report import PRIORITY_INFO, PRIORITY_WARNING, Reporter
from guardian.text import counted

if TYPE_CHECKING:
    import subprocess

VETO_MAX = 3  # candidates asked about per trigger: each costs up to a budget per plugin, on the loop
QUEUE_MAX = 64  # ended kills waiting to be told
MAX_RUNNING = 4  # [[hook]] commands running at once
OUTPUT_MAX = 4096  # bytes of a command's output that are reported
# the outcomes after which [[hook]] commands run: a kill that ended (plugins are told of every one)
COMMAND_OUTCOMES = ("terminated", "killed", "alive", "dry-run")


def action_for(victim: Ranked, trigger: Trigger) -> KillAction:
    """What acting on ``victim`` means: its memory.oom.group (or the group it is) killed whole,
    else SIGKILL at the KILL level and SIGTERM at TERM."""
    if victim.candidate.kill_group:
        return "group-kill"
    return "kill" if trigger.level == KILL else "term"


def first_allowed(
    plugins: Plugins, ranking: Ranking, trigger: Trigger, dry_run: bool, budget_ms: float, reporter: Reporter
) -> Optional[Ranked]:
    """The best candidate of ``ranking`` that no ``guardian_before_kill`` vetoes, among its
    first ``VETO_MAX``; None when every one asked about was vetoed. Vetoes and failing hooks
    are reported."""
    asked = ranking.ranked[:VETO_MAX]
    for i, victim in enumerate(asked):
        decision = decision_of(trigger, victim, action_for(victim, trigger), dry_run)
        veto, failures = plugins.veto(decision, budget_ms)
        for failure in failures:
            reporter.lifecycle(failure.describe(), PRIORITY_WARNING)
        if veto is None:
            return victim
        if i + 1 < len(asked):
            then = "the next candidate is asked about"
        else:
            then = f"no kill for this trigger ({counted(len(asked), 'candidate')} vetoed)"
        reporter.vetoed(decision, veto.plugin, veto.reason, then)
    return None


@frozen
class _Told:
    """A kill's decision and outcome, queued for the [[hook]] commands."""

    decision: KillDecision
    outcome: KillOutcome


Spawn = Callable[..., "subprocess.Popen[bytes]"]


class AfterKill:
    """The after-kill worker of one policy and plugin set (the engine makes a new one when a
    policy is reloaded). Nothing runs, and no thread exists, when no plugin implements
    ``guardian_after_kill`` and the policy has no ``[[hook]]``."""

    def __init__(
        self,
        plugins: Plugins,
        commands: Sequence[HookCommand],
        budget_ms: float,
        reporter: Reporter,
        spawn: Optional[Spawn] = None,
    ) -> None:
        self.plugins = plugins
        self.commands = tuple(commands)
        self.budget_s = budget_ms / 1000.0
        self.reporter = reporter
        if spawn is None and self.commands:
            # subprocess only for a policy with [[hook]] commands: imported with the policy, not
            # when the first command runs on a machine short of memory
            import subprocess  # noqa: PLC0415

            spawn = subprocess.Popen
        self.spawn = spawn
        self.isolation = Isolation()  # this worker's own: Isolation runs start from one thread
        self.dropped = 0
        self.running = 0  # commands running now
        self._queue: collections.deque[_Told] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self.active = bool(self.commands) or plugins.tells_after_kill()

    def told(
        self, trigger: Trigger, victim: Ranked, action: KillAction, outcome: Outcome, dry_run: bool
    ) -> None:
        """A kill ended: queue it for the worker and return. Never waits."""
        if not self.active:
            return
        told = _Told(decision_of(trigger, victim, action, dry_run), outcome_of(victim, outcome))
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= QUEUE_MAX:
                self.dropped += 1
                dropped = True
            else:
                dropped = False
                self._queue.append(told)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._main, name="guardian-after-kill", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
        if dropped:
            self.reporter.lifecycle(
                f"the after-kill hooks were not told of the kill of {told.decision.name}: "
                f"{QUEUE_MAX} ended kills are still waiting for them",
                PRIORITY_WARNING,
            )

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                told = self._queue.popleft()
                self._busy = True
            try:
                self._tell_plugins(told)
                if told.outcome.result in COMMAND_OUTCOMES:
                    for command in self.commands:
                        self._start(command, told)
            except Exception as exc:  # a bug here must not end the worker; report it
                self.reporter.lifecycle(
                    f"after-kill hooks failed: {type(exc).__name__}: {exc}", PRIORITY_WARNING
                )
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _tell_plugins(self, told: _Told) -> None:
        for impl in call_order(self.plugins.manager.hook.guardian_after_kill):

            def work(impl: pluggy.HookImpl = impl) -> None:
                call_impl(impl, {"decision": told.decision, "outcome": told.outcome})

            result = self.isolation.run(impl.plugin_name, "guardian_after_kill", self.budget_s, work)
            if isinstance(result, PluginFailure):
                self.reporter.lifecycle(result.describe(), PRIORITY_WARNING)

    def _start(self, command: HookCommand, told: _Told) -> None:
        import subprocess  # noqa: PLC0415 - loaded with the policy's commands (__init__)

        decision = told.decision
        with self._cond:
            if self.running >= MAX_RUNNING:
                full = True
            else:
                full = False
                self.running += 1
        if full:
            self.reporter.hook_ran(
                command.label,
                decision,
                "not run",
                PRIORITY_WARNING,
                f"{MAX_RUNNING} hook commands are still running",
            )
            return
        try:
            proc = (self.spawn or subprocess.Popen)(
                list(command.command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=hook_env(decision, told.outcome),
                cwd="/",
                close_fds=True,
                start_new_session=True,
            )
            pidfd = os.pidfd_open(proc.pid)  # not reaped yet: the pid is still the child's
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._finished()
            self.reporter.hook_ran(command.label, decision, "failed to start", PRIORITY_WARNING, str(exc))
            return
        watcher = threading.Thread(
            target=self._watch, args=(command, decision, proc, pidfd), name="guardian-hook", daemon=True
        )
        watcher.start()

    def _finished(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def _watch(
        self, command: HookCommand, decision: KillDecision, proc: subprocess.Popen[bytes], pidfd: int
    ) -> None:
        """Read the command's output and wait for it, ``timeout_s`` at most; then end its
        process group, reap it and report."""
        try:
            output, timed_out = _wait(proc, pidfd, command.timeout_s)
            # the leader has exited (or is to be killed) and is not reaped: its group id is
            # still its own, so this reaches its group and nobody else's
            # ESRCH: the group is empty; EPERM: a member changed credentials
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        finally:
            os.close(pidfd)
            if proc.stdout is not None:
                proc.stdout.close()
            self._finished()
        text = output.decode("utf-8", "surrogateescape").strip()
        if timed_out:
            result, priority = f"killed after its timeout of {command.timeout_s:g} s", PRIORITY_WARNING
        elif code < 0:
            result, priority = f"ended by signal {-code}", PRIORITY_WARNING
        else:
            result = f"exit status {code}"
            priority = PRIORITY_INFO if code == 0 else PRIORITY_WARNING
        self.reporter.hook_ran(command.label, decision, result, priority, text, hook_exit=code)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every kill queued was handed on and every command ended, at most
        ``timeout_s``; False when that did not happen in time."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and not self._busy and self.running == 0, timeout_s
            )

    def close(self) -> None:
        """No more kills: the worker ends once the queue is empty; commands running go on to
        their timeout in their own threads. Never waits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _wait(proc: subprocess.Popen[bytes], pidfd: int, timeout_s: float) -> tuple[bytes, bool]:
    """(the first OUTPUT_MAX bytes of its output, whether it overran ``timeout_s``). Returns
    once the process has exited, with what its output held by then (not waiting for a
    grandchild that keeps the pipe open), or at the deadline."""
    deadline = time.monotonic() + timeout_s
    kept = bytearray()
    assert proc.stdout is not None
    out: Optional[int] = proc.stdout.fileno()

    def read(fd: int) -> bool:
        chunk = os.read(fd, 65536)
        if len(kept) < OUTPUT_MAX:
            kept.extend(chunk[: OUTPUT_MAX - len(kept)])
        return bool(chunk)

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(kept), True
        ready = select.select([pidfd] if out is None else [pidfd, out], [], [], left)[0]
        if out is not None and out in ready and not read(out):
            out = None
        if pidfd in ready:
            while out is not None and time.monotonic() < deadline and select.select([out], [], [], 0)[0]:
                if not read(out):
                    out = None
            return bytes(kept), False
