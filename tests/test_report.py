"""Reporting: a line per event that a process cannot forge, and a sender that never blocks the
loop nor drops a decision."""

from __future__ import annotations

import ast
import datetime
import io
import json
import math
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import get_args

import pytest
from support.bounds import guardian_bounded
from support.sinks import MemorySink

from guardian.actions import Outcome
from guardian.candidates import Candidate
from guardian.config import PolicyError
from guardian.kinds import NotDone, OutcomeResult
from guardian.policy import Trigger
from guardian.ranking import Ranked
from guardian.records import ProcCgroups, Process
from guardian.report import (
    MSG_KILL,
    MSG_LIFECYCLE,
    PLAIN_FIELDS,
    Field,
    JsonLinesSink,
    QueuedSink,
    Reporter,
    StderrSink,
    default_sink,
)

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "guardian"
README = ROOT / "README.md"
CATALOG = ROOT / "packaging" / "guardian.catalog"

EVIL_COMM = "x\nguardian: killed pid 1 (systemd)"
EVIL_CGROUP = os.fsdecode(b"/user.slice/a b GUARDIAN_OUTCOME=killed GUARDIAN_VICTIM_PID=1 \xff\x1b[2J")


def hostile_decision(reporter: Reporter) -> None:
    process = Process(
        pid=4242,
        ppid=1,
        comm=EVIL_COMM,
        state="S",
        starttime_ticks=1,
        is_kernel_thread=False,
        uid=1000,
        rss_anon_bytes=1 << 20,
        rss_file_bytes=0,
        rss_shmem_bytes=0,
        swap_bytes=0,
        pte_bytes=0,
        oom_score_adj=0,
        cgroup=ProcCgroups(v2=EVIL_CGROUP, v1={}),
    )
    trigger = Trigger(
        "cgroup[0]", EVIL_CGROUP, "headroom", "KILL", "process", "headroom 1.0 MiB of limit 8.0 MiB"
    )
    victim = Ranked(
        Candidate(kind="process", cgroup=EVIL_CGROUP, process=process), {"kernel_badness": 900}, 900
    )
    reporter.decision(trigger, victim, "kill", Outcome("terminated", signals=["SIGKILL"], pids=[4242]))


def fields_of(line: str) -> dict[str, str]:
    """Parse a plain sink line the way a log reader would: ``guardian: MESSAGE [FIELDS]``, the
    message bare (no brackets) or a JSON string, each field KEY=bare or KEY="json"."""
    body = line[len("guardian: ") :]
    if body.startswith('"'):
        _, end = json.JSONDecoder().raw_decode(body)
        body = body[end:]
    else:
        body = " [" + body.partition(" [")[2]
    assert body.startswith(" [") and body.endswith("]"), line
    bracket = body[2:-1]
    found: dict[str, str] = {}
    for m in re.finditer(r'([A-Z_]+)=("(?:[^"\\]|\\.)*"|\S*)', bracket):
        value = m.group(2)
        assert m.group(1) not in found, f"{m.group(1)} twice: a field was forged in {line!r}"
        found[m.group(1)] = json.loads(value) if value.startswith('"') else value
    return found


def test_the_plain_sink_cannot_be_forged() -> None:
    out = io.StringIO()
    hostile_decision(Reporter(StderrSink(out)))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # the newline in comm did not start a line of its own
    (line,) = lines
    line.encode("utf-8")  # valid UTF-8: the undecodable byte is escaped
    assert "\x1b" not in line
    assert line.startswith("guardian: killed pid 4242 (x\\nguardian: killed pid 1 (systemd)), ")
    fields = fields_of(line)
    assert fields["GUARDIAN_OUTCOME"] == "terminated"
    assert fields["GUARDIAN_VICTIM_PID"] == "4242"
    assert fields["GUARDIAN_SCOPE"].startswith("/user.slice/a b GUARDIAN_OUTCOME=killed")
    assert fields["GUARDIAN_SCOPE"].endswith("\\xff\\x1b[2J")


def test_a_name_cannot_forge_fields_through_the_message() -> None:
    """A group kill names its cgroup in the message: a name holding "] [" and fields must not
    read as guardian's fields (found in review)."""
    out = io.StringIO()
    group = "/user.slice/x] [GUARDIAN_OUTCOME=protected GUARDIAN_VICTIM_PIDS=1"
    process = Process(
        pid=4242, ppid=1, comm="w", state="S", starttime_ticks=1, is_kernel_thread=False, uid=1000,
        rss_anon_bytes=1 << 20, rss_file_bytes=0, rss_shmem_bytes=0, swap_bytes=0, pte_bytes=0,
        oom_score_adj=0, cgroup=ProcCgroups(v2=group, v1={}),
    )  # fmt: skip
    trigger = Trigger("cgroup[0]", group, "headroom", "KILL", "group", "headroom 1.0 MiB of limit 8.0 MiB")
    candidate = Candidate(kind="cgroup", cgroup=group, members=(process,), kill_group=group)
    outcome = Outcome("killed", signals=["cgroup.kill"], pids=[4242])
    Reporter(StderrSink(out)).decision(trigger, Ranked(candidate, {}, 0), "group-kill", outcome)
    (line,) = out.getvalue().splitlines()
    assert "(1 process)," in line  # and counted right
    fields = fields_of(line)
    assert fields["GUARDIAN_OUTCOME"] == "killed" and fields["GUARDIAN_SCOPE"] == group
    assert "GUARDIAN_VICTIM_PIDS" not in fields  # the name's own was not read as a field


def test_the_plain_line_is_the_message_and_a_few_key_fields() -> None:
    """A plain line read about 400 characters of fields after the message; it keeps only those
    that the message does not say and a reader greps for (the JSON line keeps everything)."""
    out = io.StringIO()
    reporter = Reporter(StderrSink(out))
    group_decision(reporter)
    reporter.lifecycle("started: policy <built-in defaults>", pid=321)
    reporter.lifecycle("mlockall failed")
    kill, started, warning = out.getvalue().splitlines()
    assert fields_of(kill) == {
        "GUARDIAN_OUTCOME": "killed",
        "GUARDIAN_TRIGGER": "cgroup[0]:psi",
        "GUARDIAN_SCOPE": "/app.slice",
    }
    assert kill.startswith("guardian: killed cgroup /app.slice (2 processes), 3 MiB: stall 42% [")
    assert len(kill) < 160, kill
    assert fields_of(started) == {"GUARDIAN_PID": "321"}
    assert warning == "guardian: mlockall failed"  # no fields to show: no brackets
    # README lists the fields a plain line shows, in their order
    (said,) = [p for p in README.read_text().split("\n\n") if p.startswith("Without journald the messages")]
    assert re.findall(r"`(GUARDIAN_[A-Z_]+)`", said) == list(PLAIN_FIELDS)


def test_the_json_sink_is_one_valid_line() -> None:
    out = io.StringIO()
    hostile_decision(Reporter(JsonLinesSink(out)))
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["GUARDIAN_VICTIM_PID"] == 4242 and event["GUARDIAN_OUTCOME"] == "terminated"
    assert event["GUARDIAN_VICTIM_OOM_SCORE_ADJ"] == 0
    assert event["GUARDIAN_VICTIM_CGROUP"].endswith("\\xff\\x1b[2J")


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    """GUARDIAN_LOG_FORMAT=jsn fell back to journald without a word; it names the accepted
    values instead."""
    assert isinstance(default_sink(str(tmp_path / "none"), "json"), JsonLinesSink)
    assert isinstance(default_sink(str(tmp_path / "none"), ""), StderrSink)
    for wrong in ("jsn", "JSON", "plain"):
        with pytest.raises(PolicyError) as caught:
            default_sink(str(tmp_path / "none"), wrong)
        assert str(caught.value) == (
            f'GUARDIAN_LOG_FORMAT: "{wrong}" is no log format: use "json" (JSON lines on stderr), '
            "or leave it unset or empty (journald where it runs, else plain lines on stderr)"
        )


def test_run_with_an_unknown_log_format_exits_78(monkeypatch: pytest.MonkeyPatch) -> None:
    """At start, before the daemon runs: exit 78, which the unit does not restart in a loop."""
    monkeypatch.setenv("GUARDIAN_LOG_FORMAT", "jsn")
    out = guardian_bounded(["run", "--root", str(ROOT / "tests" / "fixtures" / "v2-systemd")], timeout_s=60)
    assert out.returncode == 78, out.stderr
    assert out.stderr.decode().startswith('guardian run: GUARDIAN_LOG_FORMAT: "jsn" is no log format')


def group_decision(reporter: Reporter, total: float = 712.5) -> None:
    """A group kill on a cgroup's PSI rule, with a text value beside the numbers."""
    process = Process(
        pid=4242, ppid=1, comm="w", state="S", starttime_ticks=1, is_kernel_thread=False, uid=1000,
        rss_anon_bytes=3 << 20, rss_file_bytes=0, rss_shmem_bytes=0, swap_bytes=0, pte_bytes=0,
        oom_score_adj=0, cgroup=ProcCgroups(v2="/app.slice", v1={}),
    )  # fmt: skip
    values = {"stall_pct": 42.5, "stall_kind": "some", "held_s": 3.0, "current_bytes": 1 << 30}
    trigger = Trigger(
        "cgroup[0]", "/app.slice", "psi", "TERM", "group", "stall 42%", values, detected_us=5_000_000
    )
    candidate = Candidate(kind="cgroup", cgroup="/app.slice", members=(process,), kill_group="/app.slice")
    ranked = Ranked(candidate, {"cause": 712.5, "kernel_badness": 3}, total, {"cause": "grows +1 MiB/s"})
    outcome = Outcome("killed", signals=["SIGKILL"], pids=[4242, 4243], spared=[4244], mreleased=True)
    reporter.decision(trigger, ranked, "group-kill", outcome)


def test_json_lines_carry_a_timestamp_and_numbers_as_numbers() -> None:
    """A JSON line says when it was written (UTC, to the microsecond, and on the monotonic clock
    of GUARDIAN_DETECTED_USEC), and a number is a JSON number; text stays text, and journald's
    own fields stay the strings journald holds."""
    out = io.StringIO()
    sink = JsonLinesSink(
        out, realtime_ns=lambda: 1_700_000_000_123_456_789, monotonic_ns=lambda: 5_250_000_999
    )
    group_decision(Reporter(sink))
    Reporter(sink).lifecycle("stopped", kills=3)
    kill, stopped = (json.loads(line) for line in out.getvalue().splitlines())
    assert kill["TIMESTAMP"] == "2023-11-14T22:13:20.123456Z"
    assert kill["MONOTONIC_USEC"] == 5_250_000
    assert kill["GUARDIAN_DETECTED_USEC"] == 5_000_000
    assert kill["GUARDIAN_VICTIM_RSS_BYTES"] == 3 << 20
    assert kill["GUARDIAN_VALUE_CURRENT_BYTES"] == 1 << 30 and kill["GUARDIAN_VALUE_STALL_PCT"] == 42.5
    assert kill["GUARDIAN_VALUE_STALL_KIND"] == "some"
    assert kill["GUARDIAN_SCORE_CAUSE"] == 712.5 and kill["GUARDIAN_SCORE_KERNEL_BADNESS"] == 3
    assert kill["GUARDIAN_TOTAL"] == 712.5
    assert kill["GUARDIAN_VICTIM_PIDS"] == [4242, 4243] and kill["GUARDIAN_SPARED_PIDS"] == [4244]
    assert kill["GUARDIAN_MRELEASED"] == 1
    assert kill["GUARDIAN_SIGNALS"] == "SIGKILL" and kill["GUARDIAN_WHY_CAUSE"] == "grows +1 MiB/s"
    assert kill["PRIORITY"] == "4" and kill["MESSAGE_ID"] == MSG_KILL
    assert stopped["GUARDIAN_KILLS"] == 3
    readme = README.read_text()
    assert [k for k in kill if not k.startswith("GUARDIAN_") and f"`{k}`" not in readme] == []
    datetime.datetime.strptime(stopped["TIMESTAMP"], "%Y-%m-%dT%H:%M:%S.%f%z")


def test_journald_receives_every_field_as_text() -> None:
    """journald has only strings: the same event reaches it (and the plain line) as text, numbers
    as guardian always wrote them, a list of pids comma-separated."""
    sink = MemorySink()
    group_decision(Reporter(sink))
    (kill,) = sink.events
    assert all(isinstance(v, str) for v in kill.values()), kill
    assert kill["GUARDIAN_VICTIM_PIDS"] == "4242,4243" and kill["GUARDIAN_DETECTED_USEC"] == "5000000"
    assert kill["GUARDIAN_TOTAL"] == "712.5" and kill["GUARDIAN_SCORE_KERNEL_BADNESS"] == "3"
    assert kill["GUARDIAN_VALUE_HELD_S"] == "3.0" and kill["GUARDIAN_VALUE_STALL_KIND"] == "some"
    assert kill["GUARDIAN_VALUES"] == "stall_pct=42.5 stall_kind=some held_s=3.0 current_bytes=1073741824"


def test_a_total_beyond_floats_is_null_in_json() -> None:
    """JSON has no infinity: a score that overflowed is null, as in ``rank --json``."""
    out = io.StringIO()
    group_decision(Reporter(JsonLinesSink(out)), total=math.inf)
    assert json.loads(out.getvalue())["GUARDIAN_TOTAL"] is None


class Gate:
    """A sink that blocks until opened, like journald that stopped reading."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.inner = MemorySink()
        self.entered = threading.Event()

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        self.entered.set()
        self.open.wait()
        self.inner.send(message, fields)


def test_a_full_queue_drops_the_oldest_information_never_a_record() -> None:
    gate = Gate()
    sink = QueuedSink(gate, capacity=4)
    reporter = Reporter(sink)
    reporter.lifecycle("first")  # taken by the sender, which then blocks in the gate
    assert gate.entered.wait(5)
    for i in range(6):
        reporter.lifecycle(f"info {i}")
    for i in range(3):
        sink.send(f"kill {i}", {"MESSAGE_ID": MSG_KILL, "PRIORITY": "4"})
    assert not sink.flush(0.1)  # stuck: the caller was never held up
    gate.open.set()
    assert sink.flush(5)
    sink.close()
    messages = [e["MESSAGE"] for e in gate.inner.events]
    assert messages[0] == "first"
    assert [m for m in messages if m.startswith("kill")] == ["kill 0", "kill 1", "kill 2"]
    infos = [m for m in messages if m.startswith("info")]
    assert infos == ["info 5"]  # the oldest went first, to make room
    assert sink.dropped == 5
    warning = [e for e in gate.inner.events if e.get("GUARDIAN_DROPPED")]
    assert warning and warning[0]["GUARDIAN_DROPPED"] == "5" and warning[0]["MESSAGE_ID"] == MSG_LIFECYCLE


def test_a_sink_that_raises_does_not_end_the_sender() -> None:
    class Flaky(MemorySink):
        def send(self, message: str, fields: Mapping[str, Field]) -> None:
            if message == "boom":
                raise OSError("journald went away")
            super().send(message, fields)

    flaky = Flaky()
    sink = QueuedSink(flaky)
    Reporter(sink).lifecycle("boom")
    Reporter(sink).lifecycle("after")
    assert sink.flush(5)
    sink.close()
    assert [e["MESSAGE"] for e in flaky.events] == ["after"]


def test_every_outcome_is_documented() -> None:
    """The outcomes are Literal types (guardian/kinds.py): a new one cannot drift out of the
    README's GUARDIAN_OUTCOME row, nor out of the journal catalog, which names each one quoted
    or at the start of a line of its table."""
    readme, catalog = README.read_text(), CATALOG.read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `GUARDIAN_OUTCOME` |")]
    outcomes = (*get_args(OutcomeResult), *get_args(NotDone))
    assert [v for v in outcomes if f"`{v}`" not in row] == []
    named = [v for v in outcomes if re.search(rf'"{v}"|^ +{v} ', catalog, re.MULTILINE)]
    assert [v for v in outcomes if v not in named] == []


def emitted_fields() -> set[str]:
    """Every GUARDIAN_* journal field guardian can send, read from the code: the keys that
    guardian/report.py puts in a field mapping (a family such as GUARDIAN_SCORE_<SCORER> as its
    prefix and "<"), and the GUARDIAN_<KEYWORD> of every keyword passed to Reporter.lifecycle()."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((PACKAGE / "report.py").read_text())):
        keys: list[ast.expr] = []
        if isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            keys = [node.slice]
        for key in keys:
            if isinstance(key, ast.Constant) and str(key.value).startswith("GUARDIAN_"):
                found.add(str(key.value))
            elif isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
                prefix = str(key.values[0].value)
                if prefix.startswith("GUARDIAN_"):
                    found.add(f"{prefix}<")
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "lifecycle":
                found |= {f"GUARDIAN_{k.arg.upper()}" for k in node.keywords if k.arg and k.arg != "priority"}
    return found


def test_every_field_is_documented() -> None:
    """README's field table and the journal catalog name every field guardian can send, so a
    reader of ``journalctl -o verbose`` (or of the JSON lines) can look each one up."""
    fields = emitted_fields()
    # the scan sees what it must: plain keys, the families, and lifecycle's keywords
    assert {"GUARDIAN_OUTCOME", "GUARDIAN_SCORE_<", "GUARDIAN_DROPPED", "GUARDIAN_PID"} <= fields
    assert "GUARDIAN_LOG_FORMAT" not in fields  # an environment variable, not a field
    readme, catalog = README.read_text(), CATALOG.read_text()
    (section,) = re.findall(r"^## What guardian reports\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    for name, text in (("README.md", section), ("packaging/guardian.catalog", catalog)):
        # a family as GUARDIAN_SCORE_<SCORER>, a field whole (GUARDIAN_VICTIM_PID in _PIDS is not it)
        named = {f: rf"\b{f}[A-Z]+>" if f.endswith("<") else rf"\b{f}(?![A-Z0-9_])" for f in fields}
        missing = sorted(f for f, pattern in named.items() if not re.search(pattern, text))
        assert missing == [], f"{name} does not name {missing}"


def test_journald_gets_each_field_as_one_key_value_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    """JournalSink hands sd_journal_sendv() one "KEY=value" per field (binding's C core)."""
    import sys
    import types

    from guardian.report import JournalSink

    sent: list[tuple[str, ...]] = []
    core = types.ModuleType("systemd._journal")
    core.sendv = lambda *args: sent.append(args)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd._journal", core)
    JournalSink().send(
        "killed pid 1 (a\nb)", {"MESSAGE_ID": MSG_KILL, "GUARDIAN_VICTIM_PID": 1, "GUARDIAN_TOTAL": 712.5}
    )
    assert sent == [
        (
            "MESSAGE=killed pid 1 (a\\nb)",
            "SYSLOG_IDENTIFIER=guardian",
            f"MESSAGE_ID={MSG_KILL}",
            "GUARDIAN_VICTIM_PID=1",
            "GUARDIAN_TOTAL=712.5",
        )
    ]
