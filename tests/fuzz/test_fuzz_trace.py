"""Fuzz targets for traces (guardian record / replay).

* the reader, on a file whose frames are arbitrary bytes, or real frame lines (from the trace
  recorded in the end-to-end guest, tests/fixtures/traces/) with bytes flipped, inserted or
  cut, or the whole compressed file cut or corrupted anywhere. Property: frames, or TraceError;
  nothing else, never a hang.
* the replay, on a trace whose recorded files are hostile: one file of a frame (meminfo, PSI, a
  cgroup's memory files, a process's stat or status) replaced by arbitrary bytes, a mutation of
  itself, or an errno. Property: the replay ends with no error, and a tick that raised (as the
  daemon's does where, say, /proc/meminfo has no MemTotal line: it reports it and goes on) raised
  one of guardian's documented errors, never anything else.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.bounds import hard_timeout

from guardian.errors import GuardianError
from guardian.trace.fileformat import TraceError, TraceReader
from guardian.trace.replay import replay

GUEST = Path(__file__).parent.parent / "fixtures" / "traces" / "record-replay"
LINES = gzip.decompress((GUEST / "episode.trace").read_bytes()).splitlines(keepends=True)
HEADER, FRAMES = LINES[0], LINES[1:]
EXAMPLE_TIMEOUT_S = 30


def _subclasses(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_subclasses(c) for c in cls.__subclasses__()))


DOCUMENTED = _subclasses(GuardianError)
# a replay of the guest trace takes about a second: a thirtieth of the profile's examples
REPLAY_EXAMPLES = max(10, settings().max_examples // 30)


def _read_all(path: Path) -> None:
    with hard_timeout(EXAMPLE_TIMEOUT_S):
        try:
            reader = TraceReader(str(path))
        except TraceError:
            return
        try:
            for _ in reader.frames():
                pass
        except TraceError:
            pass
        finally:
            reader.close()


def _mutated(data: st.DataObject, line: bytes) -> bytes:
    out = bytearray(line)
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, max(0, len(out) - 1)))
        how = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if how == "flip" and out:
            out[where] ^= data.draw(st.integers(1, 255))
        elif how == "insert":
            out[where:where] = data.draw(st.binary(min_size=1, max_size=12))
        else:
            del out[where : where + data.draw(st.integers(1, 40))]
    return bytes(out)


@given(frames=st.lists(st.binary(max_size=200), max_size=4))
def test_reader_on_arbitrary_frames(tmp_path_factory: pytest.TempPathFactory, frames: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("t") / "x.trace"
    path.write_bytes(gzip.compress(HEADER + b"".join(frames)))
    _read_all(path)


@given(data=st.data())
def test_reader_on_mutated_real_frames(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, 11))  # the first frame holds every kind of answer
    lines = [HEADER, *FRAMES[:index], _mutated(data, FRAMES[index])]
    path = tmp_path_factory.mktemp("t") / "x.trace"
    path.write_bytes(gzip.compress(b"".join(lines)))
    _read_all(path)


@given(data=st.data())
def test_reader_on_a_cut_or_corrupt_file(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    raw = gzip.compress(b"".join([HEADER, *FRAMES[:4]]))
    raw = _mutated(data, raw)[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("t") / "x.trace"
    path.write_bytes(raw)
    _read_all(path)


HOSTILE_PATHS = (
    b"/proc/meminfo",
    b"/proc/vmstat",
    b"/proc/pressure/memory",
    b"/sys/fs/cgroup/system.slice/walker.service/memory.current",
    b"/sys/fs/cgroup/system.slice/walker.service/memory.max",
    b"/sys/fs/cgroup/system.slice/walker.service/memory.events",
    b"/sys/fs/cgroup/system.slice/walker.service/memory.stat",
    b"/sys/fs/cgroup/system.slice/walker.service/cgroup.procs",
    b"/proc/381/stat",
    b"/proc/381/status",
    b"/proc/381/cgroup",
    b"/proc/self/mountinfo",
)


def _line_with(frame: dict[str, object], path: bytes, value: object) -> bytes:
    files = dict(frame.get("file", {}))  # type: ignore[call-overload]
    files[path.decode("latin-1")] = value
    return json.dumps({**frame, "file": files}).encode("ascii") + b"\n"


@settings(max_examples=REPLAY_EXAMPLES)
@given(data=st.data())
def test_replay_on_hostile_recorded_files(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, 70))  # the trigger is at frame 61
    path = data.draw(st.sampled_from(HOSTILE_PATHS))
    frame = json.loads(FRAMES[index])
    old = frame.get("file", {}).get(path.decode("latin-1"), "")
    value = data.draw(
        st.one_of(
            st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
            st.just(_mutated(data, old.encode("latin-1") if isinstance(old, str) else b"").decode("latin-1")),
            st.integers(1, 200),  # an errno
        )
    )
    lines = [HEADER, *FRAMES[:index], _line_with(frame, path, value), *FRAMES[index + 1 :]]
    trace = tmp_path_factory.mktemp("t") / "x.trace"
    trace.write_bytes(gzip.compress(b"".join(lines)))
    with hard_timeout(EXAMPLE_TIMEOUT_S):
        reader = TraceReader(str(trace))
        try:
            result = replay(reader, str(GUEST / "policy.toml"))
        finally:
            reader.close()
    assert result.error is None
    for event in result.events:
        if event["kind"] == "tick-failed":
            kind = str(event["message"]).removeprefix("the tick failed: ").split(":", 1)[0]
            assert kind in DOCUMENTED, event["message"]
