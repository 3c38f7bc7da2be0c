"""``guardian status`` through the CLI: output, exit codes, and the documented JSON keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import documented_keys, report_keys, write
from support.clock import FakeClock
from support.kmsglog import KMSG_FIXTURES

from guardian.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """A minimal unified host: enough for every status key to appear."""
    write(
        tmp_path,
        "proc/meminfo",
        "MemTotal: 1048576 kB\nMemFree: 100000 kB\nMemAvailable: 200000 kB\n"
        "SwapTotal: 1048576 kB\nSwapFree: 524288 kB\nCommitLimit: 1572864 kB\n"
        "Committed_AS: 900000 kB\nAnonPages: 700000 kB\nShmem: 1000 kB\n",
    )
    for resource in ("memory", "cpu", "io"):
        write(
            tmp_path,
            f"proc/pressure/{resource}",
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=900000\n"
            "full avg10=2.00 avg60=1.00 avg300=0.50 total=300000\n",
        )
    write(tmp_path, "proc/vmstat", "pgscan_kswapd 100\npgsteal_kswapd 90\noom_kill 1\n")
    write(tmp_path, "proc/sys/vm/panic_on_oom", "1\n")
    write(tmp_path, "proc/sys/vm/overcommit_memory", "2\n")
    write(tmp_path, "sys/block/zram0/disksize", "1073741824\n")
    write(tmp_path, "sys/block/zram0/mm_stat", "4096 1024 8192 0 8192 0 0 0 0\n")
    write(
        tmp_path,
        "proc/self/mountinfo",
        "35 24 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
    )
    write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    svc = "sys/fs/cgroup/system.slice/web.service"
    write(tmp_path, f"{svc}/memory.current", "480000000\n")
    write(tmp_path, f"{svc}/memory.max", "500000000\n")
    write(tmp_path, f"{svc}/memory.high", "max\n")
    write(tmp_path, f"{svc}/memory.swap.current", "0\n")
    write(tmp_path, f"{svc}/memory.oom.group", "0\n")
    write(tmp_path, f"{svc}/memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
    write(
        tmp_path,
        f"{svc}/memory.pressure",
        "some avg10=40.00 avg60=10.00 avg300=2.00 total=5000000\n"
        "full avg10=20.00 avg60=5.00 avg300=1.00 total=2000000\n",
    )
    write(tmp_path, "sys/fs/cgroup/system.slice/memory.current", "490000000\n")
    write(tmp_path, "sys/fs/cgroup/system.slice/memory.max", "max\n")
    write(tmp_path, "dev/kmsg", (KMSG_FIXTURES / "linux-6.18-memcg.kmsg").read_text())
    return tmp_path


def run_json(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    code = main(["status", "--json", "--root", str(root), *extra], clock=FakeClock())
    assert code == EXIT_OK
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_status_json(small_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(small_root, capsys)
    assert report["memory"]["total_bytes"] == 1048576 * 1024
    assert report["memory"]["swap_free_pct"] == 50.0
    assert report["psi"]["memory"]["some"]["avg10"] == 12.5
    # the fake clock moved 0.5 s but the file did not change: no stall
    assert report["psi"]["memory"]["live"] == {"window_us": 500_000, "some_pct": 0.0, "full_pct": 0.0}
    first = report["cgroups"][0]
    assert first["path"] == "/system.slice/web.service"  # 96 % of its limit: most concerning
    assert first["headroom_bytes"] == 20_000_000
    assert first["events"]["max"] == 7
    assert first["pressure"]["full"]["avg10"] == 20.0
    warnings = " ".join(report["overcommit"]["warnings"])
    assert "vm.panic_on_oom=1" in warnings and "vm.overcommit_memory=2" in warnings


def test_status_text(small_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--root", str(small_root)], clock=FakeClock()) == EXIT_OK
    out = capsys.readouterr().out
    assert "WARNING    vm.panic_on_oom=1" in out
    assert "closest to their limit:" in out and "/system.slice/web.service" in out
    assert "most memory pressure:" in out
    assert "zram       zram0" in out


def test_status_shows_the_kernel_s_oom_kills(small_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel's count since boot, the groups whose counter is not 0, and the last kills in
    the kernel log's buffer (here a recording of this machine's /dev/kmsg: two memcg kills)."""
    kernel = run_json(small_root, capsys)["kernel_oom_kills"]
    assert kernel["since_boot"] == 1
    assert kernel["cgroups"] == [{"path": "/system.slice/web.service", "oom_kill": 1}]
    log = kernel["log"]
    assert log["readable"] and log["reason"] is None and log["kills"] == 2
    first = log["recent"][0]
    assert first["pid"] == 29889 and first["comm"] == "python"
    assert first["cgroup"] == first["oom_memcg"] == "/guardian-test-30351-d5ad5646"
    assert first["constraint"] == "CONSTRAINT_MEMCG" and first["context"] == "Memory cgroup out of memory"
    assert first["anon_rss_bytes"] == 127616 * 1024 and first["kernel_time_us"] == 16276056770
    assert main(["status", "--root", str(small_root), "--interval", "0"], clock=FakeClock()) == EXIT_OK
    out = capsys.readouterr().out
    assert "kernel OOM kills: 1 since boot" in out
    assert "  the last 2 of 2 still in the kernel log:" in out
    assert (
        "[16276.056770] pid 29889 (python) in /guardian-test-30351-d5ad5646: memory cgroup "
        "/guardian-test-30351-d5ad5646, anon-rss 124.6 MiB"
    ) in out


def test_status_says_why_the_kernel_log_cannot_be_read(
    small_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (small_root / "dev/kmsg").unlink()
    log = run_json(small_root, capsys, "--interval", "0")["kernel_oom_kills"]["log"]
    assert log == {
        "readable": False,
        "reason": f"{small_root}/dev/kmsg: No such file or directory",
        "kills": 0,
        "recent": [],
    }
    assert main(["status", "--root", str(small_root), "--interval", "0"], clock=FakeClock()) == EXIT_OK
    assert "  the kernel log cannot be read: " in capsys.readouterr().out


def test_status_skip_live_rate(small_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(small_root, capsys, "--interval", "0")["psi"]["memory"]["live"] is None


def test_missing_root_is_a_sentence_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--root", str(tmp_path / "nowhere")], clock=FakeClock())
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith("guardian status: meminfo is unavailable: ")
    assert "does not exist" in err and "Traceback" not in err


def test_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["status", "--interval", "-1"])
    assert info.value.code == EXIT_USAGE
    assert "must be >= 0" in capsys.readouterr().err


def readme_notation(key: str) -> str:
    key = re.sub(r"^psi\.(memory|cpu|io)(?=\.(some|full))", "psi.<resource>", key)
    key = re.sub(r"^psi\.(cpu|io)$", "psi.<resource>", key)
    key = re.sub(r"^psi\.memory$", "psi.<resource>", key)
    return re.sub(r"\.(some|full)(?=\.|$)", r".<some\\|full>", key)


def test_readme_documents_every_status_key(small_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(small_root, capsys)
    keys = report_keys(report, maps=("events",))  # events: a map of kernel counters
    missing = sorted({readme_notation(k) for k in keys} - documented_keys())
    assert missing == [], missing
