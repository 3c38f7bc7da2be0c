"""The peer benchmark's judging (tests/e2e/bench.py), on results directories laid out as a guest
run leaves them: who killed what, the right victim, bystanders, time to the kill, the stall.
The log lines are the peers' own formats (earlyoom 1.7, nohang 0.2, systemd-oomd 252, Linux 6.1)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
from e2e import bench, vm

from guardian.report import MSG_KILL


def scenario(tmp_path: Path) -> vm.Scenario:
    return vm.Scenario(
        name="hog-fast",
        path=tmp_path,
        check=lambda result: [],
        victim=("/system.slice/hog.service",),
        spared=("/system.slice/bystander.service",),
    )


def run_dir(
    tmp_path: Path,
    *,
    journal: Sequence[dict[str, Any]] = (),
    dmesg: str = "",
    console: str = "",
    pids: Optional[dict[str, Any]] = None,
    noted: Sequence[tuple[float, float]] = (),
    timed_out: bool = False,
    bystanders: str = "bystander.service active\n",
    probe_state: str = "active",
    into: Optional[Path] = None,
) -> vm.RunResult:
    d = into or tmp_path / "run"
    d.mkdir(parents=True)
    (d / "qemu.json").write_text(
        json.dumps({"command": ["qemu"], "returncode": 0, "timed_out": timed_out, "wall_s": 50.0})
    )
    (d / "console.log").write_text(console)
    if not timed_out:
        (d / "exit_status").write_text("0\n")
        (d / "dmesg.txt").write_text(dmesg)
        (d / "journal.json").write_text("".join(json.dumps(e) + "\n" for e in journal))
        (d / "bench-end.txt").write_text("60.00 100.0\n")
        (d / "bystanders.txt").write_text(bystanders)
        (d / "scenario.log").write_text(f"[59.9] latency probe: {probe_state} success\n")
    (d / "bench-start.txt").write_text("20.00 40.0\n")
    (d / "watch.json").write_text(json.dumps({"poll_s": 0.1, "ended": 60.0, "pids": pids or {}}))
    (d / "probe.json").write_text(
        json.dumps({"sleeps": 4000, "worst_ms": max([5.0] + [n[1] for n in noted]), "noted": list(noted)})
    )
    return vm.read_result(d, "hog-fast")


def pid(cgroup: str, comm: str, gone: Optional[float]) -> dict[str, Any]:
    return {"cgroup": cgroup, "comm": comm, "seen": 10.0, "gone": gone}


D = bench.DASH  # the en dash of the table's ranges
HOG = "/system.slice/hog.service"
BYSTANDER = "/system.slice/bystander.service"


def test_earlyoom_kill_is_read_from_its_log_and_timed_by_the_watcher(tmp_path: Path) -> None:
    result = run_dir(
        tmp_path,
        journal=[
            {
                "_SYSTEMD_UNIT": "earlyoom.service",
                "__MONOTONIC_TIMESTAMP": "23100000",
                "MESSAGE": "low memory! at or below SIGTERM limits: mem 10.00%, swap 10.00%",
            },
            {
                "_SYSTEMD_UNIT": "earlyoom.service",
                "__MONOTONIC_TIMESTAMP": "23200000",
                "MESSAGE": 'sending SIGTERM to process 304 uid 0 "stress-ng-vm": badness 1723, VmRSS 564 MiB',
            },
        ],
        pids={"304": pid(HOG, "stress-ng-vm", 23.5), "200": pid(BYSTANDER, "python3", None)},
        noted=[(10.0, 900.0), (23.3, 140.0)],
    )
    o = bench.analyse(scenario(tmp_path), "earlyoom", result, [])
    assert o.kernel_oom_kills == 0
    assert o.right_victim is True and o.bystanders_lost == []
    assert o.s_to_kill == pytest.approx(3.5)  # gone at 23.5, the pressure started at 20.0
    assert o.worst_stall_ms == 140.0  # the 900 ms before the pressure started does not count
    assert o.kills[0]["by"] == "earlyoom" and o.kills[0]["comm"] == "stress-ng-vm"


def test_kernel_kills_with_no_daemon_count_and_name_their_cgroup(tmp_path: Path) -> None:
    dmesg = (
        "[   31.100000] stress-ng-vm invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=1000\n"
        "[   31.200000] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        "oom_memcg=/system.slice/hog.service,task_memcg=/system.slice/hog.service,task=stress-ng-vm,pid=304,uid=0\n"
        "[   31.200100] Memory cgroup out of memory: Killed process 304 (stress-ng-vm) total-vm:600000kB, "
        "anon-rss:500000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1200kB oom_score_adj:1000\n"
    )
    o = bench.analyse(scenario(tmp_path), "none", run_dir(tmp_path, dmesg=dmesg), [])
    assert o.kernel_oom_kills == 1
    assert o.right_victim is True
    assert o.kills[0] == {"by": "kernel", "pid": 304, "cgroup": HOG, "comm": "stress-ng-vm", "at": 31.2001}
    assert o.s_to_kill == pytest.approx(11.2001)
    assert o.worst_stall_ms == 5.0


def test_a_hung_guest_is_judged_from_the_serial_console(tmp_path: Path) -> None:
    console = "[  200.000001] Out of memory: Killed process 200 (python3) total-vm:1kB, anon-rss:1kB\n"
    result = run_dir(
        tmp_path, console=console, timed_out=True, pids={"200": pid(BYSTANDER, "python3", 200.5)}
    )
    o = bench.analyse(scenario(tmp_path), "none", result, [])
    assert not o.finished and o.timed_out
    assert o.kernel_oom_kills == 1
    assert o.right_victim is False and o.bystanders_lost == ["bystander.service"]
    assert "hung" in o.row()[-1]


def test_nohang_victim_is_the_pid_it_printed_before_sending(tmp_path: Path) -> None:
    lines = [
        "Process with highest badness (found in 3ms):",
        "  PID: 200, Name: python3, badness: 300",  # a candidate it then passed over
        "Victim status (found in 4ms):",
        "  PID:       304, name: stress-ng-vm, state: R (running), EUID: 0, SID: 1 (systemd), lifetime: 3.1 s",
        "Implementing a corrective action:",
        "  Sending SIGTERM to the victim",
        "OK; total response time: 12ms",
    ]
    journal = [
        {"_SYSTEMD_UNIT": "nohang.service", "__MONOTONIC_TIMESTAMP": str(25_000_000 + i), "MESSAGE": m}
        for i, m in enumerate(lines)
    ]
    o = bench.analyse(
        scenario(tmp_path),
        "nohang",
        run_dir(tmp_path, journal=journal, pids={"304": pid(HOG, "stress-ng-vm", 25.3)}),
        [],
    )
    assert [(k["by"], k["pid"]) for k in o.kills] == [("nohang", 304)]
    assert o.right_victim is True


def test_systemd_oomd_kills_a_cgroup_and_every_pid_gone_from_it_counts(tmp_path: Path) -> None:
    journal = [
        {
            "_SYSTEMD_UNIT": "systemd-oomd.service",
            "__MONOTONIC_TIMESTAMP": "50000000",
            "MESSAGE": "Killed /system.slice/bystander.service due to memory pressure for /system.slice being 71.00% > 60.00% for > 30s with reclaim activity",
        }
    ]
    pids = {"200": pid(BYSTANDER, "python3", 50.1), "304": pid(HOG, "stress-ng-vm", None)}
    o = bench.analyse(scenario(tmp_path), "systemd-oomd", run_dir(tmp_path, journal=journal, pids=pids), [])
    assert [(k["by"], k["pid"], k["cgroup"]) for k in o.kills] == [("systemd-oomd", 200, BYSTANDER)]
    assert o.right_victim is False
    assert o.bystanders_lost == ["bystander.service"]


def test_guardian_kills_and_a_lost_probe(tmp_path: Path) -> None:
    journal = [
        {
            "MESSAGE_ID": MSG_KILL,
            "__MONOTONIC_TIMESTAMP": "21000000",
            "GUARDIAN_OUTCOME": "terminated",
            "GUARDIAN_VICTIM_PID": "304",
            "GUARDIAN_VICTIM_CGROUP": HOG,
        },
        {  # not guardian's kill: the kernel was already at it
            "MESSAGE_ID": MSG_KILL,
            "__MONOTONIC_TIMESTAMP": "21500000",
            "GUARDIAN_OUTCOME": "already-dying",
            "GUARDIAN_VICTIM_PID": "305",
            "GUARDIAN_VICTIM_CGROUP": HOG,
        },
    ]
    result = run_dir(tmp_path, journal=journal, probe_state="failed", bystanders="bystander.service failed\n")
    o = bench.analyse(scenario(tmp_path), "guardian", result, [])
    assert [k["pid"] for k in o.kills] == [304]
    assert o.s_to_kill == pytest.approx(1.0)  # no watcher record: the log's time
    assert o.right_victim is True
    assert o.bystanders_lost == ["bystander.service", "e2e-probe.service"]


def test_markdown_keeps_the_prose_around_the_table(tmp_path: Path) -> None:
    doc = tmp_path / "benchmark.md"
    doc.write_text(f"# Title\n\nbefore\n\n{bench.TABLE_BEGIN}\nold\n{bench.TABLE_END}\n\nafter\n")
    bench.write_markdown(doc, "new table\n")
    assert (
        doc.read_text()
        == f"# Title\n\nbefore\n\n{bench.TABLE_BEGIN}\nnew table\n{bench.TABLE_END}\n\nafter\n"
    )


def test_daemon_cpu_and_a_victim_service_that_ended_whole(tmp_path: Path) -> None:
    s = vm.Scenario(
        name="many-procs",
        path=tmp_path,
        check=lambda result: [],
        victim=("/system.slice/fleet-proc.service",),
    )
    result = run_dir(tmp_path, bystanders="fleet-proc.service failed\n")
    (result.results_dir / "daemon-cpu-start.txt").write_text("1500000000\n")
    (result.results_dir / "daemon-cpu-end.txt").write_text("2250000000\n")
    o = bench.analyse(s, "earlyoom", result, [])
    assert o.daemon_cpu_s == pytest.approx(0.75)
    assert o.bystanders_lost == []  # the victim's own service is not a bystander...
    assert o.notes == ["all of fleet-proc.service ended"]  # ...but losing all of it is noted
    # a restart starts systemd's count again: only the new instance's
    (result.results_dir / "daemon-cpu-end.txt").write_text("400000000\n")
    assert bench.daemon_cpu(result) == pytest.approx(0.4)


# --- several runs per cell ---------------------------------------------------------------------


def outcome(
    daemon: str = "guardian",
    *,
    stall: Optional[float] = 5.0,
    right: Optional[bool] = True,
    by: str = "",
    kernel: int = 0,
    lost: Sequence[str] = (),
    s_to_kill: Optional[float] = 3.0,
    cpu: Optional[float] = 0.5,
    notes: Sequence[str] = (),
    timed_out: bool = False,
) -> bench.Outcome:
    """An outcome as outcome.json holds it, for the table alone."""
    kills = []
    if right is not None:
        kills = [
            {"by": by or daemon, "pid": 304, "cgroup": HOG if right else BYSTANDER, "comm": "x", "at": 23.0}
        ]
    return bench.Outcome(
        scenario="hog-fast",
        daemon=daemon,
        finished=not timed_out,
        timed_out=timed_out,
        kernel_oom_kills=kernel,
        kills=kills,
        right_victim=right,
        bystanders_lost=list(lost),
        s_to_kill=s_to_kill,
        worst_stall_ms=stall,
        probe_sleeps=4000,
        daemon_cpu_s=cpu,
        notes=list(notes),
        failures=[],
        wall_s=50.0,
    )


def rows(outcomes: Sequence[bench.Outcome]) -> list[list[str]]:
    """The table's rows below its header, split into columns."""
    return [line[2:-2].split(" | ") for line in bench.table(outcomes).splitlines()[2:]]


def test_a_cell_of_one_run_renders_as_it_always_did() -> None:
    one = outcome("earlyoom", stall=140.0, lost=["bystander.service"], notes=["all of hog.service ended"])
    assert bench.table([one]).splitlines()[2] == (
        "| hog-fast | earlyoom | 0 | yes (hog.service, earlyoom) | 1 (bystander.service) | 3.0 | 140 "
        "| 0.50 | all of hog.service ended |"
    )
    assert rows([one]) == [one.row()]
    # beside a cell of three runs, and with no daemon, too
    many = [outcome(stall=30.0), outcome(stall=40.0), outcome(stall=50.0)]
    alone = outcome("none", stall=12.0, cpu=None)
    assert (
        rows([*many, alone])[1]
        == alone.row()
        == ["hog-fast", "none", "0", "yes (hog.service, none)", "0", "3.0", "<20", "-", ""]
    )


def test_runs_of_a_cell_give_medians_a_stall_range_and_their_disagreements() -> None:
    runs = [
        outcome("earlyoom", stall=42.0, s_to_kill=3.0, cpu=0.10),
        outcome("earlyoom", stall=28.0, s_to_kill=4.0, cpu=0.30, kernel=2),
        outcome(
            "earlyoom",
            stall=61.0,
            s_to_kill=9.0,
            cpu=0.20,
            right=False,
            by="kernel",
            lost=["bystander.service"],
        ),
    ]
    [row] = rows(runs)
    assert row == [
        "hog-fast",
        "earlyoom",
        f"0{D}2",
        "yes (hog.service, earlyoom), **2/3 runs**; also **no** (bystander.service, kernel)",
        "0, **2/3 runs**; also 1 (bystander.service)",
        "4.0 (3 runs)",
        f"42 (28{D}61, 3 runs)",
        "0.20 (3 runs)",
        "",
    ]
    agreeing = [outcome("nohang", stall=s, kernel=1) for s in (25.0, 30.0)]
    assert rows(agreeing)[0][2:8] == [
        "1",
        "yes (hog.service, nohang), 2/2 runs",
        "0, 2/2 runs",
        "3.0 (2 runs)",
        f"28 (25{D}30, 2 runs)",
        "0.50 (2 runs)",
    ]


def test_stalls_under_the_probe_resolution_and_runs_without_a_number() -> None:
    runs = [outcome(stall=5.0), outcome(stall=19.9), outcome(stall=30.0)]
    assert rows(runs)[0][6] == f"<20 (<20{D}30, 3 runs)"
    assert rows([outcome(stall=5.0), outcome(stall=12.0)])[0][6] == "<20 (2 runs)"
    assert rows([outcome(stall=9000.0), outcome(stall=25_000.0), outcome(stall=30_000.0)])[0][6] == (
        f"25 s (9.0{D}30 s, 3 runs)"
    )
    # a run that never got to mark its pressure's start has no stall, nothing killed: no time to a kill
    partial = [outcome(stall=40.0), outcome(stall=None, right=None, s_to_kill=None), outcome(stall=60.0)]
    row = rows(partial)[0]
    assert row[3] == "yes (hog.service, guardian), **2/3 runs**; also -"
    assert row[5] == "3.0 (2 of 3 runs)"
    assert row[6] == f"50 (40{D}60, 2 of 3 runs)"
    none = [outcome("none", cpu=None), outcome("none", cpu=None)]
    assert rows(none)[0][7] == "-"


def test_notes_of_some_runs_only_say_how_many() -> None:
    runs = [
        outcome("nohang", notes=["all of hog.service ended"]),
        outcome("nohang", timed_out=True),
        outcome("nohang", notes=["all of hog.service ended"]),
    ]
    assert rows(runs)[0][8] == (
        "all of hog.service ended (2/3 runs); guest hung: killed at the run's time limit (1/3 runs)"
    )


def cell_of(daemon: str, *stalls: float) -> list[bench.Outcome]:
    return [outcome(daemon, stall=s) for s in stalls]


def test_guardian_stall_against_the_best_peer_beyond_noise() -> None:
    outcomes = [
        *cell_of("guardian", 100.0, 110.0, 120.0),  # median 110, range 20
        *cell_of("earlyoom", 60.0, 65.0, 70.0),  # the best peer: median 65, range 10
        *cell_of("nohang", 80.0, 90.0, 100.0),
        *cell_of("none", 20.0, 20.0, 20.0),  # not a peer
    ]
    notes = {row[1]: row[8] for row in rows(outcomes)}
    # 110 - 65 = 45 ms apart, 20 ms of it noise (the larger range)
    assert notes == {
        "guardian": "stall vs best peer (earlyoom): +25 ms beyond noise",
        "earlyoom": "",
        "nohang": "",
        "none": "",
    }
    lower = [*cell_of("guardian", 20.0, 25.0, 30.0), *cell_of("earlyoom", 60.0, 65.0, 70.0)]
    assert rows(lower)[0][8] == "stall vs best peer (earlyoom): -30 ms beyond noise"  # 40 apart, 10 of noise


def test_guardian_stall_within_noise_and_only_from_three_runs() -> None:
    close = [*cell_of("guardian", 60.0, 100.0, 140.0), *cell_of("nohang", 50.0, 70.0, 90.0)]
    assert rows(close)[0][8] == "stall vs best peer (nohang): within noise"  # 30 ms apart, 80 of noise
    under = [*cell_of("guardian", 5.0, 12.0, 19.0), *cell_of("earlyoom", 8.0, 30.0, 4.0)]
    assert rows(under)[0][8] == "stall vs best peer (earlyoom): within noise"  # 20 against 20, range 10
    two_runs = [*cell_of("guardian", 100.0, 300.0, 200.0), *cell_of("earlyoom", 20.0, 20.0)]
    assert rows(two_runs)[0][8] == ""
    assert rows([*cell_of("guardian", 100.0, 300.0), *cell_of("earlyoom", 20.0, 20.0, 20.0)])[0][8] == ""


def test_the_stall_noise_is_the_median_spread_of_each_daemon() -> None:
    assert bench.stall_noise([outcome(), outcome("earlyoom")]) == (
        "Stall noise: not estimated, no cell has 3 runs or more (`--repeat 3` runs each cell 3 times)."
    )
    other = [dataclasses.replace(o, scenario="leak-slow") for o in cell_of("guardian", 40.0, 100.0, 70.0)]
    text = bench.stall_noise(
        [
            *cell_of("guardian", 10.0, 30.0, 50.0),
            *other,
            *cell_of("earlyoom", 40.0, 45.0, 50.0),
            outcome("nohang"),
        ]
    )
    assert (
        "median spread (max - min over a cell's runs) of the worst stall is guardian 45 ms (2 cells, largest 60 ms), "
        in text
    )
    assert "earlyoom 10 ms (1 cell, largest 10 ms), nohang not estimated (no cell with 3 runs)." in text
    assert "no larger than the larger of their two ranges is within noise" in text


# --- the results tree: --repeat, --reuse, --report-only ----------------------------------------


def fake_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """main() with run_one as a stand-in for a guest run (empties its directory the way
    vm.run_scenario does, writes a run there); returns the directories it ran into."""
    ran: list[Path] = []

    def run_one(scenario: vm.Scenario, daemon: str, results: Path, image: Any) -> bench.Outcome:
        assert not (results / bench.RUNS_DIR).exists()  # the other runs are out of the way
        if results.exists():
            shutil.rmtree(results)
        ran.append(results)
        return bench.judge(scenario, daemon, run_dir(tmp_path, into=results, noted=[(30.0, 30.0)]))

    monkeypatch.setattr(bench, "run_one", run_one)
    monkeypatch.setattr(bench.vm, "qemu_problem", lambda: None)
    monkeypatch.setattr(bench.vm, "find_image", object)
    return ran


def bench_main(results: Path, *args: str) -> int:
    return bench.main(["--daemons", "earlyoom", "--scenarios", "hog-fast", "--results", str(results), *args])


def test_repeat_puts_the_first_run_where_it_always_was_and_reuse_adds_the_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = fake_runs(monkeypatch, tmp_path)
    results = tmp_path / "bench"
    cell = results / "earlyoom" / "hog-fast"
    assert bench_main(results, "--repeat", "2") == 0
    assert ran == [cell, cell / "runs" / "2"]
    assert (cell / "outcome.json").is_file() and (cell / "runs" / "2" / "outcome.json").is_file()

    ran.clear()
    assert bench_main(results, "--repeat", "3", "--reuse") == 0
    assert ran == [cell / "runs" / "3"]
    assert (
        "| hog-fast | earlyoom | 0 | -, 3/3 runs | 0, 3/3 runs | - | 30 (3 runs) | - |  |"
        in capsys.readouterr().out
    )

    # the first run missing: it is run again, and the others stay
    (cell / "qemu.json").unlink()
    ran.clear()
    assert bench_main(results, "--repeat", "3", "--reuse") == 0
    assert ran == [cell]
    assert bench.kept_runs(cell) == [cell, cell / "runs" / "2", cell / "runs" / "3"]

    # a new pass without --reuse starts every cell again: no run of the old pass is left
    ran.clear()
    assert bench_main(results, "--repeat", "2") == 0
    assert ran == [cell, cell / "runs" / "2"]
    assert bench.kept_runs(cell) == [cell, cell / "runs" / "2"]


def test_report_only_reads_every_finished_run_of_a_cell(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def find_image() -> vm.Image:
        raise vm.ImageUnavailable("no image here")

    monkeypatch.setattr(bench.vm, "find_image", find_image)
    results = tmp_path / "bench"
    cell = results / "earlyoom" / "hog-fast"
    for where, stall in ((cell, 42.0), (cell / "runs" / "2", 28.0), (cell / "runs" / "3", 61.0)):
        run_dir(tmp_path, into=where, noted=[(30.0, stall)])
    (cell / "runs" / "4").mkdir()  # an unfinished run (no qemu.json) and a stray directory
    (cell / "runs" / "notes").mkdir()
    assert bench_main(results, "--report-only") == 0
    out = capsys.readouterr().out
    assert f"| hog-fast | earlyoom | 0 | -, 3/3 runs | 0, 3/3 runs | - | 42 (28{D}61, 3 runs) | - |  |" in out
    assert "bench: 3 runs" in out


def test_a_first_run_that_fails_leaves_the_other_runs_in_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_runs(monkeypatch, tmp_path)
    results = tmp_path / "bench"
    cell = results / "earlyoom" / "hog-fast"
    run_dir(tmp_path, into=cell / "runs" / "2")

    def broken(scenario: vm.Scenario, daemon: str, results: Path, image: Any) -> bench.Outcome:
        raise RuntimeError("qemu-img failed")

    monkeypatch.setattr(bench, "run_one", broken)
    with pytest.raises(RuntimeError):
        bench_main(results, "--repeat", "2", "--reuse")
    assert bench.kept_runs(cell) == [cell / "runs" / "2"]
    assert sorted(p.name for p in cell.parent.iterdir()) == ["hog-fast"]  # nothing left set aside


def test_the_installation_scenarios_build_their_packages_and_stay_out_of_the_benchmark() -> None:
    by_name = {s.name: s for s in map(vm.load_scenario, vm.scenario_dirs())}
    assert by_name["deb-install"].debs == ("",)  # the checkout's own version
    upgrade = by_name["deb-upgrade"]
    assert upgrade.debs == (upgrade.env["OLD_VERSION"], "")  # an older build, then the checkout's
    assert not by_name["deb-install"].bench and not upgrade.bench
    assert by_name["smoke"].bench and by_name["smoke"].debs == ()
