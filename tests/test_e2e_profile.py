"""Profiling an end-to-end run: the opt-in (tests/e2e/vm.py: GUARDIAN_E2E_PROFILE, py-spy from its
wheel, what the guest is told) and the summary of py-spy's raw output (bench/profile.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from e2e import vm

ROOT = Path(__file__).resolve().parent.parent


def load_profile_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_profile", ROOT / "bench" / "profile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


profile = load_profile_script()

RAW = """\
run (guardian/daemon/service.py:160);tick (guardian/daemon/engine.py:250);read (guardian/host.py:12) 30
run (guardian/daemon/service.py:160);tick (guardian/daemon/engine.py:251) 10
run (guardian/daemon/service.py:160);walk (guardian/x.py:7);walk (guardian/x.py:9) 60
a line py-spy would not write
"""


def test_self_and_cumulative_counts_by_function() -> None:
    p = profile.parse_raw(RAW.splitlines())
    assert (p.samples, p.stacks) == (100, 3)
    assert p.self_counts["read (guardian/host.py)"] == 30
    assert p.self_counts["tick (guardian/daemon/engine.py)"] == 10
    assert p.cumulative["tick (guardian/daemon/engine.py)"] == 40
    assert p.cumulative["run (guardian/daemon/service.py)"] == 100
    # a recursive function counts once per sample, not once per level
    assert p.cumulative["walk (guardian/x.py)"] == 60
    # the innermost lines keep their numbers
    assert p.self_lines["walk (guardian/x.py:9)"] == 60
    assert p.self_lines["tick (guardian/daemon/engine.py:251)"] == 10


def test_function_of() -> None:
    assert profile.function_of("Waiter.wait (guardian/daemon/wakeups.py:309)") == (
        "Waiter.wait (guardian/daemon/wakeups.py)"
    )
    assert profile.function_of("<module> (guardian)") == "<module> (guardian)"  # no line to drop
    assert profile.function_of("_fscodec.<locals>.fsdecode (<frozen os>:818)") == (
        "_fscodec.<locals>.fsdecode (<frozen os>)"
    )
    assert profile.function_of("no parentheses") == "no parentheses"


def test_source_line_from_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "guardian").mkdir()
    (tmp_path / "guardian" / "x.py").write_text("def f():\n    return poll()\n")
    assert profile.source_line("f (guardian/x.py:2)", tmp_path) == "return poll()"
    assert profile.source_line("f (guardian/x.py:9)", tmp_path) == ""
    assert profile.source_line("f (elsewhere/y.py:1)", tmp_path) == ""


def test_summary_tables() -> None:
    window = profile.Window(seconds=10.0, rate=100, profiler_cpu_s=2.5)
    text = profile.summary(profile.parse_raw(RAW.splitlines()), top=2, window=window)
    assert "100 samples in 3 distinct stacks" in text
    assert "1.00 s of samples, 10.0 % of the 1000 samples asked for" in text
    assert "py-spy itself used 2.50 s of CPU" in text
    self_table = text.split("functions by self")[1].split("functions by cumulative")[0]
    assert "      60  60.0%  walk (guardian/x.py)" in self_table
    assert "      30  30.0%  read (guardian/host.py)" in self_table
    assert "tick" not in self_table  # only the top 2
    lines_table = text.split("lines by self")[1]
    assert "      60  60.0%  walk (guardian/x.py:9)" in lines_table
    assert profile.summary(profile.parse_raw([]), top=5) == "no samples in the profile"


def test_window() -> None:
    text = "start 40.5 guardian 315 rate 50 on-cpu\nend 86.0 profiler_cpu_ticks 1234 clk_tck 100\n"
    assert profile.read_window(text) == profile.Window(pytest.approx(45.5), 50, pytest.approx(12.34))
    assert profile.read_window("start 40.5 guardian 315 rate 100\nend 50.5\n") == profile.Window(
        pytest.approx(10.0), 100, None
    )
    assert profile.read_window("start 40.5 guardian 315\n") is None


def test_summarize_a_results_directory(tmp_path: Path) -> None:
    (tmp_path / "profile.txt").write_text(RAW)
    (tmp_path / "profile-window.txt").write_text("start 10.0 guardian 1 rate 100 on-cpu\nend 20.0\n")
    outcome = {
        "scenario": "zram-swap",
        "daemon": "guardian",
        "right_victim": True,
        "s_to_kill": 40.5,
        "worst_stall_ms": 28.3,
        "daemon_cpu_s": 10.8,
    }
    (tmp_path / "outcome.json").write_text(json.dumps(outcome))
    text = profile.summarize(tmp_path, top=3)
    assert "daemon CPU over the episode 10.8 s" in text
    assert "10.0 % of the 1000 samples asked for" in text
    assert profile.summarize(tmp_path / "profile.txt", top=3) == text


def test_summarize_without_a_profile_says_why(tmp_path: Path) -> None:
    (tmp_path / "profile.log").write_text("Error: Failed to find python version from target process\n")
    assert "Failed to find python version" in profile.summarize(tmp_path, top=3)


def test_profile_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vm.PROFILE_ENV, raising=False)
    assert vm.profile_mode() is None
    monkeypatch.setenv(vm.PROFILE_ENV, "1")
    assert vm.profile_mode() == "cpu"
    monkeypatch.setenv(vm.PROFILE_ENV, "idle")
    assert vm.profile_mode() == "idle"
    assert vm.profile_mode("0") is None  # an explicit value wins over the environment
    with pytest.raises(ValueError, match="expected 1, cpu or idle"):
        vm.profile_mode("yes")


def test_the_guest_is_told_only_when_profiling() -> None:
    assert "E2E_PROFILER" not in vm._run_in_guest_sh("smoke")
    cpu = vm._run_in_guest_sh("smoke", "cpu")
    assert "export E2E_PROFILER=/mnt/e2e/tools/py-spy\n" in cpu and "E2E_PROFILER_IDLE" not in cpu
    assert "export E2E_PROFILER_IDLE=1\n" in vm._run_in_guest_sh("smoke", "idle")


def fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"py_spy-{vm.PY_SPY_VERSION}.data/scripts/py-spy", b"\x7fELF not really")
        zf.writestr(f"py_spy-{vm.PY_SPY_VERSION}.dist-info/METADATA", "Name: py-spy\n")
    return path


def test_py_spy_from_the_pinned_wheel_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = fake_wheel(tmp_path / vm.PY_SPY_WHEEL)
    dest = tmp_path / "cache" / "py-spy"
    with pytest.raises(RuntimeError, match="sha256"):
        vm.py_spy_from_wheel(wheel, dest)
    assert not dest.exists()
    monkeypatch.setattr(vm, "PY_SPY_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert vm.py_spy_from_wheel(wheel, dest) == dest
    assert dest.read_bytes() == b"\x7fELF not really"
    assert dest.stat().st_mode & 0o777 == 0o755


def test_py_spy_binary_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "tools" / f"py-spy-{vm.PY_SPY_VERSION}" / "py-spy"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"binary")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached py-spy must not be fetched again")

    monkeypatch.setattr(vm.subprocess, "run", no_download)
    assert vm.py_spy_binary(tmp_path) == cached
