"""guardian record and replay: the round trip on fixture roots, a machine whose memory falls
frame by frame, a short live recording, and traces that are truncated, corrupt or hostile."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from conftest import fixture_root
from fixtures.builder import FakeRoot
from support.clock import FakeClock

from guardian.cli import EXIT_ERROR, EXIT_OK, main
from guardian.loaded import load
from guardian.trace.fileformat import TraceReader
from guardian.trace.hosts import RecordingHost, TraceHost
from guardian.trace.record import record
from guardian.trace.replay import replay

GiB_KB = 1024 * 1024

# every reading of the machine is a trigger at KILL: the first decision is the ranking's top
HOT = """
cooldown_s = 1.0
[machine]
mem_available = { term = "99%", kill = "98%" }
swap_free = { term = "100%", kill = "100%" }
[plugins]
entry_points = false
"""

FALLING = """
cooldown_s = 3.0
[machine]
mem_available = { term = "20%", kill = "10%" }
swap_free = { term = "100%", kill = "100%" }

[plugins]
entry_points = false
"""

CALM = """
[machine]
mem_available = { term = "0.01%", kill = "0.005%" }
swap_free = { term = "0.01%", kill = "0.005%" }

[plugins]
entry_points = false
"""


def policy_file(tmp_path: Path, text: str, name: str = "policy.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str], clock: Optional[FakeClock] = None
) -> tuple[int, str, str]:
    code = main(argv, clock or FakeClock())
    out, err = capsys.readouterr()
    return code, out, err


def replay_json(capsys: pytest.CaptureFixture[str], trace: Path, policy: str) -> dict[str, Any]:
    code, out, err = run(capsys, ["replay", str(trace), "--policy", policy, "--json"])
    assert code == EXIT_OK, err
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.mark.parametrize("name", ["v2-systemd", "hybrid", "k8s-node"])
def test_round_trip_on_a_fixture_root_decides_as_rank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    root = fixture_root(name)
    policy = policy_file(tmp_path, HOT)
    trace = tmp_path / "fixture.trace"
    code, _, err = run(
        capsys,
        [
            "record",
            "--root",
            str(root),
            "--out",
            str(trace),
            "--duration",
            "2",
            "--interval",
            "1",
            "--policy",
            policy,
        ],
    )
    assert code == EXIT_OK, err
    assert "3 frames (3 with process facts)" in err  # every frame is at a line of HOT
    assert os.stat(trace).st_mode & 0o777 == 0o600

    code, out, err = run(
        capsys, ["rank", "--root", str(root), "--policy", policy, "--json", "--interval", "0"]
    )
    assert code == EXIT_OK, err
    top = json.loads(out)["candidates"][0]

    report = replay_json(capsys, trace, policy)
    assert report["frames"] == 3 and report["error"] is None
    first = report["victims"][0]
    assert (first["frame"], first["level"], first["action"]) == (0, "KILL", "kill")
    assert (first["pid"], first["comm"], first["cgroup"]) == (top["pid"], top["comm"], top["cgroup"])
    kills = [e for e in report["events"] if e["kind"] == "kill"]
    assert kills[0]["score"] == pytest.approx(top["total"])


class FallingClock(FakeClock):
    """A clock whose every sleep is a step of the machine: ``step(i)`` rewrites it for frame i."""

    def __init__(self, step: Callable[[int], None]) -> None:
        super().__init__()
        self.step = step
        self.frame = 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.frame += 1
        self.step(self.frame)


# MemAvailable in % of 16 GiB, frame by frame (one frame a second)
AVAILABLE_PCT = [50, 40, 30, 18, 17, 16, 8, 7]


def falling_machine(path: Path) -> FakeRoot:
    root = FakeRoot(path)
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=16 * GiB_KB * AVAILABLE_PCT[0] // 100)
    root.psi("memory")
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(
        400, "hog", rss_anon_kb=6 * GiB_KB, cgroup_v2="/user.slice/hog.scope", cmdline=["hog", "--eat"]
    )
    root.process(410, "editor", rss_anon_kb=300 * 1024, cgroup_v2="/user.slice/editor.scope")
    root.process(500, "db", rss_anon_kb=GiB_KB, cgroup_v2="/system.slice/db.service", oom_score_adj=-500)
    root.finish()
    return root


def record_falling(tmp_path: Path, policy: str) -> Path:
    root = falling_machine(tmp_path / "root")

    def step(frame: int) -> None:
        if frame < len(AVAILABLE_PCT):
            root.meminfo(total_kb=16 * GiB_KB, available_kb=16 * GiB_KB * AVAILABLE_PCT[frame] // 100)
            root.finish()

    host = RecordingHost(root.root)
    trace = tmp_path / "falling.trace"
    with open(trace, "wb") as out:
        done = record(
            host,
            load(host, policy, dry_run=True),
            out,
            FallingClock(step),
            interval_s=1.0,
            duration_s=len(AVAILABLE_PCT) - 1,
            processes_every=100,
            max_bytes=1 << 30,
        )
    assert done.frames == len(AVAILABLE_PCT)
    return trace


def test_falling_memory_fires_term_then_kill_at_the_right_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = policy_file(tmp_path, FALLING)
    trace = record_falling(tmp_path, policy)
    report = replay_json(capsys, trace, policy)
    triggers = [(e["frame"], e["level"]) for e in report["events"] if e["kind"] == "trigger"]
    # 18 % crosses TERM (20 %) at frame 3; 8 % crosses KILL (10 %) at frame 6
    assert triggers == [(3, "TERM"), (6, "KILL")]
    # TERM at once; the dry run's cooldown (3 s) holds at both levels, as a real kill's would
    # while memory recovered, so the KILL level acts when it is over, at frame 6
    victims = [(v["frame"], v["level"], v["action"], v["pid"], v["comm"]) for v in report["victims"]]
    assert victims == [(3, "TERM", "term", 400, "hog"), (6, "KILL", "kill", 400, "hog")]
    # process facts were read at frame 0 and from frame 2 on (MemAvailable within twice the line)
    kill = next(e for e in report["events"] if e["kind"] == "kill")
    assert kill["facts_frame"] == 3 and kill["facts_age_s"] == 0


def test_replay_text_says_when_and_whom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = policy_file(tmp_path, FALLING)
    trace = record_falling(tmp_path, policy)
    code, out, err = run(capsys, ["replay", str(trace), "--policy", policy])
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert "nothing is killed" in lines[1] and "the recorded machine did what it did" in lines[1]
    assert any(line.split()[:4] == ["+3.00s", "frame", "3", "TERM"] for line in lines)
    assert any("would term pid 400 (hog)" in line and "frame 3" in line for line in lines)
    assert any("would kill pid 400 (hog)" in line and "frame 6" in line for line in lines)
    assert lines[-1].startswith(
        "8 frames over 7 s: 2 trigger(s), 2 would-be kill(s): term pid 400 (hog) at +3.00s"
    )


def test_a_calm_policy_fires_nothing_on_the_same_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = record_falling(tmp_path, policy_file(tmp_path, FALLING))
    report = replay_json(capsys, trace, policy_file(tmp_path, CALM, "calm.toml"))
    assert (report["frames"], report["triggers"], report["kills"]) == (8, 0, 0)


def test_non_utf8_names_survive_the_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=8 * GiB_KB)
    root.psi("memory")
    group = os.fsdecode(b"/user.slice/caf\xe9-\xff.scope")
    comm = os.fsdecode(b"h\xffg\xc3")
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(700, comm, rss_anon_kb=4 * GiB_KB, cgroup_v2=group)
    root.finish()
    policy = policy_file(tmp_path, HOT)
    trace = tmp_path / "names.trace"
    code, _, err = run(
        capsys,
        ["record", "--root", str(root.root), "--out", str(trace), "--duration", "1", "--policy", policy],
    )
    assert code == EXIT_OK, err
    reader = TraceReader(str(trace))
    try:
        result = replay(reader, policy)
    finally:
        reader.close()
    kill = next(e for e in result.events if e["kind"] == "kill")
    assert (kill["victim_pid"], kill["victim_comm"], kill["victim_cgroup"]) == (700, comm, group)


@pytest.mark.live
def test_a_live_recording_replays_calm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc here")
    trace = tmp_path / "live.trace"
    calm = policy_file(tmp_path, CALM, "calm.toml")
    code = main(["record", "--out", str(trace), "--duration", "2", "--interval", "0.5", "--policy", calm])
    _, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert err.startswith("guardian record: 5 frames (1 with process facts)")
    report = replay_json(capsys, trace, calm)
    assert (report["frames"], report["triggers"], report["kills"], report["error"]) == (5, 0, 0, None)
    assert report["span_s"] == pytest.approx(2.0, abs=0.5)
    # the replay read the host's processes from the trace: ranking them was possible
    reader = TraceReader(str(trace))
    try:
        frames = list(reader.frames())
    finally:
        reader.close()
    assert frames[0].processes and not any(f.processes for f in frames[1:])
    assert any(path.startswith(b"/proc/1/") for path in frames[0].delta.maps["file"])


# --- hostile traces ------------------------------------------------------------------------------


def good_trace(tmp_path: Path) -> Path:
    return record_falling(tmp_path, policy_file(tmp_path, FALLING))


def lines_of(trace: Path) -> list[bytes]:
    return gzip.decompress(trace.read_bytes()).splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


def replay_error(capsys: pytest.CaptureFixture[str], trace: Path, policy: str) -> str:
    code, _, err = run(capsys, ["replay", str(trace), "--policy", policy])
    assert code == EXIT_ERROR
    assert "Traceback" not in err
    return err.strip()


def test_a_truncated_trace_replays_its_whole_frames_then_says_where_it_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = policy_file(tmp_path, FALLING)
    trace = good_trace(tmp_path)
    data = trace.read_bytes()
    cut = tmp_path / "cut.trace"
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, out, err = run(capsys, ["replay", str(cut), "--policy", policy])
    assert code == EXIT_ERROR and "Traceback" not in err
    assert err.startswith(f"guardian replay: {cut}: frame ")
    assert err.rstrip().endswith("the file ends in the middle of a frame (truncated)")
    assert "frames over" in out.splitlines()[-1]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f.replace(b'"t":', b'"t":1' + b"9" * 5000 + b',"x":'), "not a JSON object"),
        (lambda f: f.replace(b'"t":', b'"t":99999999999999999999999,"q":'), "unknown key"),
        (
            lambda f: b'{"t":99999999999999999999999,"processes":false}\n',
            "t: 99999999999999999999999 is out of range",
        ),
        (lambda f: b'{"t":1e400,"processes":false}\n', "t: expected a whole number"),
        (lambda f: b'{"t":5000000,"processes":false,"file":{"/proc/meminfo":"\\u0100"}}\n', "above \\u00ff"),
        (
            lambda f: b'{"t":5000000,"processes":false,"file":{"/proc/meminfo":99999}}\n',
            "errno: 99999 is out of range",
        ),
        (lambda f: b'{"t":5000000,"processes":false,"dir":{"/proc":["../x"]}}\n', "is not a file name"),
        (
            lambda f: b'{"t":5000000,"processes":false,"file":{"proc/meminfo":""}}\n',
            "is not an absolute path",
        ),
        (lambda f: b'{"t":0,"processes":false}\n', "earlier than the frame before"),
        (lambda f: b"[1, 2]\n", "not a JSON object"),
        (lambda f: b"\xff\xfe\n", "not a JSON object"),
        (lambda f: b"[" * 100_000 + b"\n", "nested too deeply"),
    ],
    ids=[
        "5000-digit-number",
        "unknown-key",
        "time-overflow",
        "time-infinite",
        "not-a-byte",
        "errno-overflow",
        "dot-dot-name",
        "relative-path",
        "time-backwards",
        "a-list",
        "not-utf8",
        "deep-nesting",
    ],
)
def test_a_bad_frame_is_named_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Callable[[bytes], bytes], reason: str
) -> None:
    policy = policy_file(tmp_path, FALLING)
    lines = lines_of(good_trace(tmp_path))
    lines[3] = change(lines[3])  # the header, then frames 0, 1, 2: frame 2 is bad
    bad = write_lines(tmp_path / "bad.trace", lines)
    err = replay_error(capsys, bad, policy)
    assert err.startswith(f"guardian replay: {bad}: frame 2: ")
    assert reason in err


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "header: the file is empty"),
        (b"not gzip at all", "header: not a readable gzip stream"),
        (gzip.compress(b""), "header: the file is empty"),
        (gzip.compress(b'{"format":"something else"}\n'), "header: not a guardian-trace file"),
        (gzip.compress(b'{"format":"guardian-trace","version":99}\n'), "header: version 99"),
        (gzip.compress(b'{"format":"guardian-trace","version":1}'), "header: the file ends in the middle"),
        (gzip.compress(b'{"a":' * 50_000 + b"\n"), "header: not a JSON object: nested too deeply"),
    ],
    ids=["empty", "not-gzip", "no-lines", "other-format", "other-version", "truncated", "deep-nesting"],
)
def test_a_bad_header_is_named_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, reason: str
) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_bytes(content)
    err = replay_error(capsys, bad, policy_file(tmp_path, FALLING))
    assert err.startswith(f"guardian replay: {bad}: ")
    assert reason in err


def test_a_missing_trace_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = replay_error(capsys, tmp_path / "none.trace", policy_file(tmp_path, FALLING))
    assert err == f"guardian replay: {tmp_path / 'none.trace'}: header: No such file or directory"


def test_frames_hold_only_what_changed(tmp_path: Path) -> None:
    trace = good_trace(tmp_path)
    reader = TraceReader(str(trace))
    try:
        frames = list(reader.frames())
    finally:
        reader.close()
    # frame 1 changes meminfo alone (and nothing the processes say: they are not read)
    assert set(frames[1].delta.maps["file"]) == {b"/proc/meminfo"}
    assert not any(frames[1].delta.maps[op] for op in ("dir", "link", "kind", "xattr"))
    assert len(frames[0].delta) > 20


def test_record_rejects_a_zero_interval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["record", "--out", str(tmp_path / "x"), "--interval", "0"], FakeClock())
    assert exc.value.code == 2
    assert "expected a number above 0" in capsys.readouterr().err


def test_the_writer_stops_at_the_size_limit(tmp_path: Path) -> None:
    root = falling_machine(tmp_path / "root")
    host = RecordingHost(root.root)
    out = io.BytesIO()
    done = record(
        host,
        load(host, None, dry_run=True),
        out,
        FakeClock(),
        interval_s=1.0,
        duration_s=100.0,
        processes_every=1,
        max_bytes=1,
    )
    assert done.frames == 1 and "size limit of 1 bytes" in done.stopped


HEADROOM = """
cooldown_s = 3.0
[machine]
mem_available = { term = "0.01%", kill = "0.005%" }
swap_free = { term = "0.01%", kill = "0.005%" }
[[cgroup]]
match = "system.slice/*.service"
min_headroom = { term = "10%", kill = "4%" }
[plugins]
entry_points = false
"""

# the service's process, MiB, frame by frame (None: the service does not exist yet)
GROWER_MIB = [None, None, 500, 800, 950, 960]


def test_a_group_that_appears_is_watched_from_the_frame_it_appears(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=8 * GiB_KB)
    root.psi("memory")
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(600, "steady", rss_anon_kb=GiB_KB, cgroup_v2="/system.slice/steady.service")
    root.cgroup_v2("/system.slice/steady.service", max=4 << 30)
    root.finish()

    def step(frame: int) -> None:
        mib = GROWER_MIB[frame] if frame < len(GROWER_MIB) else None
        if mib is not None:
            root.cgroup_v2("/system.slice/grow.service", max=1 << 30)
            root.process(610, "grower", rss_anon_kb=mib * 1024, cgroup_v2="/system.slice/grow.service")
            root.finish()

    policy = policy_file(tmp_path, HEADROOM)
    host = RecordingHost(root.root)
    trace = tmp_path / "grow.trace"
    with open(trace, "wb") as out:
        record(
            host, load(host, policy, dry_run=True), out, FallingClock(step),
            interval_s=1.0, duration_s=len(GROWER_MIB) - 1, processes_every=100, max_bytes=1 << 30,
        )  # fmt: skip
    report = replay_json(capsys, trace, policy)
    # the daemon's inotify watch tells it of a new group at once; the replay rescans when the
    # tree changes in a frame, not 30 s later: 950 of 1024 MiB is under the 10 % headroom
    triggers = [(e["frame"], e["level"], e["scope"]) for e in report["events"] if e["kind"] == "trigger"]
    assert triggers == [(4, "TERM", "/system.slice/grow.service")]
    victims = [(v["frame"], v["pid"], v["comm"]) for v in report["victims"]]
    assert victims == [(4, 610, "grower")]


def test_every_key_of_the_json_report_is_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = policy_file(tmp_path, FALLING)
    report = replay_json(capsys, record_falling(tmp_path, policy), policy)
    keys = set(report) | {k for v in report["victims"] for k in v} | {k for e in report["events"] for k in e}
    keys |= {e["kind"] for e in report["events"]}
    doc = (Path(__file__).parent.parent / "docs" / "trace.md").read_text()
    assert sorted(k for k in keys if f"`{k}`" not in doc) == []


def test_a_tick_that_raises_is_reported_and_the_replay_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardian.daemon.engine import Engine

    policy = policy_file(tmp_path, FALLING)
    trace = record_falling(tmp_path, policy)
    real_tick = Engine.tick

    def tick(self: Engine, now_us: Optional[int] = None) -> Any:
        if now_us == 2_000_000:  # frame 1 (the recording's clock starts at 1 s)
            raise RuntimeError("a reader met something new")
        return real_tick(self, now_us)

    monkeypatch.setattr(Engine, "tick", tick)
    report = replay_json(capsys, trace, policy)
    failed = [e for e in report["events"] if e["kind"] == "tick-failed"]
    assert [(e["frame"], e["message"]) for e in failed] == [
        (1, "the tick failed: RuntimeError: a reader met something new")
    ]
    assert report["frames"] == 8 and [v["frame"] for v in report["victims"]] == [3, 6]


GUEST = Path(__file__).parent / "fixtures" / "traces" / "record-replay"


def test_a_trace_recorded_in_the_guest_replays_to_the_daemons_decision(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the guest's daemon had no plugin but guardian's own: neither has this replay
    monkeypatch.setenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", "1")
    live = json.loads((GUEST / "live.json").read_text())
    report = replay_json(capsys, GUEST / "episode.trace", str(GUEST / "policy.toml"))
    assert report["error"] is None and report["frames"] == 91
    first = report["victims"][0]
    assert (first["pid"], first["comm"], first["cgroup"]) == (
        int(live["GUARDIAN_VICTIM_PID"]),
        live["GUARDIAN_VICTIM_COMM"],
        live["GUARDIAN_VICTIM_CGROUP"],
    )
    kill = next(e for e in report["events"] if e["kind"] == "kill")
    assert (kill["trigger"], kill["level"], kill["scope"]) == (
        live["GUARDIAN_TRIGGER"],
        live["GUARDIAN_LEVEL"],
        live["GUARDIAN_SCOPE"],
    )
    # the facts the decision used are the frame's own: the group was past half its limit
    assert kill["facts_age_s"] == 0


def test_a_process_that_exits_is_forgotten_by_the_writer_and_the_reader(tmp_path: Path) -> None:
    root = falling_machine(tmp_path / "root")

    def step(frame: int) -> None:
        if frame == 2:
            root.remove("proc/410")  # the editor exits

    host = RecordingHost(root.root)
    trace = tmp_path / "exit.trace"
    with open(trace, "wb") as out:
        record(
            host, load(host, policy_file(tmp_path, FALLING), dry_run=True), out, FallingClock(step),
            interval_s=1.0, duration_s=3.0, processes_every=1, max_bytes=1 << 30,
        )  # fmt: skip
    reader = TraceReader(str(trace))
    try:
        frames = list(reader.frames())
    finally:
        reader.close()
    state = TraceHost(str(trace), -1)
    for frame in frames[:2]:
        state.apply(frame.delta)
    assert any(p.startswith(b"/proc/410/") for p in state.state.maps["file"])
    state.apply(frames[2].delta)
    assert not any(p.startswith(b"/proc/410/") for m in state.state.maps.values() for p in m)
    assert any(p.startswith(b"/proc/400/") for p in state.state.maps["file"])
    # frame 3 (nothing changed in the processes) is no bigger for it: the writer forgot 410 too
    assert not any(p.startswith(b"/proc/410") for p in frames[3].delta.maps["file"])


def test_a_more_eager_policy_fires_earlier_on_the_guest_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", "1")
    shipped = (GUEST / "policy.toml").read_text()
    line = 'min_headroom = { term = "10%", kill = "4%" }'
    assert shipped.count(line) == 1
    eager = policy_file(tmp_path, shipped.replace(line, 'min_headroom = { term = "25%", kill = "4%" }'))
    as_shipped = replay_json(capsys, GUEST / "episode.trace", str(GUEST / "policy.toml"))["victims"][0]
    earlier = replay_json(capsys, GUEST / "episode.trace", eager)["victims"][0]
    assert earlier["pid"] == as_shipped["pid"]
    assert earlier["frame"] < as_shipped["frame"] and earlier["t_s"] < as_shipped["t_s"] - 2
