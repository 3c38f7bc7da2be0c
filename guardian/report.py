"""Reporting every decision: journald (the only importer of ``systemd.*``) with a plain fallback.

Each event has a stable MESSAGE_ID (explained in packaging/guardian.catalog) and structured
fields, so ``journalctl MESSAGE_ID=7291c848aa2b4d64ad479ace240749f7 -o json`` lists every kill
with its victim, trigger, the values that crossed and each scorer's score. Without journald the
same message and fields go to stderr, one line per event.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Optional, Protocol, TextIO

from guardian.actions import Outcome
from guardian.policy import Trigger
from guardian.ranking import Ranked

MSG_KILL = "7291c848aa2b4d64ad479ace240749f7"
MSG_DRY_RUN = "4f7a8db32a734063a9e9ae210b8d3af0"
MSG_NOT_DONE = "aeb9eaa4743442df8537c476de4dc782"
MSG_POLICY_LOADED = "2a84573cbba6498daaab9afdcc7d2dae"
MSG_POLICY_REJECTED = "2f664e5f69b9416d8cda340495d0661a"
MSG_LIFECYCLE = "8614d6fccaca40658d1eb8dcdae3a3e6"

PRIORITY_ERR, PRIORITY_WARNING, PRIORITY_NOTICE, PRIORITY_INFO = 3, 4, 5, 6

Fields = dict[str, str]


class Sink(Protocol):
    def send(self, message: str, fields: Mapping[str, str]) -> None: ...


class StderrSink:
    """The fallback: ``guardian: MESSAGE [KEY=value ...]`` on stderr."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream

    def send(self, message: str, fields: Mapping[str, str]) -> None:
        stream = self.stream or sys.stderr
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("MESSAGE", "PRIORITY"))
        stream.write(f"guardian: {message} [{extra}]\n")
        stream.flush()


class JsonLinesSink:
    """One JSON object per event on stderr (GUARDIAN_LOG_FORMAT=json): for containers and log
    shippers without journald, and for tests that read decisions back exactly."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream

    def send(self, message: str, fields: Mapping[str, str]) -> None:
        stream = self.stream or sys.stderr
        stream.write(json.dumps({"MESSAGE": message, **fields}) + "\n")
        stream.flush()


class JournalSink:
    """journald through systemd-python (sd_journal_send: fields arrive as they are)."""

    def __init__(self) -> None:
        from systemd import journal  # noqa: PLC0415 - optional; the only import of systemd.* here

        self._journal = journal

    def send(self, message: str, fields: Mapping[str, str]) -> None:
        self._journal.send(message, SYSLOG_IDENTIFIER="guardian", **fields)


def default_sink(journal_socket: str, log_format: Optional[str] = None) -> Sink:
    """journald when its socket exists and systemd-python is installed, else stderr (plain, or
    JSON lines with GUARDIAN_LOG_FORMAT=json, which also bypasses journald)."""
    log_format = log_format if log_format is not None else os.environ.get("GUARDIAN_LOG_FORMAT", "")
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
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def _send(self, message: str, message_id: str, priority: int, fields: Mapping[str, str]) -> None:
        self.sink.send(message, {"MESSAGE_ID": message_id, "PRIORITY": str(priority), **fields})

    def decision(self, trigger: Trigger, victim: Ranked, action: str, outcome: Outcome) -> None:
        """A victim was chosen and acted on (or, in a dry run, would have been)."""
        c = victim.candidate
        fields: Fields = {
            "GUARDIAN_ACTION": action,
            "GUARDIAN_TRIGGER": f"{trigger.rule}:{trigger.condition}",
            "GUARDIAN_LEVEL": trigger.level,
            "GUARDIAN_SCOPE": trigger.scope or "/",
            "GUARDIAN_REASON": trigger.reason,
            "GUARDIAN_VALUES": " ".join(f"{k}={v}" for k, v in trigger.values.items()),
            "GUARDIAN_OUTCOME": outcome.result,
            "GUARDIAN_SIGNALS": ",".join(outcome.signals),
            "GUARDIAN_TOTAL": f"{victim.total:g}",
            "GUARDIAN_DETECTED_USEC": str(trigger.detected_us),
            "GUARDIAN_VICTIM_CGROUP": c.cgroup or "/",
            "GUARDIAN_VICTIM_RSS_BYTES": str(c.rss_bytes),
        }
        for name, value in trigger.values.items():
            fields[f"GUARDIAN_VALUE_{_field_name(name)}"] = str(value)
        for name, score in victim.scores.items():
            fields[f"GUARDIAN_SCORE_{_field_name(name)}"] = f"{score:g}"
        if c.process is not None:
            fields["GUARDIAN_VICTIM_PID"] = str(c.process.pid)
            fields["GUARDIAN_VICTIM_COMM"] = c.process.comm
            fields["GUARDIAN_VICTIM_OOM_SCORE_ADJ"] = str(c.process.oom_score_adj)
            who = f"pid {c.process.pid} ({c.process.comm})"
        else:
            fields["GUARDIAN_VICTIM_PIDS"] = ",".join(str(p) for p in outcome.pids)
            who = f"cgroup {c.cgroup} ({len(outcome.pids)} processes)"
        if c.kill_group:
            fields["GUARDIAN_KILL_GROUP"] = c.kill_group
        if outcome.mreleased:
            fields["GUARDIAN_MRELEASED"] = "1"
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
        else:
            message = f"did not {action} {who}: {outcome.result}: {outcome.detail or trigger.reason}"
            self._send(message, MSG_NOT_DONE, PRIORITY_NOTICE, fields)

    def not_done(self, trigger: Trigger, outcome: str, detail: str) -> None:
        """A trigger that led to no kill: recovered before it, or nothing killable in scope."""
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
        self._send(
            f"policy {source} loaded: {summary}",
            MSG_POLICY_LOADED,
            PRIORITY_INFO,
            {"GUARDIAN_POLICY": source},
        )

    def policy_rejected(self, source: str, error: str) -> None:
        self._send(
            f"new policy rejected, the old one stays in force: {error}",
            MSG_POLICY_REJECTED,
            PRIORITY_ERR,
            {"GUARDIAN_POLICY": source, "GUARDIAN_POLICY_ERROR": error},
        )

    def lifecycle(self, message: str, priority: int = PRIORITY_INFO, **extra: str) -> None:
        self._send(message, MSG_LIFECYCLE, priority, {f"GUARDIAN_{k.upper()}": v for k, v in extra.items()})
