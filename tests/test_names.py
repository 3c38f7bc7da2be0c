"""Names are any bytes: cgroup paths, comm and cmdline that are not UTF-8, or hold control
characters, line separators or newlines.

Read from the kernel, such a name must still name the real directory (undecodable bytes kept as
surrogate escapes, never replaced by U+FFFD); shown to anyone (status and rank, as text and
JSON, explanations, errors) it must be one line of valid UTF-8.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from support.arena import Arena
from support.clock import FakeClock
from support.machine import small_machine, v2_dir

from guardian.cli import EXIT_OK, EXIT_USAGE, main
from guardian.host import Host
from guardian.sample import Sample
from guardian.sources.processes import parse_proc_cgroup, read_process, read_processes
from guardian.text import shown

# a cgroup name with a byte that is not UTF-8, an escape sequence, a form feed and U+2028 (both
# line breaks to str.splitlines()), and an accented letter that is fine UTF-8
ODD = os.fsdecode(b"caf\xc3\xa9-\xff\x1b[31m-\x0c-\xe2\x80\xa8.service")
GROUP = f"/system.slice/{ODD}"
COMM = os.fsdecode(b"ev\xffil\nname")  # prctl(PR_SET_NAME) takes any bytes but NUL
ARGV = (os.fsdecode(b"/usr/bin/\xfe"), "--line\nbreak", "caf\u00e9")


@pytest.fixture
def odd_root(tmp_path: Path) -> Path:
    root = small_machine(tmp_path / "root", extra={GROUP: 256 << 20})
    pid = 500  # the extra group's process
    root.process(pid, COMM, rss_anon_kb=8192, cgroup_v2=GROUP, cmdline=ARGV)
    root.finish()
    assert os.path.isdir(os.fsencode(root.root / v2_dir(root, GROUP).lstrip("/")))
    return tmp_path / "root"


def utf8_lines(raw: bytes) -> list[str]:
    text = raw.decode("utf-8")  # strict: a lone surrogate or a stray byte fails here
    assert "\ufffd" not in text
    return text.splitlines()


def strict_json(raw: bytes) -> Any:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    utf8_lines(raw)
    value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)

    def walk(item: Any) -> None:
        if isinstance(item, str):
            item.encode("utf-8")  # strict: no lone surrogates inside the JSON strings either
        elif isinstance(item, dict):
            for key, sub in item.items():
                walk(key)
                walk(sub)
        elif isinstance(item, list):
            for sub in item:
                walk(sub)

    walk(value)
    return value


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> bytes:
    code = main(list(argv), clock=FakeClock())
    captured = capsysbinary.readouterr()
    assert code == EXIT_OK, captured.err
    return captured.out


def test_the_path_read_from_proc_names_the_real_directory(odd_root: Path) -> None:
    host = Host(odd_root)
    process = read_process(host, 500, cmdline=True)
    assert process.cgroup.v2 == GROUP
    assert os.path.isdir(host.cgroup_v2_dir(GROUP))
    assert process.comm == COMM  # the exact bytes, for shown() to print
    assert process.cmdline == ARGV
    # so its memory, its limit and the scale of an OOM inside it are read from the real files
    memory = Sample(host, 0).cgroup(process.cgroup.v2).memory
    assert memory.max_bytes == 256 << 20


def test_status_is_valid_utf8_one_line_per_group(
    odd_root: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    report = strict_json(
        run(capsysbinary, "status", "--json", "--interval", "0", "--top", "1000", "--root", str(odd_root))
    )
    paths = [g["path"] for g in report["cgroups"]]
    assert shown(GROUP) in paths
    assert "\\xff" in shown(GROUP) and "\\x1b" in shown(GROUP) and "\\x0c" in shown(GROUP)
    lines = utf8_lines(run(capsysbinary, "status", "--interval", "0", "--wide", "--root", str(odd_root)))
    odd = [line for line in lines if "caf\u00e9" in line]
    assert odd, "the group is listed"
    assert all("\x1b" not in line and "\x0c" not in line for line in lines)


def test_rank_is_valid_utf8_one_line_per_candidate(
    odd_root: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    for scope in ("/", GROUP):
        report = strict_json(
            run(capsysbinary, "rank", "--json", "--explain", "--scope", scope, "--root", str(odd_root))
        )
        entry = next(c for c in report["candidates"] if c["pid"] == 500)
        assert entry["comm"] == shown(COMM) and entry["cgroup"] == shown(GROUP)
        assert report["explanation"], "--explain gives an explanation"
        assert all("\n" not in line for line in report["explanation"])
    # in the group, the group's own limit is the scale, as for the kernel's memcg OOM
    assert report["totalpages_source"] == f"memcg {shown(GROUP)}"
    lines = utf8_lines(run(capsysbinary, "rank", "--explain", "--root", str(odd_root)))
    rows = [line for line in lines if line.lstrip().startswith("500 ")]
    assert len(rows) == 1 and shown(COMM)[:15] in rows[0]
    mode = strict_json(run(capsysbinary, "rank", "--json", "--mode", "cgroup", "--root", str(odd_root)))
    assert shown(GROUP) in [c["cgroup"] for c in mode["candidates"]]


def test_errors_name_the_path_in_printable_text(
    odd_root: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code = main(["rank", "--scope", GROUP + "-gone", "--root", str(odd_root)], clock=FakeClock())
    err = capsysbinary.readouterr().err
    assert code == EXIT_USAGE
    (line,) = utf8_lines(err)
    assert shown(GROUP) + "-gone" in line


def test_proc_cgroup_is_split_on_newlines_only() -> None:
    cgroups = parse_proc_cgroup(f"0::{GROUP}\n")
    assert cgroups.v2 == GROUP


def test_cmdline_keeps_its_bytes(odd_root: Path) -> None:
    (process,) = (p for p in read_processes(Host(odd_root), cmdline=True) if p.pid == 500)
    assert os.fsencode(process.cmdline[0]) == b"/usr/bin/\xfe"


@pytest.mark.live
def test_live_non_utf8_cgroup(
    arena: Arena, live_host: Host, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """A real cgroup2 directory with a name that is not UTF-8, inside the test's own arena, with a
    process of the test's own in it: read back from /proc/PID/cgroup, it names that directory."""
    if arena.v2_dir is None:
        pytest.skip("no cgroup2 hierarchy")
    name = b"odd-\xff\x1b-name"
    directory = os.fsencode(arena.v2_dir) + b"/" + name
    child = arena.spawn("import sys, time; print('ready', flush=True); time.sleep(120)")
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    os.mkdir(directory)
    try:
        with open(directory + b"/cgroup.procs", "w") as procs:
            procs.write(str(child.pid))
        expected = f"{arena.name}/{os.fsdecode(name)}"
        process = read_process(live_host, child.pid)
        assert process.cgroup.v2 == expected
        assert os.path.isdir(live_host.cgroup_v2_dir(expected))
        assert expected in live_host.cgroups_below(arena.name, None)
        # the group's own memory.pressure reads (raises Unavailable if the path named nothing)
        assert Sample(live_host, 0).cgroup(expected).pressure.full is not None
        report = strict_json(run(capsysbinary, "rank", "--json", "--scope", arena.name))
        (entry,) = (c for c in report["candidates"] if c["pid"] == child.pid)
        # a candidate's cgroup is its memory cgroup: the v1 one (the arena itself) on a hybrid host
        v1 = live_host.cgroup_layout().memory_controller == "v1"
        assert entry["cgroup"] == (arena.name if v1 else shown(expected))
    finally:
        fd = os.pidfd_open(child.pid)
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            os.close(fd)
        child.wait(timeout=10)
        os.rmdir(directory)
