"""``guardian top``: the layout (sparkline, fitting a terminal, lines for a log), the live stall
rate between refreshes, hostile names, and the command run without a terminal.

A pseudo-terminal runs it for real in tests/test_top_pty.py.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import fixture_root
from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.machine import small_machine

from guardian.cli import EXIT_OK, EXIT_USAGE, main
from guardian.config import builtin_policy
from guardian.host import Host
from guardian.plugins import make_plugin_manager
from guardian.selection import Selector
from guardian.text import cells, cut, human_bytes
from guardian.top import CANDIDATES, RANK_SHARE, SPARKS, Frame, Monitor, layout, sparkline

# --- sparkline ---------------------------------------------------------------------------------


def test_sparkline_scales_to_top_and_shows_any_stall() -> None:
    assert sparkline([0.0, 0.0, 0.0], 10, 1.0) == SPARKS[0] * 3
    line = sparkline([0.0, 0.001, 0.5, 1.0, 7.0], 10, 1.0)
    assert line[0] == SPARKS[0]
    assert line[1] == SPARKS[1]  # the smallest stall is still above no stall
    assert SPARKS.index(line[2]) in (3, 4)  # half the scale, about half the bars
    assert line[3] == line[4] == SPARKS[-1]  # the top and anything above it


def test_sparkline_keeps_the_newest_points_that_fit() -> None:
    values = [float(i) for i in range(20)]
    line = sparkline(values, 5, 19.0)
    assert len(line) == 5
    assert line[-1] == SPARKS[-1]
    assert sparkline(values, 0, 19.0) == ""


# --- cutting to a terminal's width -------------------------------------------------------------


def test_cut_counts_terminal_columns() -> None:
    assert cut("abcdef", 6) == "abcdef"
    assert cut("abcdef", 4) == "abc\u2026"
    wide = "\u65e5\u672c\u8a9e\u30c6\u30ad\u30b9\u30c8"  # 7 characters, 14 columns
    assert sum(map(cells, cut(wide, 5))) <= 5
    assert cut(wide, 5) == "\u65e5\u672c\u2026"
    accented = "e\u0301" * 4  # combining marks take no column
    assert cut(accented, 4) == accented
    assert cut("abc", 0) == ""
    for text in ("abcdef", wide, accented, "ab\u65e5c", "", "\u2026\u2026x"):
        for width in range(12):
            fitted = cut(text, width)
            assert sum(map(cells, fitted)) <= width
            if width == 0:
                assert fitted == ""
            else:
                assert fitted == text or (fitted.endswith("\u2026") and text.startswith(fitted[:-1]))


# --- the frame ---------------------------------------------------------------------------------


def monitor_for(root: Path, clock: FakeClock, interval_s: float = 1.0) -> Monitor:
    host = Host(root)
    policy = builtin_policy()
    plugins = make_plugin_manager(None, entry_points=False)
    return Monitor(host, Selector(policy, plugins), plugins.errors, clock, interval_s)


def frames(root: Path, n: int, between: object = None) -> list[Frame]:
    clock = FakeClock()
    monitor = monitor_for(root, clock)
    out = []
    for i in range(n):
        out.append(monitor.refresh("12:00:00", "built-in defaults"))
        if callable(between):
            between(i)
        clock.advance(1.0)
    return out


def test_live_stall_rate_is_measured_between_refreshes(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")

    def stall(i: int) -> None:  # 250 ms of some-stall, 100 ms of full, in each 1 s between refreshes
        total = 123456 + 250_000 * (i + 1)
        root.psi("memory", some=(1.5, 0.7, 0.2, total), full=(0.3, 0.1, 0.0, 23456 + 100_000 * (i + 1)))

    first, second, third = frames(root.root, 3, stall)
    assert first.status["psi"]["memory"]["live"] is None  # one reading is no rate yet
    assert first.stalls == ()
    live = second.status["psi"]["memory"]["live"]
    assert live == {"window_us": 1_000_000, "some_pct": 25.0, "full_pct": 10.0}
    assert third.stalls == (25.0, 25.0)
    text = "\n".join(layout(third))
    assert "some 25.00%  full 10.00% live over 1.0 s" in text
    assert SPARKS[-1] * 2 + "  some, last 2.0 s, peak 25.00%" in text


def test_frame_shows_memory_cgroups_and_the_policys_first_three(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    (frame,) = frames(root.root, 1)
    lines = layout(frame)
    text = "\n".join(lines)
    assert lines[0].startswith("guardian top  12:00:00  every 1 s  root ")
    assert f"memory     total {human_bytes(8 << 30)}, available {human_bytes(4 << 30)}" in text
    assert "swap       total 2.0 GiB, free 1.0 GiB" in text
    assert "live: measuring until the next refresh" in text
    assert "/system.slice/web.service" in text  # a limited group, nearest its line
    # the same first three as `guardian rank`, each with how its total is made and each note
    ranked = [c["pid"] for c in frame.rank["candidates"]]
    assert len(ranked) == CANDIDATES
    for i, pid in enumerate(ranked, 1):
        assert any(line.startswith(f"  {i}. pid {pid} (") for line in lines)
    assert sum(line.startswith("     total ") for line in lines) == CANDIDATES
    assert sum(line.startswith("     cause: ") for line in lines) == CANDIDATES  # each says why
    assert "candidates excluded; guardian rank --explain says why" in text
    assert "\x1b" not in text


def test_the_first_three_are_ranks_first_three(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = small_machine(tmp_path / "root")
    (frame,) = frames(root.root, 1)
    assert main(["rank", "--json", "--interval", "0", "--root", str(root.root)], clock=FakeClock()) == EXIT_OK
    import json

    ranked = json.loads(capsys.readouterr().out)["candidates"]
    assert [c["pid"] for c in frame.rank["candidates"]] == [c["pid"] for c in ranked[:CANDIDATES]]


def test_ranking_is_made_again_only_as_its_cost_allows(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    clock = FakeClock()
    monitor = monitor_for(root.root, clock)
    first = monitor.refresh("12:00:00", "p")
    assert first.ranked_ago_s == 0 and first.rank_ms > 0
    clock.advance(first.rank_ms / 1000 / RANK_SHARE + 0.1)  # long enough for its cost: ranked again
    again = monitor.refresh("12:00:01", "p")
    assert again.ranked_ago_s == 0 and again.rank is not first.rank
    monitor.rank_share = 1e-9  # a ranking far too dear for the time since: the last one is shown
    clock.advance(1.0)
    kept = monitor.refresh("12:00:02", "p")
    assert kept.rank is again.rank and kept.ranked_ago_s == 1.0
    assert kept.status is not again.status  # the rest is read anew
    head = next(line for line in layout(kept) if line.startswith("first to go"))
    assert f"ranked 1 s ago: a ranking costs {kept.rank_ms:.0f} ms of CPU here" in head
    assert "ranked" not in next(line for line in layout(again) if line.startswith("first to go"))


def test_a_terminal_frame_fits_its_width_and_height() -> None:
    (frame,) = frames(fixture_root("k8s-node"), 1)
    whole = layout(frame)
    assert max(len(line) for line in whole) > 100  # long paths and notes: something to cut
    for width, height in ((200, 60), (80, 24), (40, 12), (20, 5), (1, 1)):
        lines = layout(frame, width, height)
        assert len(lines) <= height
        assert all(sum(map(cells, line)) <= width for line in lines), width
        assert lines[0].startswith("guardian top"[: width - 1])
    assert layout(frame, 0, 0) == layout(frame, 1, 1) == ["\u2026"]  # a terminal that says it has no size
    tall = layout(frame, 80, 200)
    short = layout(frame, 80, 20)
    # a short terminal loses cgroup rows before it loses the candidates' lines
    assert (
        1
        <= sum(line.startswith("  /kube") for line in short)
        < sum(line.startswith("  /kube") for line in tall)
    )
    assert short[-1] == tall[-1]
    shorter = layout(frame, 80, 12)
    assert any(line.startswith("  1. pid ") for line in shorter)
    assert shorter[-1].startswith("... ") and "more lines: a taller terminal shows them" in shorter[-1]


def test_no_cgroup_near_a_line_is_said(tmp_path: Path) -> None:
    (frame,) = frames(small_machine(tmp_path / "root").root, 1)
    unlimited = [{**g, "usage_pct": None, "pressure": None} for g in frame.status["cgroups"]]
    calm = replace(frame, status={**frame.status, "cgroups": unlimited})
    lines = layout(calm)
    assert (
        f"nearest their lines: no cgroup with a memory limit or memory PSI (of {len(unlimited)} cgroups)"
        in lines
    )
    assert not any(line.startswith("  cgroup ") for line in lines)


def test_no_psi_is_said_not_drawn() -> None:
    _, second = frames(fixture_root("no-psi"), 2)
    text = "\n".join(layout(second))
    assert "stall      unavailable (no memory PSI)" in text
    assert second.stalls == ()


# --- hostile names -----------------------------------------------------------------------------

ODD = os.fsdecode(b"caf\xc3\xa9-\xff\x1b[31m-\x0c-\xe2\x80\xa8-\x9b2J.service")
GROUP = f"/system.slice/{ODD}"
COMM = os.fsdecode(b"\x1b]0;pwn\x07\xff\n")  # a title-setting escape, a stray byte, a newline


def odd_machine(path: Path) -> FakeRoot:
    """small_machine() with a group and a process whose names hold escape sequences."""
    root = small_machine(path, extra={GROUP: 300 << 20})
    root.process(500, COMM, rss_anon_kb=900 * 1024, cgroup_v2=GROUP)  # the largest: first to go
    root.finish()
    return root


@pytest.fixture
def odd_root(tmp_path: Path) -> FakeRoot:
    return odd_machine(tmp_path / "root")


def test_hostile_names_are_shown_and_never_break_the_layout(odd_root: FakeRoot) -> None:
    (frame,) = frames(odd_root.root, 1)
    assert frame.rank["candidates"][0]["pid"] == 500
    for lines in (layout(frame), layout(frame, 60, 40)):
        text = "\n".join(lines)
        assert not any(c in text for c in "\x1b\x07\x0c\x9b\u2028")  # no control reaches the terminal
        assert all(line == line.strip("\n") and "\n" not in line for line in lines)
        text.encode("utf-8")  # strict: no lone surrogate
    text = "\n".join(layout(frame))
    assert "pid 500 (\\x1b]0;pwn\\x07\\xff\\n)" in text
    assert "caf\u00e9-\\xff\\x1b[31m-\\x0c-\\u2028-\\x9b2J.service" in text


# --- the command -------------------------------------------------------------------------------


def test_without_a_terminal_it_prints_a_block_per_refresh(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    root = fixture_root("v2-systemd")
    clock = FakeClock()
    code = main(["top", "--root", str(root), "--count", "3", "--interval", "2"], clock=clock)
    out = capsysbinary.readouterr().out.decode("utf-8")
    assert code == EXIT_OK
    assert clock.now_us == 1_000_000 + 2 * 2_000_000  # two waits of 2 s: no wait after the last
    blocks = out.split("\n\nguardian top ")
    assert len(blocks) == 3
    assert out.startswith("guardian top ") and "every 2 s" in blocks[0]
    assert "\x1b" not in out  # plain lines for a log
    assert "(q quits)" not in out
    assert "live: measuring" in blocks[0] and "some 0.00%" in blocks[1]
    assert "zram       zram0: 2.0 GiB stored in 610.7 MiB of RAM" in blocks[2]


def test_policy_is_the_one_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = small_machine(tmp_path / "root")
    policy = tmp_path / "p.toml"
    policy.write_text("[scorers]\nkernel_badness = 1.0\ncause = 0\nrules = 0\n")
    code = main(["top", "--root", str(root.root), "--count", "1", "--policy", str(policy)], clock=FakeClock())
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert f"policy {policy})" in out
    assert "= kernel_badness 1 x " in out and " + cause 0 x " in out  # the policy's weights


@pytest.mark.parametrize("bad", ["0", "0.05", "-1", "nan", "inf", "soon"])
def test_interval_must_be_a_tenth_of_a_second_or_more(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["top", "--interval", bad, "--count", "1"])
    assert exc.value.code == EXIT_USAGE
    assert "0.1 or more" in capsys.readouterr().err
