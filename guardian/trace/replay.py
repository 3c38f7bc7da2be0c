"""``guardian replay``: a trace through a policy, by the daemon's own Engine.

Each frame is applied to a TraceHost, the recorded clock is set to the frame's time, and
Engine.tick() runs as it does in the daemon, in dry-run mode: the triggers, the choice of
victim, the re-check, cooldowns and escalation are the daemon's code. Kills are not performed
(a dry run's Killer signals nothing, and a TraceHost is never live); after a would-be kill the
trace goes on as it was recorded: the recorded machine did what it did, so memory recovers in a
replay only where it recovered on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from guardian.clock import Clock
from guardian.daemon.engine import Engine
from guardian.daemon.wakeups import Wake
from guardian.loaded import Loaded, load
from guardian.report import MSG_DRY_RUN, MSG_KILL, MSG_LIFECYCLE, MSG_NOT_DONE, Field, Reporter
from guardian.text import shown
from guardian.trace.fileformat import Frame, TraceError, TraceReader
from guardian.trace.hosts import TraceHost


class RecordedClock(Clock):
    """The time of the frame being replayed; sleeping is not how a replay moves on."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def monotonic_us(self) -> int:
        return self.now_us

    def sleep(self, seconds: float) -> None:
        return None


class _Collect:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Field]]] = []

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        self.sent.append((message, dict(fields)))


Event = dict[str, Union[str, int, float, None]]


@dataclass
class Replayed:
    frames: int = 0
    first_us: Optional[int] = None
    last_us: Optional[int] = None
    events: list[Event] = field(default_factory=list)
    error: Optional[TraceError] = None  # the trace ended in a bad frame after ``frames`` good ones


def _trigger_event(
    kind: str,
    frame: Frame,
    start_us: int,
    rule: str,
    scope: Optional[str],
    condition: str,
    level: Optional[str],
    reason: str,
) -> Event:
    return {
        "kind": kind,
        "frame": frame.index,
        "t_s": round((frame.time_us - start_us) / 1e6, 3),
        "rule": rule,
        "scope": scope or "/",
        "condition": condition,
        "level": level,
        "reason": reason,
    }


def _decision_event(
    frame: Frame, start_us: int, message: str, fields: Mapping[str, Field], facts_frame: Optional[Frame]
) -> Optional[Event]:
    message_id = fields.get("MESSAGE_ID")
    base: Event = {
        "frame": frame.index,
        "t_s": round((frame.time_us - start_us) / 1e6, 3),
        "message": message,
    }
    if message_id in (MSG_DRY_RUN, MSG_KILL):
        pid = fields.get("GUARDIAN_VICTIM_PID")
        comm = fields.get("GUARDIAN_VICTIM_COMM")
        total = fields.get("GUARDIAN_TOTAL")
        rss = fields.get("GUARDIAN_VICTIM_RSS_BYTES")
        base.update(
            kind="kill",
            action=str(fields.get("GUARDIAN_ACTION", "")),
            level=str(fields.get("GUARDIAN_LEVEL", "")),
            trigger=str(fields.get("GUARDIAN_TRIGGER", "")),
            scope=str(fields.get("GUARDIAN_SCOPE", "/")),
            victim_pid=pid if isinstance(pid, int) else None,
            victim_comm=comm if isinstance(comm, str) else None,
            victim_cgroup=str(fields.get("GUARDIAN_VICTIM_CGROUP", "/")),
            victim_rss_bytes=rss if isinstance(rss, int) else None,
            score=total if isinstance(total, (int, float)) else None,
            facts_frame=None if facts_frame is None else facts_frame.index,
            facts_age_s=None
            if facts_frame is None
            else round((frame.time_us - facts_frame.time_us) / 1e6, 3),
        )
        return base
    if message_id == MSG_NOT_DONE:
        base.update(
            kind="no-kill",
            trigger=str(fields.get("GUARDIAN_TRIGGER", "")),
            scope=str(fields.get("GUARDIAN_SCOPE", "/")),
            detail=str(fields.get("GUARDIAN_DETAIL", "")),
        )
        return base
    if message_id == MSG_LIFECYCLE:
        base.update(kind="note")
        return base
    return None


def _tree_changed(host: TraceHost, frame: Frame) -> bool:
    """A directory of a cgroup hierarchy changed in this frame."""
    layout = host.cgroup_layout()
    mounts = [os.fsencode(m.mount_point) for m in (layout.v2_mount, layout.v1_memory_mount) if m is not None]
    return any(path.startswith(tuple(mounts)) for path in frame.delta.maps["dir"]) if mounts else False


def replay(
    reader: TraceReader,
    policy_path: Optional[str],
    on_event: Callable[[Event], None] = lambda event: None,
) -> Replayed:
    """Run the policy over every frame of the trace. A bad frame ends the replay: the frames
    before it are replayed and the error is returned with the result, not raised."""
    header = reader.header
    host = TraceHost(reader.path, header.self_pid)
    clock = RecordedClock(header.time_us)
    loaded: Loaded = load(host, policy_path, dry_run=True)
    sink = _Collect()
    engine = Engine(host, loaded, Reporter(sink), clock)
    done = Replayed()
    on: dict[tuple[str, Optional[str], str], str] = {}
    facts: Optional[Frame] = None

    def emit(event: Event) -> None:
        done.events.append(event)
        on_event(event)

    try:
        for frame in reader.frames():
            host.apply(frame.delta)
            if frame.processes:
                facts = frame
            clock.now_us = frame.time_us
            if _tree_changed(host, frame):
                # what the daemon's inotify watch on the rules' directories tells it: a group
                # came or went, rescan now (not at the next RESCAN_S)
                engine.woke(Wake(cgroups=True), frame.time_us)
            done.first_us = frame.time_us if done.first_us is None else done.first_us
            done.last_us = frame.time_us
            done.frames += 1
            try:
                result = engine.tick(frame.time_us)
            except Exception as exc:  # as the daemon's loop does (service.py _tick_failed): said, and on
                emit(
                    {
                        "kind": "tick-failed",
                        "frame": frame.index,
                        "t_s": round((frame.time_us - header.time_us) / 1e6, 3),
                        "message": f"the tick failed: {type(exc).__name__}: {exc}",
                    }
                )
                continue
            now = {t.key: t for t in result.assessment.triggers}
            for key, trigger in now.items():
                if on.get(key) != trigger.level:
                    emit(
                        _trigger_event(
                            "trigger",
                            frame,
                            header.time_us,
                            trigger.rule,
                            trigger.scope,
                            trigger.condition,
                            trigger.level,
                            trigger.reason,
                        )
                    )
            for key in [k for k in on if k not in now]:
                emit(_trigger_event("cleared", frame, header.time_us, key[0], key[1], key[2], None, ""))
            on = {k: t.level for k, t in now.items()}
            for message, fields in sink.sent:
                event = _decision_event(frame, header.time_us, message, fields, facts)
                if event is not None:
                    emit(event)
            sink.sent.clear()
    except TraceError as exc:
        done.error = exc
    finally:
        engine.close()
    return done


def render_event(event: Event) -> str:
    """One line of the text output."""
    t_s = event["t_s"]
    head = f"{t_s:>+9.2f}s  frame {event['frame']:<5}"
    kind = event["kind"]
    where = f"{event.get('rule')}:{event.get('condition')} in {shown(str(event.get('scope')))}"
    if kind == "trigger":
        return f"{head} {event['level']:<4} {where}: {shown(str(event['reason']))}"
    if kind == "cleared":
        return f"{head} clear {where}"
    if kind == "kill":
        age = event.get("facts_age_s")
        facts = "" if not age else f" (process facts {age:g} s old, frame {event['facts_frame']})"
        return f"{head} {shown(str(event['message']))}{facts}"
    return f"{head} {kind}: {shown(str(event['message']))}"


def summary(result: Replayed, trace: str) -> dict[str, Any]:
    kills = [e for e in result.events if e["kind"] == "kill"]
    span = 0.0
    if result.first_us is not None and result.last_us is not None:
        span = (result.last_us - result.first_us) / 1e6
    return {
        "trace": trace,
        "frames": result.frames,
        "span_s": round(span, 3),
        "triggers": sum(1 for e in result.events if e["kind"] == "trigger"),
        "kills": len(kills),
        "victims": [
            {
                "frame": e["frame"],
                "t_s": e["t_s"],
                "level": e["level"],
                "action": e["action"],
                "pid": e["victim_pid"],
                "comm": e["victim_comm"],
                "cgroup": e["victim_cgroup"],
            }
            for e in kills
        ],
        "error": None if result.error is None else str(result.error),
    }
