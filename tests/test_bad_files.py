"""One bad file costs that group or that process, never the command or the daemon.

Each case below made ``guardian rank`` and ``guardian status`` exit with a traceback or a parse
error, and ``guardian run`` fail at start, before the readers learnt what a bad file costs
(guardian/sources/cgroups.py, module docstring): per-cgroup data that does not parse makes that
group's memory (or pressure, or procs) unavailable, an optional value reads as absent, a process
whose files do not parse is skipped, and machine-wide files degrade (a mountinfo line is
skipped, a sysctl takes the kernel default and is reported unavailable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.machine import CONTAINER, DB, WEB, small_machine, v1_dir, v2_dir
from support.sinks import MemorySink

from guardian.cli import EXIT_OK, main
from guardian.config import parse_policy
from guardian.daemon.engine import Engine
from guardian.daemon.wakeups import Waiter
from guardian.errors import Malformed, ParseError, Unavailable
from guardian.host import Host, parse_mountinfo
from guardian.loaded import Loaded
from guardian.plugins import make_plugin_manager
from guardian.report import Reporter
from guardian.sample import Sample
from guardian.selection import Selector
from guardian.sources import cgroups as cg
from guardian.sources.processes import read_processes
from guardian.sources.psi import read_cgroup_pressure
from guardian.sources.vmstat import read_vm_sysctl

# (name, layout, how to break the root)
Break = Callable[[FakeRoot], None]


def _append(rel: str, text: str) -> Break:
    def apply(root: FakeRoot) -> None:
        root.write(rel, (root.root / rel.lstrip("/")).read_text() + text)

    return apply


CASES: list[tuple[str, str, Break]] = [
    ("empty memory.max", "unified", lambda r: r.write(f"{v2_dir(r, WEB)}/memory.max", "")),
    ("garbage memory.current", "unified", lambda r: r.write(f"{v2_dir(r, WEB)}/memory.current", "lots\n")),
    ("garbage memory.min", "unified", lambda r: r.write(f"{v2_dir(r, CONTAINER)}/memory.min", "12q\n")),
    ("garbage memory.swap.max", "unified", lambda r: r.write(f"{v2_dir(r, WEB)}/memory.swap.max", "-\n")),
    ("garbage memory.events", "unified", lambda r: r.write(f"{v2_dir(r, WEB)}/memory.events", "oom x\n")),
    (
        "garbage v1 memory.oom_control",
        "hybrid",
        lambda r: r.write(f"{v1_dir(r, WEB)}/memory.oom_control", "oom_kill_disable 0\nunder_oom no\n"),
    ),
    ("oom_score_adj abc", "unified", lambda r: r.write("/proc/200/oom_score_adj", "abc\n")),
    (
        "\\999 in mountinfo",
        "unified",
        _append("/proc/self/mountinfo", "99 1 0:99 / /mnt/a\\999b rw,relatime - tmpfs tmpfs rw\n"),
    ),
    ("abc in cgroup.procs", "unified", lambda r: r.write(f"{v2_dir(r, WEB)}/cgroup.procs", "200\nabc\n")),
    ("empty vm.swappiness", "unified", lambda r: r.write("/proc/sys/vm/swappiness", "")),
    ("empty vm.panic_on_oom", "unified", lambda r: r.write("/proc/sys/vm/panic_on_oom", "")),
    (
        "nan in memory.pressure",
        "unified",
        lambda r: r.write(
            f"{v2_dir(r, WEB)}/memory.pressure",
            "some avg10=nan avg60=0.00 avg300=0.00 total=0\nfull avg10=inf avg60=0.00 avg300=0.00 total=0\n",
        ),
    ),
    ("garbage zram mm_stat", "unified", lambda r: r.write("/sys/block/zram0/mm_stat", "x y z\n")),
    ("garbage process status", "unified", lambda r: r.write("/proc/201/status", "Name:\tworker\nUid:\tq\n")),
    (
        "a directory for memory.max",
        "unified",
        lambda r: (
            (r.root / f"{v2_dir(r, DB)[1:]}/memory.max").unlink()
            or (r.root / f"{v2_dir(r, DB)[1:]}/memory.max").mkdir()
        ),
    ),
]

POLICY = """
[machine]
mem_available = { term = "60%", kill = "5%" }
psi = { kind = "some", stall_pct = 10, duration_s = 0 }
[[cgroup]]
match = "system.slice/*.service"
min_headroom = { term = "90%", kill = "4%" }
events = { oom_per_s = 0 }
psi = { kind = "some", stall_pct = 10, duration_s = 0 }
[[cgroup]]
match = "kubepods.slice/**"
min_headroom = { term = "90%" }
action = "group"
[scorers]
kernel_badness = 1.0
cgroup_largest = 1.0
kubelet_qos = 1.0
rules = 1.0
"""


def strict_json(text: str) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = main(list(argv), clock=FakeClock())
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "Traceback" not in captured.err
    return strict_json(captured.out)


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    name, layout, apply = request.param
    root = small_machine(tmp_path / "root", layout)
    apply(root)
    return name, tmp_path / "root"


def test_status_and_rank_complete(broken: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, root = broken
    policy = root.parent / "policy.toml"
    policy.write_text(POLICY)
    status = run(capsys, "status", "--json", "--interval", "0", "--root", str(root))
    assert status["cgroups"], "the groups whose files are fine are still listed"
    for scope in ("/", "/system.slice", WEB, "/kubepods.slice"):
        for mode in ("process", "cgroup"):
            report = run(
                capsys,
                "rank", "--json", "--explain", "--mode", mode, "--scope", scope,
                "--policy", str(policy), "--root", str(root),
            )  # fmt: skip
            assert report["scope"] == scope
    # the text views too
    assert main(["status", "--interval", "0", "--root", str(root)], clock=FakeClock()) == EXIT_OK
    assert (
        main(["rank", "--explain", "--root", str(root), "--policy", str(policy)], clock=FakeClock())
        == EXIT_OK
    )


def test_the_daemon_starts_and_ticks(broken: tuple[str, Path]) -> None:
    """What ``guardian run`` does before its loop, then ticks with every condition evaluated."""
    _, root = broken
    policy = parse_policy(POLICY, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    clock = FakeClock()
    g = Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(MemorySink()), clock)
    now = clock.monotonic_us()
    g.rescan(Sample(g.host, now), now, force=True)
    assert WEB in g.watched and DB in g.watched
    waiter = Waiter()  # under a fake root nothing is written: PSI is polled
    wake_plan = g.wake_plan(Sample(g.host, now))
    g.use_wakeups(wake_plan, waiter.arm(wake_plan))
    try:
        results = []
        for _ in range(3):
            clock.advance(1.0)
            results.append(g.tick())
    finally:
        waiter.close()
    # the groups whose files still read are past their headroom TERM line on every tick (the
    # machine is not: SwapFree is above its line)...
    assert all(r.assessment.triggers for r in results)
    # ...and the first tick ranked and decided for each (dry runs: a fake root is not signalled)
    assert len(results[0].started) == len(results[0].assessment.triggers)


# --- what each bad file costs, precisely -------------------------------------------------------


def test_a_malformed_required_value_makes_the_group_unavailable(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    root.write(f"{v2_dir(root, WEB)}/memory.max", "")
    host = Host(tmp_path / "root")
    with pytest.raises(Malformed, match=r"memory\.max.*expected bytes or 'max'") as info:
        cg.read_cgroup_memory(host, WEB)
    assert isinstance(info.value, Unavailable)  # every caller that skips a missing group skips this
    assert cg.read_cgroup_memory(host, DB).max_bytes == 2 << 30  # the others are untouched
    status = Sample(host, 0)
    with pytest.raises(Unavailable):
        status.cgroup(WEB).memory  # noqa: B018 - the read is the test


def test_a_malformed_optional_value_reads_as_absent(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    for name in ("memory.min", "memory.low", "memory.high", "memory.swap.max", "memory.swap.current"):
        root.write(f"{v2_dir(root, WEB)}/{name}", "twelve\n")
    root.write(f"{v2_dir(root, WEB)}/memory.oom.group", "yes\n")
    memory = cg.read_cgroup_memory(Host(tmp_path / "root"), WEB)
    assert memory.max_bytes == 1 << 30 and memory.current_bytes
    assert (memory.min_bytes, memory.low_bytes, memory.high_bytes) == (None, None, None)
    assert (memory.swap_max_bytes, memory.swap_current_bytes, memory.oom_group) == (None, None, None)


def test_malformed_counters_make_the_group_unavailable_not_empty(tmp_path: Path) -> None:
    """Counters read as {} would make the next good read look like every event since boot."""
    root = small_machine(tmp_path / "root")
    root.write(f"{v2_dir(root, WEB)}/memory.events", "low 0\noom 3\noom_kill\n")
    with pytest.raises(Malformed, match=r"memory\.events"):
        cg.read_cgroup_memory(Host(tmp_path / "root"), WEB)
    hybrid = small_machine(tmp_path / "hybrid", "hybrid")
    hybrid.write(f"{v1_dir(hybrid, WEB)}/memory.failcnt", "many\n")
    with pytest.raises(Malformed, match=r"memory\.failcnt"):
        cg.read_cgroup_memory(Host(tmp_path / "hybrid"), WEB)
    # but a counter file that is simply not there is no counter at all, as before
    hybrid.remove(f"{v1_dir(hybrid, WEB)}/memory.failcnt")
    assert "max" not in cg.read_cgroup_memory(Host(tmp_path / "hybrid"), WEB).events


def test_malformed_pressure_and_procs_are_unavailable(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    root.write(f"{v2_dir(root, WEB)}/memory.pressure", "some avg10=nan avg60=0.00 avg300=0.00 total=0\n")
    root.write(f"{v2_dir(root, WEB)}/cgroup.procs", "200\n-1\n")
    host = Host(tmp_path / "root")
    with pytest.raises(Malformed, match=r"memory\.pressure"):
        read_cgroup_pressure(host, WEB)
    with pytest.raises(Malformed, match=r"cgroup\.procs"):
        cg.read_cgroup_procs(host, WEB)
    # a ranking in a scope whose cgroup.procs is bad still sees the scope's processes
    pids = {p.pid for p in Sample(host, 0).processes_in("/system.slice")}
    assert {200, 201, 300} <= pids


def test_a_process_with_a_bad_file_is_skipped(tmp_path: Path) -> None:
    root = small_machine(tmp_path / "root")
    root.write("/proc/200/oom_score_adj", "abc\n")
    root.write("/proc/300/oom_score_adj", "5000\n")  # outside -1000..1000: not the kernel's
    root.write("/proc/201/oom_score", "lots\n")  # shown beside guardian's, never decided on
    processes = {p.pid: p for p in read_processes(Host(tmp_path / "root"), oom_score=True)}
    assert 200 not in processes and 300 not in processes
    assert processes[201].oom_score is None and processes[400].oom_score is not None


def test_mountinfo_skips_a_bad_line_and_keeps_the_others() -> None:
    text = (
        "35 24 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
        "99 1 0:99 / /mnt/a\\999b rw - tmpfs tmpfs rw\n"  # \9 is no octal digit
        "98 1 0:98 / /mnt/a\\777b rw - tmpfs tmpfs rw\n"  # 0o777 is no byte
        "97 1 0:97 / /mnt/a\\01 rw - tmpfs tmpfs rw\n"  # too short
        "96 1 0:96 / relative rw - tmpfs tmpfs rw\n"
        "95 1 0:95 / /mnt/with\\040space rw - tmpfs tmpfs rw\n"
        "24 27 0:6 / /dev rw,relatime - devtmpfs d"  # cut short: no super options
    )
    assert [m.mount_point for m in parse_mountinfo(text)] == ["/sys/fs/cgroup", "/mnt/with space"]


def test_mountinfo_escapes_are_bytes() -> None:
    # a mount point holding a backslash and a byte that is not UTF-8: it names the real directory
    (mount,) = parse_mountinfo("1 2 0:1 / /mnt/a\\134b\udcff rw - tmpfs t rw\n")
    assert mount.mount_point == "/mnt/a\\b\udcff"


def test_a_bad_sysctl_takes_the_kernel_default_and_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_machine(tmp_path / "root")
    root.write("/proc/sys/vm/panic_on_oom", "")
    root.write("/proc/sys/vm/overcommit_ratio", "fifty\n")
    sysctl = read_vm_sysctl(Host(tmp_path / "root"))
    assert (sysctl.panic_on_oom, sysctl.overcommit_ratio) == (0, 50)
    assert set(sysctl.unreadable) == {"panic_on_oom", "overcommit_ratio"}
    status = run(capsys, "status", "--json", "--interval", "0", "--root", str(tmp_path / "root"))
    features = {u["feature"]: u["reason"] for u in status["unavailable"]}
    assert "panic_on_oom" in features["vm.panic_on_oom"] and "kernel default 0" in features["vm.panic_on_oom"]
    assert "vm.overcommit_ratio" in features


def test_status_names_the_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = small_machine(tmp_path / "root")
    root.write(f"{v2_dir(root, WEB)}/memory.current", "lots\n")
    status = run(capsys, "status", "--json", "--interval", "0", "--root", str(tmp_path / "root"))
    reasons = [u["reason"] for u in status["unavailable"] if u["feature"] == "cgroup2 memory.current"]
    assert reasons and "web.service/memory.current" in reasons[0] and "'lots'" in reasons[0]
    web = next(g for g in status["cgroups"] if g["path"] == WEB)
    assert web["memory_source"] is None and web["pressure"] is not None  # its pressure still reads


def test_machine_psi_that_does_not_parse_is_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_machine(tmp_path / "root")
    root.write("/proc/pressure/memory", "some avg10=inf avg60=0.00 avg300=0.00 total=1\n")
    status = run(capsys, "status", "--json", "--interval", "0.5", "--root", str(tmp_path / "root"))
    assert status["psi"]["memory"] is None
    assert any("proc/pressure/memory" in u["reason"] for u in status["unavailable"])


def test_malformed_meminfo_is_a_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = small_machine(tmp_path / "root")
    root.write("/proc/meminfo", "MemTotal: many kB\n")
    assert main(["status", "--root", str(tmp_path / "root")], clock=FakeClock()) == 1
    err = capsys.readouterr().err
    assert err.startswith("guardian status: meminfo is unavailable: cannot parse ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text",
    ["1_000\n", "+5\n", " \u0661\u0662\n", "0x10\n", "1e3\n", "-5\n"],
    ids=["underscore", "plus", "arabic-digits", "hex", "float", "negative"],
)
def test_values_are_read_as_the_kernel_writes_them(text: str) -> None:
    """int() takes "1_000", "+5" and "١٢"; no kernel writes them, so none is a size."""
    with pytest.raises(ParseError):
        cg.parse_memory_value(text)
