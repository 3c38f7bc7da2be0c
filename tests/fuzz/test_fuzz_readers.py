"""Fuzz targets for the /proc, cgroup and kernel log readers.

* every pure parser in guardian/sources/ and guardian/host.py, on arbitrary text (and bytes
  decoded as guardian decodes them: surrogate escapes for what is not UTF-8), and on near-valid
  text: real kernel files from tests/fixtures, mutated. Property: a result, or the parser's
  documented error (ParseError; ValueError for cgroup_path and parse_int); never a hang.
  The kernel log too: records, OOM-report lines, whole reports (oom_kills), and the follower
  on a recorded log that grows by any bytes, which never raises.
* the readers end to end: a machine in kernel format (FakeRoot) whose files for one cgroup or
  one process get random bytes, mutated text or go missing; then ``guardian status`` and the
  ranking path (Selector with the default policy, and with every built-in scorer) in process
  and cgroup mode, on the machine and in the broken group's scope. Property: nothing raises at
  all, the JSON is valid (no NaN, no Infinity, no lone surrogate) and the text is valid UTF-8;
  never a hang (each example runs under a hard timeout).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.bounds import hard_timeout
from support.machine import CONTAINER, DB, WEB, small_machine

from guardian.cli import json_text
from guardian.config import Policy
from guardian.errors import ParseError
from guardian.explain import build_rank_report, explain, render_rank
from guardian.host import Host, cgroup_ancestors, cgroup_layout, cgroup_path, is_cgroup_path, parse_mountinfo
from guardian.plugins import make_plugin_manager
from guardian.records import KernelOomKill, KmsgRecord
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.sources.cgroups import (
    V2_MEMORY_FILES,
    parse_cgroup_procs,
    parse_memory_value,
    parse_oom_control,
)
from guardian.sources.kmsg import (
    KmsgFollower,
    oom_kills,
    parse_kmsg_record,
    parse_oom_line,
    parse_oom_summary,
    split_records,
)
from guardian.sources.meminfo import parse_meminfo, parse_meminfo_fields, parse_zram_mm_stat, quick_field
from guardian.sources.processes import (
    parse_cmdline,
    parse_oom_score,
    parse_oom_score_adj,
    parse_proc_cgroup,
    parse_stat,
    parse_status,
)
from guardian.sources.psi import parse_pressure
from guardian.sources.vmstat import parse_flat_keyed, parse_int, parse_sysctl_value, parse_vmstat
from guardian.status import build_status, render_status
from guardian.text import shown

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXAMPLE_TIMEOUT_S = 10  # a correct example takes milliseconds; this only turns a hang into a failure

# Text as guardian sees it: any str, and any bytes decoded the way Host.read_text decodes them.
kernel_text = st.one_of(st.text(max_size=400), st.binary(max_size=400).map(os.fsdecode))


# --- the pure parsers ----------------------------------------------------------------------------


def _check_pressure(text: str) -> None:
    pressure = parse_pressure(text, "fuzz")
    for line in (pressure.some, pressure.full):
        if line is not None:
            assert all(math.isfinite(v) and v >= 0 for v in (line.avg10_pct, line.avg60_pct, line.avg300_pct))
            assert line.total_us >= 0


def _check_mountinfo(text: str) -> None:
    mounts = parse_mountinfo(text)
    assert all(m.mount_point.startswith("/") for m in mounts)
    cgroup_layout(mounts, frozenset(text.split()))


def _check_proc_cgroup(text: str) -> None:
    # as read on a host, and from a container whose cgroup mount reaches above its namespace
    for above in ("", "/..", "/../../.."):
        cgroups = parse_proc_cgroup(text, above)
        for path in (cgroups.v2, *cgroups.v1.values()):
            assert path is None or is_cgroup_path(path)


def _check_cgroup_path(text: str) -> None:
    try:
        path = cgroup_path(text)
    except ValueError:
        return
    assert is_cgroup_path(path) and cgroup_path(path) == path


def _check_ancestors(text: str) -> None:
    ancestors = cgroup_ancestors(text)
    assert len(ancestors) <= text.count("/")
    assert all(is_cgroup_path(a) for a in ancestors)


def _check_memory_value(text: str) -> None:
    value = parse_memory_value(text)
    assert value is None or value >= 0


def _check_procs(text: str) -> None:
    assert all(pid > 0 for pid in parse_cgroup_procs(text))


def _check_kmsg_record(text: str) -> None:
    record = parse_kmsg_record(os.fsencode(text))
    assert record.seq >= 0 and record.time_us >= 0 and 0 <= record.level <= 7
    for value in (record.text, *record.fields, *record.fields.values()):
        os.fsencode(value)  # bytes again, whatever they were


def _check_kill(kill: KernelOomKill) -> None:
    assert kill.pid >= 0 and kill.total_vm_bytes >= 0 and kill.anon_rss_bytes >= 0
    assert kill.file_rss_bytes >= 0 and (kill.shmem_rss_bytes or 0) >= 0
    assert kill.constraint is None or isinstance(kill.constraint, str)
    shown_kill = shown(repr(kill))
    shown_kill.encode("utf-8")  # strict


def _records(text: str) -> list[KmsgRecord]:
    """Lines as kernel records; a line starting with "," is a continuation piece ("c")."""
    return [
        KmsgRecord(0, 6, seq, seq * 1000, "c" if line.startswith(",") else "-", line)
        for seq, line in enumerate(text.split("\n"))
    ]


def _check_oom_kills(text: str) -> None:
    for kill in oom_kills(_records(text)):
        _check_kill(kill)


def _check_split_records(text: str) -> None:
    data = os.fsencode(text)
    records, rest = split_records(data)
    assert all(records) and data.endswith(rest)


# name -> (check, the errors it documents)
PARSERS: dict[str, tuple[Callable[[str], object], tuple[type[Exception], ...]]] = {
    "parse_mountinfo": (_check_mountinfo, ()),
    "cgroup_path": (_check_cgroup_path, ()),
    "cgroup_ancestors": (_check_ancestors, ()),
    "parse_meminfo": (parse_meminfo, (ParseError,)),
    "parse_meminfo_fields": (parse_meminfo_fields, (ParseError,)),
    "quick_field": (lambda t: (quick_field(t, "MemAvailable"), quick_field(t, "SwapFree")), ()),
    "parse_zram_mm_stat": (lambda t: parse_zram_mm_stat("zram0", t[:9], t[9:]), (ParseError,)),
    "parse_flat_keyed": (lambda t: parse_flat_keyed(t, "fuzz"), (ParseError,)),
    "parse_flat_keyed lenient": (lambda t: parse_flat_keyed(t, "fuzz", strict=False), ()),
    "parse_vmstat": (parse_vmstat, ()),
    "parse_sysctl_value": (lambda t: parse_sysctl_value(t, "fuzz"), (ParseError,)),
    "parse_int": (parse_int, (ValueError,)),
    "parse_memory_value": (_check_memory_value, (ParseError,)),
    "parse_cgroup_procs": (_check_procs, (ParseError,)),
    "parse_oom_control": (parse_oom_control, (ParseError,)),
    "parse_pressure": (_check_pressure, (ParseError,)),
    "parse_stat": (parse_stat, (ParseError,)),
    "parse_status": (parse_status, (ParseError,)),
    "parse_proc_cgroup": (_check_proc_cgroup, ()),
    "parse_cmdline": (lambda t: parse_cmdline(os.fsencode(t)), ()),
    "parse_oom_score_adj": (parse_oom_score_adj, (ParseError,)),
    "parse_oom_score": (parse_oom_score, (ParseError,)),
    "parse_kmsg_record": (_check_kmsg_record, (ParseError,)),
    "split_records": (_check_split_records, ()),
    "parse_oom_line": (parse_oom_line, (ParseError,)),
    "parse_oom_summary": (lambda t: parse_oom_summary(t, comm=t[-9:-3] or None), (ParseError,)),
    "oom_kills": (_check_oom_kills, ()),
}


def _call(name: str, text: str) -> None:
    check, documented = PARSERS[name]
    with hard_timeout(EXAMPLE_TIMEOUT_S), contextlib.suppress(*documented):
        check(text)


@pytest.mark.parametrize("name", sorted(PARSERS))
@given(text=kernel_text)
def test_parser_on_arbitrary_text(name: str, text: str) -> None:
    _call(name, text)


# --- near-valid text: real kernel files, mutated --------------------------------------------------


def _fixture_texts() -> dict[str, list[str]]:
    """Real files from the fixture trees, by the parser that reads them."""
    found: dict[str, list[str]] = {}

    def add(name: str, path: Path) -> None:
        if path.is_file():
            found.setdefault(name, []).append(os.fsdecode(path.read_bytes()))

    for tree in ("v2-systemd", "hybrid", "k8s-node"):
        base = FIXTURES / tree
        add("parse_mountinfo", base / "proc/self/mountinfo")
        add("parse_meminfo", base / "proc/meminfo")
        add("parse_meminfo_fields", base / "proc/meminfo")
        add("quick_field", base / "proc/meminfo")
        add("parse_vmstat", base / "proc/vmstat")
        add("parse_flat_keyed", base / "proc/vmstat")
        add("parse_pressure", base / "proc/pressure/memory")
        for pid in ("1", "2"):
            add("parse_stat", base / f"proc/{pid}/stat")
            add("parse_status", base / f"proc/{pid}/status")
            add("parse_proc_cgroup", base / f"proc/{pid}/cgroup")
            add("parse_oom_score_adj", base / f"proc/{pid}/oom_score_adj")
            add("parse_oom_score", base / f"proc/{pid}/oom_score")
        for name, files in (
            ("parse_memory_value", ("memory.current", "memory.max", "memory.limit_in_bytes")),
            ("parse_flat_keyed", ("memory.events", "memory.stat", "cgroup.events")),
            ("parse_pressure", ("memory.pressure",)),
            ("parse_cgroup_procs", ("cgroup.procs",)),
            ("parse_oom_control", ("memory.oom_control",)),
        ):
            for file in files:
                for path in sorted((base / "sys/fs/cgroup").rglob(file))[:3]:
                    add(name, path)
    kmsg = FIXTURES / "kmsg"
    messages: list[str] = []
    for path in sorted(kmsg.glob("*.kmsg")):
        data = path.read_bytes()
        records = split_records(data)[0]
        found.setdefault("split_records", []).append(os.fsdecode(data))
        found.setdefault("parse_kmsg_record", []).extend(os.fsdecode(r) for r in records[-4:])
        messages += [os.fsdecode(r).partition(";")[2] for r in records]
    for path in sorted(kmsg.glob("*.dmesg")):
        lines = [line.partition("] ")[2] for line in path.read_text().split("\n")]
        messages += lines
        found.setdefault("oom_kills", []).append("\n".join(lines))
    oom = [m for m in messages if "oom" in m.lower() or "Killed process" in m or "Tasks in" in m]
    found["parse_oom_line"] = oom
    found["parse_oom_summary"] = [m[len("oom-kill:") :] for m in oom if m.startswith("oom-kill:")]
    for name in ("cgroup_path", "cgroup_ancestors"):
        found[name] = [line.split(":", 2)[-1] for line in found["parse_proc_cgroup"][0].splitlines()]
    return found


TEXTS = _fixture_texts()
# characters that matter to the formats: separators, signs, escapes, line breaks of all kinds
SPECIAL = st.sampled_from(
    [*" \t\n\r:=-/\\.,()0123456789", "\x0c", "\x1c", "\x85", "\u2028", "\udcff", "\0", "nan", "inf", "max"]
)


@st.composite
def mutated(draw: st.DrawFn, name: str) -> str:
    text = draw(st.sampled_from(TEXTS[name]))
    for _ in range(draw(st.integers(1, 6))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(("replace", "insert", "delete", "duplicate line", "truncate")))
        if op == "replace":
            text = text[:at] + draw(SPECIAL | st.text(max_size=3)) + text[at + 1 :]
        elif op == "insert":
            text = text[:at] + draw(SPECIAL | kernel_text) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif op == "duplicate line":
            lines = text.split("\n")
            line = lines[at % len(lines)]
            lines.insert(at % len(lines), line)
            text = "\n".join(lines)
        else:
            text = text[:at]
    return text


@pytest.mark.parametrize("name", sorted(TEXTS))
@given(data=st.data())
def test_parser_on_mutated_kernel_text(name: str, data: st.DataObject) -> None:
    _call(name, data.draw(mutated(name)))


def test_every_parser_has_real_text() -> None:
    """The near-valid target covers every parser that reads a kernel file on its own."""
    no_file_of_its_own = {
        "parse_zram_mm_stat",
        "parse_flat_keyed lenient",
        "parse_sysctl_value",
        "parse_int",
        "parse_cmdline",
    }
    assert set(PARSERS) - set(TEXTS) == no_file_of_its_own


@given(
    chunks=st.lists(
        st.one_of(st.binary(max_size=300), st.sampled_from(TEXTS["split_records"]).map(os.fsencode))
    )
)
def test_kmsg_follower_on_any_bytes(tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]) -> None:
    """A recorded log that grows by any bytes: the follower returns kills or nothing, and counts."""
    root = tmp_path_factory.mktemp("kmsg")
    (root / "dev").mkdir()
    log = root / "dev/kmsg"
    log.write_bytes(b"")
    with hard_timeout(EXAMPLE_TIMEOUT_S), KmsgFollower(Host(root)) as follower:
        for chunk in chunks:
            with log.open("ab") as f:
                f.write(chunk)
            for kill in follower.read():
                _check_kill(kill)
        assert follower.lost_records >= 0 and follower.malformed >= 0
    shutil.rmtree(root, ignore_errors=True)


# --- the readers end to end -----------------------------------------------------------------------

GROUP_FILES = (
    *V2_MEMORY_FILES,
    "memory.events",
    "memory.events.local",
    "memory.stat",
    "memory.pressure",
    "memory.oom.group",
    "cgroup.procs",
    "cgroup.events",
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.failcnt",
    "memory.oom_control",
    "memory.memsw.limit_in_bytes",
    "memory.swappiness",
)
PROCESS_FILES = ("stat", "status", "oom_score_adj", "oom_score", "cgroup", "cmdline", "comm")
MACHINE_FILES = (
    "proc/self/mountinfo",
    "proc/vmstat",
    "proc/pressure/memory",
    "proc/sys/vm/swappiness",
    "proc/sys/vm/panic_on_oom",
    "sys/block/zram0/mm_stat",
)
PIDS = (1, 2, 200, 201, 300, 400, 401)
GROUPS = (WEB, DB, CONTAINER, "/system.slice", "/init.scope")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("fuzz-roots")
    built = {layout: small_machine(base / layout, layout).root for layout in ("unified", "hybrid")}
    yield built
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def selectors() -> list[Selector]:
    plugins = make_plugin_manager(None, entry_points=False)
    every = Policy(scorers={"kernel_badness": 1.0, "cgroup_largest": 1.0, "kubelet_qos": 1.0, "rules": 1.0})
    return [Selector(Policy(), plugins), Selector(every, plugins)]


def _targets(root: Path, layout: str, group: str, pid: int) -> list[Path]:
    v2 = "sys/fs/cgroup" if layout == "unified" else "sys/fs/cgroup/unified"
    found = [root / f"proc/{pid}/{name}" for name in PROCESS_FILES]
    for mount in {v2, "sys/fs/cgroup/memory"}:
        found += [root / mount / group.lstrip("/") / name for name in GROUP_FILES]
    found += [root / rel for rel in MACHINE_FILES]
    return [p for p in found if p.is_file()]


def _strict_json(text: str) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON")

    value = json.loads(text, parse_constant=reject)
    text.encode("utf-8")  # strict
    return value


def _everything(root: Path, selectors: list[Selector], scope: str) -> None:
    sample = Sample(Host(root), 0)
    report = build_status(sample)
    _strict_json(json_text(report))
    render_status(report).encode("utf-8")
    for selector in selectors:
        for mode in ("process", "cgroup"):
            for where in (None, scope):
                ranking = selector.rank(sample, mode=mode, scope=where)
                rank_report = build_rank_report(sample.host, ranking, [])
                rank_report["explanation"] = explain(ranking)
                _strict_json(json_text(rank_report))
                render_rank(rank_report, rank_report["explanation"]).encode("utf-8")


@given(data=st.data())
def test_readers_survive_one_broken_group_or_process(
    roots: dict[str, Path], selectors: list[Selector], data: st.DataObject
) -> None:
    layout = data.draw(st.sampled_from(sorted(roots)), label="layout")
    root = roots[layout]
    group = data.draw(st.sampled_from(GROUPS), label="group")
    pid = data.draw(st.sampled_from(PIDS), label="pid")
    targets = _targets(root, layout, group, pid)
    chosen = data.draw(st.lists(st.sampled_from(targets), min_size=1, max_size=4, unique=True), label="files")
    saved = {path: path.read_bytes() for path in chosen}
    try:
        for path in chosen:
            how = data.draw(st.sampled_from(("bytes", "text", "mutated", "missing")), label=str(path))
            if how == "missing":
                path.unlink()
            elif how == "bytes":
                path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
            elif how == "text":
                path.write_bytes(os.fsencode(data.draw(kernel_text, label="text")))
            else:
                original = os.fsdecode(saved[path])
                at = data.draw(st.integers(0, max(0, len(original) - 1)), label="at")
                piece = data.draw(SPECIAL | st.text(max_size=5), label="piece")
                path.write_bytes(os.fsencode(original[:at] + piece + original[at + 1 :]))
        with hard_timeout(EXAMPLE_TIMEOUT_S * 3):
            _everything(root, selectors, group)
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
