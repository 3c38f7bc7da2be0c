"""The trace file: a gzip stream of JSON lines, a header and then one line per frame.

Every string in a trace is a byte string written as ISO-8859-1 (each byte the code point of the
same value, which JSON writes as ``\\u00XX`` above 0x7f): kernel files, cgroup names, comm and
cmdline may be any bytes, and this carries them exactly without Python's surrogate escapes.
The format is described for operators and other tools in docs/trace.md; keep the two together.

A frame holds, for each kind of read (``OPS``), the paths whose answer changed since the
previous frame, each with its answer or, as a number, the errno the read failed with. A reader
applies each frame on top of the ones before (Observations.apply).

Reading is strict and says where: a truncated or corrupt file, a line that is not a frame, a
number out of range raise TraceError naming the file, the frame and the reason.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Optional, Union

from guardian import host
from guardian.errors import GuardianError
from guardian.frozen import frozen
from guardian.text import shown

FORMAT = "guardian-trace"
VERSION = 1
MAX_LINE_BYTES = 16 << 20  # one frame, uncompressed: a frame of every process of a large host
# is a few MiB (docs/trace.md, "Cost"); a longer line is a corrupt file, not a frame
MAX_ERRNO = 4095  # the kernel's MAX_ERRNO
MAX_TIME_US = (1 << 63) - 1  # CLOCK_MONOTONIC in microseconds fits an int64

# the reads a frame records, each a map of path -> answer (or errno):
#   file   the contents of a file (bytes)
#   dir    the entries of a directory: names, a directory's with a trailing "/"
#   link   the target of a symbolic link
#   kind   whether a path is a directory ("d"), another file ("f"), or absent ("-")
#   xattr  the names of the extended attributes that are set on a root-owned directory
OPS = ("file", "dir", "link", "kind", "xattr")

PROC = os.fsencode(host.PROC)  # traces hold the machine's paths
PROC_PREFIX = PROC + b"/"

Answer = Union[bytes, int, tuple[tuple[bytes, bool], ...], str, frozenset[bytes]]


class TraceError(GuardianError):
    """A trace file that cannot be read: where, and why."""

    def __init__(self, path: str, frame: Optional[int], reason: str) -> None:
        where = "header" if frame is None else f"frame {frame}"
        super().__init__(f"{shown(path)}: {where}: {reason}")
        self.frame = frame
        self.reason = reason


@dataclass
class Observations:
    """Answers by kind of read and path (bytes). A frame's delta, or the state they add up to."""

    maps: dict[str, dict[bytes, Answer]] = field(default_factory=lambda: {op: {} for op in OPS})

    def note(self, op: str, path: bytes, answer: Answer) -> None:
        self.maps[op][path] = answer

    def get(self, op: str, path: bytes) -> Optional[Answer]:
        return self.maps[op].get(path)

    def apply(self, delta: Observations) -> None:
        """Add a frame. A frame that lists /proc anew also forgets every process that is not in
        the listing: the writer and the reader both apply each frame this way, so the state
        each keeps (and what a frame is a change against) stays the same on both sides, and
        neither grows with every process that ever ran."""
        for op in OPS:
            self.maps[op].update(delta.maps[op])
        if PROC in delta.maps["dir"]:
            self._forget_gone_processes()

    def _forget_gone_processes(self) -> None:
        listing = self.maps["dir"].get(PROC)
        live = {name for name, _ in listing} if isinstance(listing, tuple) else set()
        for entries in self.maps.values():
            gone = [
                path
                for path in entries
                if path.startswith(PROC_PREFIX)
                and (pid := path[len(PROC_PREFIX) :].split(b"/", 1)[0]).isdigit()
                and pid not in live
            ]
            for path in gone:
                del entries[path]

    def changed_since(self, before: Observations) -> Observations:
        """What ``before`` (the state after the previous frame) lacks or holds differently."""
        out = Observations()
        for op in OPS:
            old = before.maps[op]
            out.maps[op] = {k: v for k, v in self.maps[op].items() if old.get(k, _MISSING) != v}
        return out

    def __len__(self) -> int:
        return sum(len(m) for m in self.maps.values())


_MISSING = object()


@frozen
class Header:
    """The first line: what was recorded, where, and how."""

    time_us: int  # CLOCK_MONOTONIC of the recording's start
    started: str  # wall clock, ISO 8601 UTC, for the operator
    interval_s: float
    processes_every: int
    self_pid: int  # the recorder's pid on the recorded machine (never a candidate), -1 if none
    root: str  # the directory recorded ("/" on a live machine)
    policy: str  # the policy that chose what to record (its watched groups, its scorers' reads)
    kernel: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "time_us": self.time_us,
            "started": self.started,
            "interval_s": self.interval_s,
            "processes_every": self.processes_every,
            "self_pid": self.self_pid,
            "root": self.root,
            "policy": self.policy,
            "kernel": self.kernel,
        }


@frozen
class Frame:
    index: int
    time_us: int
    processes: bool  # the process facts were read in this frame (else they are an earlier frame's)
    delta: Observations


# --- encoding ------------------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _encode_answer(op: str, answer: Answer) -> Any:
    if isinstance(answer, int):
        return answer  # an errno
    if op == "file":
        assert isinstance(answer, bytes)
        return _text(answer)
    if op == "dir":
        assert isinstance(answer, tuple)
        return [_text(name) + ("/" if is_dir else "") for name, is_dir in answer]
    if op == "link":
        assert isinstance(answer, bytes)
        return _text(answer)
    if op == "kind":
        return answer
    assert isinstance(answer, frozenset)
    return sorted(_text(name) for name in answer)


def encode_frame(time_us: int, processes: bool, delta: Observations) -> bytes:
    body: dict[str, Any] = {"t": time_us, "processes": processes}
    for op in OPS:
        entries = delta.maps[op]
        if entries:
            body[op] = {_text(path): _encode_answer(op, answer) for path, answer in entries.items()}
    return json.dumps(body, separators=(",", ":")).encode("ascii") + b"\n"


class TraceWriter:
    """Writes a header, then frames; each frame holds what changed since the one before and is
    flushed whole, so that a recorder killed mid-way leaves every frame before the last."""

    def __init__(self, stream: IO[bytes], header: Header) -> None:
        self._raw = stream
        self._gz = gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=6, mtime=0)
        self._state = Observations()
        self.frames = 0
        self._gz.write(json.dumps(header.to_json(), separators=(",", ":")).encode("ascii") + b"\n")

    def frame(self, time_us: int, processes: bool, seen: Observations) -> int:
        """Write one frame; returns its uncompressed size in bytes."""
        delta = seen.changed_since(self._state)
        self._state.apply(delta)
        line = encode_frame(time_us, processes, delta)
        if len(line) > MAX_LINE_BYTES:
            raise GuardianError(
                f"a frame of {len(line)} bytes is over the limit of {MAX_LINE_BYTES} bytes; "
                "record fewer processes (a larger --processes-every)"
            )
        self._gz.write(line)
        self._gz.flush(zlib.Z_SYNC_FLUSH)
        self.frames += 1
        return len(line)

    def close(self) -> None:
        self._gz.close()


# --- decoding ------------------------------------------------------------------------------------


class _Bad(Exception):
    """A reason a line is not a valid frame (turned into TraceError with file and frame)."""


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{what}: expected a string, got {type(value).__name__}")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise _Bad(f"{what}: a character above \\u00ff (strings are bytes written as ISO-8859-1)") from None


def _int(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool is an int to Python, not to a trace
        raise _Bad(f"{what}: expected a whole number, got {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise _Bad(f"{what}: {str(value)[:40]} is out of range ({low} to {high})")
    return value


def _decode_answer(op: str, path: str, value: Any) -> Answer:
    what = f"{op} {shown(path)}"
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value, f"{what}: errno", 1, MAX_ERRNO)
    if op in ("file", "link"):
        return _bytes(value, what)
    if op == "dir":
        if not isinstance(value, list):
            raise _Bad(f"{what}: expected a list of names")
        entries = []
        for item in value:
            name = _bytes(item, what)
            is_dir = name.endswith(b"/")
            name = name.rstrip(b"/")
            if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
                raise _Bad(f"{what}: {shown(os.fsdecode(name))!r} is not a file name")
            entries.append((name, is_dir))
        return tuple(entries)
    if op == "kind":
        if value not in ("d", "f", "-"):
            raise _Bad(f'{what}: expected "d", "f" or "-"')
        return str(value)
    if not isinstance(value, list):
        raise _Bad(f"{what}: expected a list of attribute names")
    return frozenset(_bytes(item, what) for item in value)


def decode_frame(line: bytes, index: int) -> Frame:
    try:
        body = json.loads(line)
    except ValueError as exc:  # not JSON, not UTF-8, or a number of more than 4300 digits
        raise _Bad(f"not a JSON object: {exc}") from None
    except RecursionError:
        raise _Bad("not a JSON object: nested too deeply") from None
    if not isinstance(body, dict):
        raise _Bad("not a JSON object")
    unknown = set(body) - {"t", "processes", *OPS}
    if unknown:
        raise _Bad(f"unknown key {sorted(unknown)[0]!r}")
    time_us = _int(body.get("t"), "t", 0, MAX_TIME_US)
    processes = body.get("processes")
    if not isinstance(processes, bool):
        raise _Bad("processes: expected true or false")
    delta = Observations()
    for op in OPS:
        entries = body.get(op, {})
        if not isinstance(entries, dict):
            raise _Bad(f"{op}: expected an object of paths")
        for path, value in entries.items():
            raw = _bytes(path, f"{op} path")
            if not raw.startswith(b"/") or b"\0" in raw:
                raise _Bad(f"{op}: {shown(os.fsdecode(raw))!r} is not an absolute path")
            delta.note(op, raw, _decode_answer(op, path, value))
    return Frame(index, time_us, processes, delta)


def _decode_header(line: bytes) -> Header:
    try:
        body = json.loads(line)
    except ValueError as exc:
        raise _Bad(f"not a JSON object: {exc}") from None
    except RecursionError:
        raise _Bad("not a JSON object: nested too deeply") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise _Bad(f"not a {FORMAT} file")
    if body.get("version") != VERSION:
        raise _Bad(f"version {str(body.get('version'))[:20]} (this guardian reads version {VERSION})")

    def text(key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str):
            raise _Bad(f"{key}: expected a string")
        return value

    interval = body.get("interval_s")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < 1e6:
        raise _Bad("interval_s: expected a number of seconds above 0")
    return Header(
        time_us=_int(body.get("time_us"), "time_us", 0, MAX_TIME_US),
        started=text("started"),
        interval_s=float(interval),
        processes_every=_int(body.get("processes_every"), "processes_every", 1, 1 << 31),
        self_pid=_int(body.get("self_pid"), "self_pid", -1, 1 << 31),
        root=text("root"),
        policy=text("policy"),
        kernel=text("kernel"),
    )


class TraceReader:
    """The header, then the frames one at a time (a trace may be larger than memory)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise TraceError(path, None, exc.strerror or str(exc)) from None
        self._gz = gzip.GzipFile(fileobj=self._file, mode="rb")
        try:
            self.header = self._header()
        except TraceError:
            self.close()
            raise

    def _line(self, frame: Optional[int]) -> Optional[bytes]:
        try:
            line = self._gz.readline(MAX_LINE_BYTES + 1)
        except EOFError:
            raise TraceError(self.path, frame, "the file ends in the middle of a frame (truncated)") from None
        except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise TraceError(self.path, frame, f"not a readable gzip stream ({exc})") from None
        if not line:
            return None
        if len(line) > MAX_LINE_BYTES:
            raise TraceError(self.path, frame, f"a line longer than {MAX_LINE_BYTES} bytes")
        if not line.endswith(b"\n"):
            raise TraceError(self.path, frame, "the file ends in the middle of a frame (truncated)")
        return line

    def _header(self) -> Header:
        line = self._line(None)
        if line is None:
            raise TraceError(self.path, None, "the file is empty")
        try:
            return _decode_header(line)
        except _Bad as exc:
            raise TraceError(self.path, None, str(exc)) from None

    def frames(self) -> Iterator[Frame]:
        index = 0
        last_us = self.header.time_us
        while True:
            line = self._line(index)
            if line is None:
                return
            try:
                frame = decode_frame(line, index)
            except _Bad as exc:
                raise TraceError(self.path, index, str(exc)) from None
            if frame.time_us < last_us:
                raise TraceError(self.path, index, "its time is earlier than the frame before")
            last_us = frame.time_us
            yield frame
            index += 1

    def close(self) -> None:
        self._gz.close()
        self._file.close()
