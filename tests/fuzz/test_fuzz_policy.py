"""Fuzz target: the policy loader.

``parse_policy`` and ``load_policy`` must answer any input with a Policy or a PolicyError whose
message names the source, is one printable line and is short: never another exception, never a
hang, never output of their own (a warning, RE2's log). The daemon reloads on SIGHUP and keeps
its old policy only on a PolicyError; anything else would take it down mid-episode.

(a) arbitrary text and bytes, and text stitched from TOML's own punctuation (the shape scanner's
    edge cases); (b) documents built from the real schema, every key guardian knows at every
    level, with hostile values (huge, inf, nan, negative, other scripts' digits, deep nesting,
    long strings, pathological regexes and globs, wrong types), both as TOML text and as the
    parsed tables themselves (``policy_from_dict``, which has no last-resort guard).

Each example runs in a worker process: one that does not answer within PER_EXAMPLE_S is killed
(it is this test's own child) and the example fails as a hang, with hypothesis's report of it,
instead of stalling the suite. The worker's address space is capped, so a runaway allocation
fails the example as a MemoryError instead of pressing on the machine.
"""

from __future__ import annotations

import datetime
import math
import os
import pickle
import select
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardian.text import shown

REPO = Path(__file__).resolve().parent.parent.parent
PER_EXAMPLE_S = 10.0
WORKER_ADDRESS_SPACE = 4 << 30

WORKER = f"""
import pickle, resource, struct, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, ({WORKER_ADDRESS_SPACE}, {WORKER_ADDRESS_SPACE}))
from guardian.config import Policy, PolicyError, load_policy, parse_policy, policy_from_dict
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    op, payload, source = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
    try:
        if op == "parse":
            result = parse_policy(payload, source)
        elif op == "load":
            with open(source, "wb") as f:
                f.write(payload)
            result = load_policy(source)
        else:
            result = policy_from_dict(payload, source)
        reply = ("policy", type(result).__name__)
    except PolicyError as exc:
        reply = ("error", str(exc), exc.__cause__ is None)
    except BaseException:
        reply = ("crash", traceback.format_exc())
    data = pickle.dumps(reply)
    out.write(struct.pack("<Q", len(data)) + data)
    out.flush()
"""


class Worker:
    """A python process that loads policies on request; restarted after a hang."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stderr_path = directory / "worker.stderr"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def start(self) -> None:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WORKER],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # our own child
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def ask(self, op: str, payload: Any, source: str) -> tuple[Any, ...]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        data = pickle.dumps((op, payload, source))
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.stop()
            self.start()
            pytest.fail("the worker died on the previous example")
        reply = self._read(self.proc.stdout.fileno())
        if reply is None:
            self.stop()
            self.start()
            pytest.fail(f"no answer within {PER_EXAMPLE_S:g} s: a hang ({op}, source {source})")
        return tuple(pickle.loads(reply))

    def _read(self, fd: int) -> Optional[bytes]:
        buf = b""
        remaining = PER_EXAMPLE_S
        need = 8
        while len(buf) < need:
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                pytest.fail("the worker exited")
            buf += chunk
            if len(buf) >= 8 and need == 8:
                need = 8 + struct.unpack("<Q", buf[:8])[0]
        return buf[8:need]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(tmp_path_factory.mktemp("fuzz-policy"))
    yield w
    w.stop()
    # nothing a policy holds may make the loader print: no warning, no RE2 log line
    assert w.stderr_path.read_text(errors="replace") == ""


def check(reply: tuple[Any, ...], source: str) -> None:
    kind = reply[0]
    assert kind != "crash", reply[1]
    if kind == "error":
        message, own = reply[1], reply[2]
        assert own, f"only the last-resort guard caught it: {message}"
        assert message.startswith(f"{source}: "), message
        assert shown(message) == message and "\n" not in message, message
        assert len(message) < 1000, message
    else:
        assert reply == ("policy", "Policy")


# --- (a) arbitrary input ---------------------------------------------------------------------------

PUNCTUATION = ["[", "]", "[[", "]]", "{", "}", "=", ".", ",", "'", '"', "'''", '"""', "\\", "#", "\n", " "]
WORDS = ["a", "1", "1.5", "-", "inf", "nan", "true", "1979-05-27", "machine", "psi", "protect", "comm"]
toml_ish = st.lists(st.sampled_from(PUNCTUATION + WORDS), max_size=200).map("".join)


@given(text=st.one_of(st.text(), toml_ish))
def test_any_text_through_parse_policy(worker: Worker, text: str) -> None:
    check(worker.ask("parse", text, "/etc/guardian.toml"), "/etc/guardian.toml")


@given(data=st.one_of(st.binary(), toml_ish.map(str.encode)))
def test_any_bytes_through_load_policy(worker: Worker, data: bytes) -> None:
    path = str(worker.directory / "policy.toml")
    check(worker.ask("load", data, path), path)


# --- (b) documents from the schema -----------------------------------------------------------------

HUGE = st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**64), 10**4000])
NUMBERS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    HUGE,
    st.sampled_from([0, -1, 1, -1000, 1000, 0.0001, -999.9, 1e-300, 5e-324]),
)
DIGITS = ["0", "1", "5", "\u0665", "\uff15", "\u0967", "1" * 400, "9" * 5000, "0.0001", "1.5", "", "."]
UNITS = ["", "K", "M", "G", "T", "P", "k", "\u212a", "KiB", "iB", "B", "%", " %", "G%", "e3"]
AMOUNTS = st.one_of(
    st.builds(
        lambda d, u, sp: f"{sp}{d}{u}{sp}",
        st.sampled_from(DIGITS),
        st.sampled_from(UNITS),
        st.sampled_from(["", " ", "\t"]),
    ),
    NUMBERS,
    st.text(max_size=20),
)
PATTERNS = st.one_of(
    st.sampled_from(
        [
            "(a+)+$", "a{99999999999}", "a{1001}", "(?=x)", "(?<!x)", "(a)\\1", "[[:alpha:]", "[[:alpha:]]",
            "(" * 2000 + ")" * 2000, "(" * 5000, "\\", "x\\Z", "(?s).*a.{1000}c", "\\pL+", "[z-a]",
            "(?P<n>a)(?P=n)", "\\Qa{99999}", "(?i)^(sshd|dbus)\\.service$", "a" * 100_000, "", "\x00", "\u2028",
        ]
    ),
    st.text(alphabet="()[]{}^$.*+?|\\:-!=<>Pp0123456789aQEz,", max_size=40),
    st.text(max_size=30),
)  # fmt: skip
GLOBS = st.one_of(
    st.sampled_from(
        ["**/**/**/**/**/**/**/**/x", "[", "[]", "[!]", "[!]]", "a/[z-a]", "/", "//", "*" * 1000, "a\nb"]
    ),
    st.text(alphabet="*?[]!^/-a.\\{}\n", max_size=40),
    st.text(max_size=20),
)


def deep(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 2 else {"a": value}
    return value


WRONG = st.one_of(
    st.booleans(),
    NUMBERS,
    st.text(max_size=10),
    st.just("x" * 100_000),
    st.datetimes(timezones=st.sampled_from([datetime.timezone.utc])),
    st.dates(),
    st.times(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from([deep(40), deep(300), [[]], [{}], {}]),  # 300: pickle and repr stay in bounds
)


def hostile(spec: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right kind of value, mostly; a value of the wrong kind one time in five. (Not
    ``one_of(spec, WRONG)``: hypothesis flattens nested one_of, so WRONG's ten branches would
    outvote the right kind.)"""
    return st.integers(0, 4).flatmap(lambda i: WRONG if i == 0 else spec)


def table(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A table holding any subset of ``keys``, sometimes with a key guardian does not know."""
    known = st.fixed_dictionaries({}, optional={k: hostile(v) for k, v in keys.items()})
    unknown = st.dictionaries(st.text(max_size=8), WRONG, max_size=1)
    with_unknown = st.builds(lambda a, b: {**b, **a}, known, unknown)
    return hostile(st.integers(0, 3).flatmap(lambda i: with_unknown if i == 0 else known))


def array_of(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return hostile(st.lists(item, max_size=3))


LEVELS = table({"term": AMOUNTS, "kill": AMOUNTS})
PSI = table(
    {
        "kind": st.sampled_from(["some", "full", "half", "", "FULL"]),
        "stall_pct": NUMBERS,
        "duration_s": NUMBERS,
    }
)
RULE = table(
    {
        **dict.fromkeys(("comm", "cmdline", "exe", "cgroup", "unit", "user_unit"), PATTERNS),
        "uid": st.one_of(PATTERNS, NUMBERS),
        "points": NUMBERS,
    }
)
CGROUP = table(
    {
        "match": GLOBS,
        "min_headroom": LEVELS,
        "psi": PSI,
        "events": table({"high_per_s": NUMBERS, "max_per_s": NUMBERS, "oom_per_s": NUMBERS}),
        "action": st.sampled_from(["process", "group", "nuke", ""]),
    }
)
DIRECTORIES = st.sampled_from(
    ["/", "/nonexistent/plugins.d", "plugins.d", "/etc/hostname", "", "/a\x00b", "/" + "a" * 5000]
)
DOCUMENT = st.fixed_dictionaries(
    {},
    optional={
        "dry_run": hostile(st.booleans()),
        "grace_s": hostile(NUMBERS),
        "cooldown_s": hostile(NUMBERS),
        "hysteresis_pct": hostile(NUMBERS),
        "self_oom_score_adj": hostile(NUMBERS),
        "scorers": hostile(st.dictionaries(st.sampled_from(["kernel_badness", "rules", "kubelet_qos", "x"]), hostile(NUMBERS), max_size=3)),
        **{kind: array_of(RULE) for kind in ("protect", "ignore", "prefer", "avoid")},
        "plugins": table({"entry_points": st.booleans(), "directory": DIRECTORIES, "budget_ms": NUMBERS}),
        "machine": table(
            {
                "enabled": st.booleans(),
                "mem_available": LEVELS,
                "swap_free": LEVELS,
                "psi": PSI,
                "reclaim_window_s": st.one_of(NUMBERS, st.just(False)),
            }
        ),
        "cgroup": array_of(CGROUP),
        "poll": table({"min_interval_s": NUMBERS, "max_interval_s": NUMBERS, "fill_rate": AMOUNTS}),
    },
)  # fmt: skip


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 13_000 else "1" * 5000
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in document.items())


@given(document=DOCUMENT)
def test_schema_documents_as_toml_text(worker: Worker, document: dict[str, Any]) -> None:
    check(worker.ask("parse", toml_document(document), "/etc/guardian.toml"), "/etc/guardian.toml")


@given(document=DOCUMENT)
def test_schema_documents_as_tables(worker: Worker, document: dict[str, Any]) -> None:
    """Straight to policy_from_dict: no shape scan, no TOML limits, no last-resort guard."""
    check(worker.ask("dict", document, "/etc/guardian.toml"), "/etc/guardian.toml")
