"""Reporting every decision: journald (the only importer of ``systemd.*``) with a plain fallback.

Each event has a stable MESSAGE_ID (explained in packaging/guardian.catalog) and structured
fields, so ``journalctl MESSAGE_ID=7291c848aa2b4d64ad479ace240749f7 -o json`` lists every kill
with its victim, trigger, the values that crossed and each scorer's score. Without journald the
same message goes to stderr, one line per event: plain, with a few key fields, or JSON with
every field and a timestamp (GUARDIAN_LOG_FORMAT=json).

Fields keep their type (a pid is an int, a list of pids a tuple) until a sink writes them:
journald has only strings (``field_text``), while a JSON line gives numbers as JSON numbers.

Nothing here may hold up the loop. libsystemd's sd_journal_send() writes to a blocking datagram
socket: a journald that stops reading (stalled, itself short of memory) would stall the daemon
in the middle of an episode. The daemon therefore reports through a ``QueuedSink``: one sender
thread behind a bounded queue. A full queue drops the oldest informational message (and counts
the drops), never a decision record.

Text that a user or the kernel chose (comm, cgroup names) is escaped before it reaches a line
(guardian.text.shown), and the plain stderr sink quotes every value that could be read as more
than one field, so a process cannot forge a line or a field.
"""

from __future__ import annotations

import collections
import datetime
import math
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Callable, Optional, Protocol, TextIO, Union

from guardian.actions import Outcome
from guardian.config import PolicyError
from guardian.kernel_kills import SeenKill
from guardian.kinds import KillAction, NotDone
from guardian.metrics import Metrics
from guardian.policy import Trigger
from guardian.ranking import Ranked
from guardian.text import counted, human_bytes, shown

MSG_KILL = "7291c848aa2b4d64ad479ace240749f7"
MSG_DRY_RUN = "4f7a8db32a734063a9e9ae210b8d3af0"
MSG_NOT_DONE = "aeb9eaa4743442df8537c476de4dc782"
MSG_POLICY_LOADED = "2a84573cbba6498daaab9afdcc7d2dae"
MSG_POLICY_REJECTED = "2f664e5f69b9416d8cda340495d0661a"
MSG_LIFECYCLE = "8614d6fccaca40658d1eb8dcdae3a3e6"
MSG_KERNEL_OOM_KILL = "a061dd4cbf59429ba9362090877862e4"

PRIORITY_ERR, PRIORITY_WARNING, PRIORITY_NOTICE, PRIORITY_INFO = 3, 4, 5, 6

# a field's value: text, a number, or a list of pids
Field = Union[str, int, float, tuple[int, ...]]
Fields = dict[str, Field]


class Sink(Protocol):
    def send(self, message: str, fields: Mapping[str, Field]) -> None: ...


def field_text(value: Field) -> str:
    """A field as journald holds it (journald has only strings): a number as Python writes it
    (``repr`` of a float is the shortest text that reads back as the same float; "inf" for one
    that overflowed), a list of pids comma-separated."""
    if isinstance(value, tuple):
        return ",".join(str(pid) for pid in value)
    return value if isinstance(value, str) else repr(value)


JsonValue = Union[str, int, float, list[int], None]


def _json_value(value: Field) -> JsonValue:
    """A field in a JSON line: text escaped, a number as a JSON number (null for one beyond the
    floats, as ``rank --json`` writes it: JSON has no infinity), a list of pids as an array."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(value: object) -> str:
    """``json.dumps(value)``. json is imported on the first line that needs it, not with this
    module: journald, where guardian runs as a service, needs none, and a start does not pay
    for it (bench/startup.py)."""
    import json  # noqa: PLC0415

    return json.dumps(value)


_BARE = re.compile(r"[A-Za-z0-9_./:@,+%-]*")


def _quoted(value: str) -> str:
    """A field value as one token: bare when it is plainly one, else a JSON string (quotes,
    backslashes, spaces and control characters escaped), so ``GUARDIAN_X=a b GUARDIAN_Y=1``
    can never be read out of a value."""
    return value if value and _BARE.fullmatch(value) else _dumps(value)


# The fields a plain line shows, in this order: what the message does not say and a reader greps
# for. The rest (values, scores, the victim's cgroup, a group's pids: hundreds of characters) is
# in journald and in the JSON lines.
PLAIN_FIELDS = (
    "GUARDIAN_OUTCOME",
    "GUARDIAN_TRIGGER",
    "GUARDIAN_SCOPE",
    "GUARDIAN_VICTIM_PID",
    "GUARDIAN_PID",
    "GUARDIAN_KILLS",
    "GUARDIAN_TRACEBACK",  # rare, and what a bug report needs
)


class StderrSink:
    """The fallback: ``guardian: MESSAGE [KEY=value ...]`` on stderr, one line per event, with
    only the PLAIN_FIELDS the event has (no brackets when it has none)."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        stream = self.stream or sys.stderr
        extra = " ".join(f"{k}={_quoted(shown(field_text(fields[k])))}" for k in PLAIN_FIELDS if k in fields)
        # the message too, when it could be read as more than the message (a cgroup name with
        # "] [GUARDIAN_OUTCOME=..." in it): a reader splits at " [" and finds only guardian's fields
        text = shown(message)
        if "[" in text or "]" in text or text.startswith('"'):
            text = _dumps(text)
        stream.write(f"guardian: {text} [{extra}]\n" if extra else f"guardian: {text}\n")
        stream.flush()


class JsonLinesSink:
    """One JSON object per event on stderr (GUARDIAN_LOG_FORMAT=json): for containers and log
    shippers without journald, and for tests that read decisions back exactly.

    Each line starts with when it was written, as journald would stamp it: TIMESTAMP (ISO 8601,
    UTC, microseconds) and MONOTONIC_USEC (CLOCK_MONOTONIC, the clock of GUARDIAN_DETECTED_USEC,
    so the difference is the time from detection to report). Numbers are JSON numbers; MESSAGE_ID
    and PRIORITY stay the strings they are in journald."""

    def __init__(
        self,
        stream: Optional[TextIO] = None,
        realtime_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.stream = stream
        self.realtime_ns = realtime_ns
        self.monotonic_ns = monotonic_ns

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        stream = self.stream or sys.stderr
        seconds, ns = divmod(self.realtime_ns(), 1_000_000_000)
        written = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(
            microsecond=ns // 1000
        )
        event: dict[str, JsonValue] = {
            "TIMESTAMP": written.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "MONOTONIC_USEC": self.monotonic_ns() // 1000,
            "MESSAGE": shown(message),
        }
        event.update((k, _json_value(v)) for k, v in fields.items())
        stream.write(_dumps(event) + "\n")
        stream.flush()


class JournalSink:
    """journald through systemd-python (sd_journal_send: fields arrive as they are)."""

    def __init__(self) -> None:
        # the only import of systemd.* here, and only of its C core: systemd.journal.send() is
        # sendv() behind a stack walk for CODE_FILE/CODE_LINE (this file, every time), and
        # importing that module costs a start 4.8 ms of CPU and 1.7 MiB (uuid, logging, ...)
        try:
            from systemd._journal import sendv  # noqa: PLC0415
        except ImportError:  # a binding laid out otherwise: its public module has it too
            from systemd.journal import sendv  # noqa: PLC0415

        self._sendv = sendv

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        # journald takes any bytes in a field, but a str with surrogate escapes cannot be
        # encoded by systemd-python: shown() keeps it valid UTF-8 and one line
        self._sendv(
            f"MESSAGE={shown(message)}",
            "SYSLOG_IDENTIFIER=guardian",
            *(f"{k}={shown(field_text(v))}" for k, v in fields.items()),
        )


def is_record(fields: Mapping[str, Field]) -> bool:
    """Decisions and policy changes are records: never dropped. The rest is informational."""
    return fields.get("MESSAGE_ID") != MSG_LIFECYCLE


class QueuedSink:
    """Sends through ``inner`` from its own thread, so that a sink that blocks (journald not
    reading its socket) never blocks the caller. The queue holds ``capacity`` events; when it is
    full, the oldest informational event is dropped and counted (``dropped``); records
    (``is_record``) are never dropped, so the queue may grow past ``capacity`` with them alone
    (their number is bounded by the kills and reloads made). After drops, a warning saying how
    many is sent once the queue has room again."""

    def __init__(
        self, inner: Sink, capacity: int = 256, keep: Callable[[Mapping[str, Field]], bool] = is_record
    ) -> None:
        self.inner = inner
        self.capacity = capacity
        self.keep = keep
        self.dropped = 0
        self._reported_drops = 0
        self._queue: collections.deque[tuple[str, Mapping[str, Field]]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._main, name="guardian-report", daemon=True)
        self._thread.start()

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        with self._cond:
            if len(self._queue) >= self.capacity:
                for i, (_, queued) in enumerate(self._queue):
                    if not self.keep(queued):
                        del self._queue[i]
                        self.dropped += 1
                        break
                else:
                    if not self.keep(fields):
                        self.dropped += 1
                        return
            self._queue.append((message, fields))
            self._cond.notify()

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                message, fields = self._queue.popleft()
                self._busy = True
                drops = self.dropped - self._reported_drops
                room = len(self._queue) < self.capacity // 2
            try:
                self.inner.send(message, fields)
                if drops and room:
                    self._reported_drops += drops
                    self.inner.send(
                        f"{drops} informational messages were dropped: the log did not keep up",
                        {
                            "MESSAGE_ID": MSG_LIFECYCLE,
                            "PRIORITY": str(PRIORITY_WARNING),
                            "GUARDIAN_DROPPED": drops,
                        },
                    )
            except Exception:  # a sink that fails must not end the sender; the event is lost
                pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued has been handed to the inner sink, at most
        ``timeout_s``; False when it did not drain (the inner sink is stuck)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self, timeout_s: float = 2.0) -> bool:
        """Deliver what is queued within ``timeout_s`` and stop the thread (a stuck inner sink
        is abandoned: the thread is a daemon thread)."""
        drained = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return drained


def default_sink(journal_socket: str, log_format: Optional[str] = None) -> Sink:
    """journald when its socket exists and systemd-python is installed, else stderr (plain, or
    JSON lines with GUARDIAN_LOG_FORMAT=json, which also bypasses journald).

    Any other value is refused: a misspelt "jsn" that fell back to journald would leave a log
    shipper reading stderr with nothing, and the operator would learn it only when a kill went
    unrecorded. The error is a configuration error like an invalid policy (exit 78, which the
    unit does not restart in a loop)."""
    log_format = log_format if log_format is not None else os.environ.get("GUARDIAN_LOG_FORMAT", "")
    if log_format not in ("", "json"):
        raise PolicyError(
            "GUARDIAN_LOG_FORMAT",
            "",
            f'{_dumps(log_format)} is no log format: use "json" (JSON lines on stderr), or leave '
            "it unset or empty (journald where it runs, else plain lines on stderr)",
        )
    if log_format == "json":
        return JsonLinesSink()
    if os.path.exists(journal_socket):
        try:
            return JournalSink()
        except ImportError:
            pass
    return StderrSink()


def _field_name(name: str) -> str:
    # journal field names: uppercase letters, digits and underscores, not starting with a digit
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


class Reporter:
    """Every decision, trigger without a kill, policy change and lifecycle event, to the sink;
    the decisions and policy changes are counted in ``metrics`` too."""

    def __init__(self, sink: Sink, metrics: Optional[Metrics] = None) -> None:
        self.sink = sink
        self.metrics = metrics if metrics is not None else Metrics()

    def _send(self, message: str, message_id: str, priority: int, fields: Mapping[str, Field]) -> None:
        self.sink.send(message, {"MESSAGE_ID": message_id, "PRIORITY": str(priority), **fields})

    def decision(self, trigger: Trigger, victim: Ranked, action: KillAction, outcome: Outcome) -> None:
        """A victim was chosen and acted on (or, in a dry run, would have been)."""
        self.metrics.decision(action, outcome.result, trigger.rule)
        c = victim.candidate
        fields: Fields = {
            "GUARDIAN_ACTION": action,
            "GUARDIAN_TRIGGER": f"{trigger.rule}:{trigger.condition}",
            "GUARDIAN_LEVEL": trigger.level,
            "GUARDIAN_SCOPE": trigger.scope or "/",
            "GUARDIAN_REASON": trigger.reason,
            "GUARDIAN_VALUES": " ".join(f"{k}={field_text(v)}" for k, v in trigger.values.items()),
            "GUARDIAN_OUTCOME": outcome.result,
            "GUARDIAN_SIGNALS": ",".join(outcome.signals),
            "GUARDIAN_TOTAL": victim.total,
            "GUARDIAN_DETECTED_USEC": trigger.detected_us,
            "GUARDIAN_VICTIM_CGROUP": c.cgroup or "/",
            "GUARDIAN_VICTIM_RSS_BYTES": c.rss_bytes,
        }
        for name, value in trigger.values.items():
            fields[f"GUARDIAN_VALUE_{_field_name(name)}"] = value
        for name, score in victim.scores.items():
            fields[f"GUARDIAN_SCORE_{_field_name(name)}"] = score
        for name, note in victim.notes.items():  # shown() already, by the ranking
            fields[f"GUARDIAN_WHY_{_field_name(name)}"] = note
        if c.process is not None:
            fields["GUARDIAN_VICTIM_PID"] = c.process.pid
            fields["GUARDIAN_VICTIM_COMM"] = c.process.comm
            fields["GUARDIAN_VICTIM_OOM_SCORE_ADJ"] = c.process.oom_score_adj
            who = f"pid {c.process.pid} ({shown(c.process.comm)})"
        if action == "group-kill":  # a cgroup, or a process's memory.oom.group group: all its members
            fields["GUARDIAN_VICTIM_PIDS"] = tuple(outcome.pids)
            members = counted(len(outcome.pids), "process", "processes")
            group = f"cgroup {shown(c.kill_group or c.cgroup or '/')} ({members})"
            who = group if c.process is None else f"{group}, the memory.oom.group of {who}"
        if c.kill_group:
            fields["GUARDIAN_KILL_GROUP"] = c.kill_group
        if outcome.spared:
            fields["GUARDIAN_SPARED_PIDS"] = tuple(outcome.spared)
        if outcome.mreleased:
            fields["GUARDIAN_MRELEASED"] = 1
        if outcome.detail:
            fields["GUARDIAN_DETAIL"] = outcome.detail
        rss = f"{c.rss_bytes / (1 << 20):.0f} MiB"
        if outcome.result == "dry-run":
            message = f"dry run: would {action} {who}, {rss}: {trigger.reason}"
            self._send(message, MSG_DRY_RUN, PRIORITY_NOTICE, fields)
        elif outcome.result in ("terminated", "killed", "alive"):
            verb = {"term": "terminated", "kill": "killed", "group-kill": "killed"}[action]
            message = f"{verb} {who}, {rss}: {trigger.reason}"
            if outcome.result == "alive":
                message += " (still alive after the wait)"
            self._send(message, MSG_KILL, PRIORITY_WARNING, fields)
        elif outcome.result == "abandoned" and outcome.signals:
            message = f"sent {', '.join(outcome.signals)} to {who}, then abandoned the kill: {outcome.detail}"
            self._send(message, MSG_KILL, PRIORITY_WARNING, fields)
        else:
            message = f"did not {action} {who}: {outcome.result}: {outcome.detail or trigger.reason}"
            self._send(message, MSG_NOT_DONE, PRIORITY_NOTICE, fields)

    def kernel_oom_kill(self, seen: SeenKill) -> None:
        """The kernel's OOM killer killed a process: guardian did not prevent it (or the kill was
        in a scope no rule watches). What the kernel said, and what the policy would have done."""
        fields: Fields = {"GUARDIAN_SOURCE": seen.source, "GUARDIAN_OOM_KILLS": seen.count}
        if seen.scope_known:
            fields["GUARDIAN_SCOPE"] = seen.scope or "/"
        fields["GUARDIAN_RULE"] = seen.rule or "none"
        if seen.cgroup is not None:
            fields["GUARDIAN_VICTIM_CGROUP"] = seen.cgroup
        where = f" in {shown(seen.cgroup)}" if seen.cgroup is not None else ""
        kill = seen.kill
        if kill is not None:
            fields["GUARDIAN_VICTIM_PID"] = kill.pid
            fields["GUARDIAN_VICTIM_COMM"] = kill.comm
            fields["GUARDIAN_OOM_CONTEXT"] = kill.context
            optional: dict[str, Union[str, int, None]] = {
                "GUARDIAN_OOM_CONSTRAINT": kill.constraint,
                "GUARDIAN_OOM_MEMCG": kill.oom_memcg,
                "GUARDIAN_OOM_GROUP": kill.oom_group_memcg,
                "GUARDIAN_OOM_CPUSET": kill.cpuset,
                "GUARDIAN_VICTIM_UID": kill.uid,
                "GUARDIAN_VICTIM_OOM_SCORE_ADJ": kill.oom_score_adj,
                "GUARDIAN_VICTIM_TOTAL_VM_BYTES": kill.total_vm_bytes,
                "GUARDIAN_VICTIM_ANON_RSS_BYTES": kill.anon_rss_bytes,
                "GUARDIAN_VICTIM_FILE_RSS_BYTES": kill.file_rss_bytes,
                "GUARDIAN_VICTIM_SHMEM_RSS_BYTES": kill.shmem_rss_bytes,
                "GUARDIAN_VICTIM_PGTABLES_BYTES": kill.pgtables_bytes,
                "GUARDIAN_KERNEL_TIME_USEC": kill.kernel_time_us,
                "GUARDIAN_KMSG_SEQ": kill.seq,
            }
            fields.update((k, v) for k, v in optional.items() if v is not None)
            if not seen.scope_known:
                domain = "out of memory, where the report does not say"
            elif seen.scope is None:
                domain = "the machine out of memory"
            else:
                domain = f"memory cgroup {shown(seen.scope)} out of memory"
            if kill.constraint is not None:
                domain += f" ({kill.constraint})"
            rss = ", ".join(
                f"{name} {human_bytes(value)}"
                for name, value in (
                    ("anon-rss", kill.anon_rss_bytes),
                    ("file-rss", kill.file_rss_bytes),
                    ("shmem-rss", kill.shmem_rss_bytes),
                )
                if value is not None
            )
            message = f"kernel OOM killer killed pid {kill.pid} ({shown(kill.comm)}){where}: {domain}; {rss}"
        else:
            kills = counted(seen.count, "process", "processes")
            message = (
                f"kernel OOM killer killed {kills}{where}: its oom_kill counter rose, "
                "and the kernel log did not report it"
            )
        scope_name = "the machine" if seen.scope is None else shown(seen.scope)
        if not seen.scope_known:
            message += "; no guardian rule is known to watch it"
        elif seen.rule is None:
            message += f"; no guardian rule watches {scope_name}"
        else:
            message += f"; guardian's rule {shown(seen.rule)} watches {scope_name}"
        choice = seen.choice
        if choice is not None:
            c = choice.candidate
            if c.process is not None:
                who = f"pid {c.process.pid} ({shown(c.process.comm)})"
                fields["GUARDIAN_WOULD_CHOOSE_PID"] = c.process.pid
                fields["GUARDIAN_WOULD_CHOOSE_COMM"] = c.process.comm
            else:
                who = f"cgroup {shown(c.cgroup or '/')} ({counted(len(c.members), 'process', 'processes')})"
            who += f", {human_bytes(c.rss_bytes)}"
            fields["GUARDIAN_WOULD_CHOOSE"] = who
            fields["GUARDIAN_WOULD_CHOOSE_CGROUP"] = c.cgroup or "/"
            fields["GUARDIAN_WOULD_CHOOSE_RSS_BYTES"] = c.rss_bytes
            fields["GUARDIAN_WOULD_CHOOSE_TOTAL"] = choice.total
            message += f"; its policy would have chosen {who}"
        else:
            fields["GUARDIAN_WOULD_CHOOSE"] = f"nothing: {seen.choice_note}"
            message += f"; its policy would have chosen nothing: {seen.choice_note}"
        self._send(message, MSG_KERNEL_OOM_KILL, PRIORITY_WARNING, fields)

    def not_done(self, trigger: Trigger, outcome: NotDone, detail: str) -> None:
        """A trigger that led to no kill: recovered before it, or nothing killable in scope."""
        self.metrics.no_kill(trigger.rule, outcome)
        fields: Fields = {
            "GUARDIAN_TRIGGER": f"{trigger.rule}:{trigger.condition}",
            "GUARDIAN_LEVEL": trigger.level,
            "GUARDIAN_SCOPE": trigger.scope or "/",
            "GUARDIAN_REASON": trigger.reason,
            "GUARDIAN_OUTCOME": outcome,
            "GUARDIAN_DETAIL": detail,
        }
        self._send(f"no kill for {trigger.reason}: {detail}", MSG_NOT_DONE, PRIORITY_NOTICE, fields)

    def policy_loaded(self, source: str, summary: str) -> None:
        self.metrics.policy_loaded("loaded")
        self._send(
            f"policy {source} loaded: {summary}",
            MSG_POLICY_LOADED,
            PRIORITY_INFO,
            {"GUARDIAN_POLICY": source},
        )

    def policy_rejected(self, source: str, error: str) -> None:
        self.metrics.policy_loaded("rejected")
        self._send(
            f"new policy rejected, the old one stays in force: {error}",
            MSG_POLICY_REJECTED,
            PRIORITY_ERR,
            {"GUARDIAN_POLICY": source, "GUARDIAN_POLICY_ERROR": error},
        )

    def lifecycle(self, message: str, priority: int = PRIORITY_INFO, **extra: Field) -> None:
        self._send(message, MSG_LIFECYCLE, priority, {f"GUARDIAN_{k.upper()}": v for k, v in extra.items()})
