"""The cause scorer on built roots: size share, growth, protection, shared memory, and the
process inside the group; the usage history it takes growth from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest
from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.fakekill import RecordingKiller
from support.sinks import MemorySink

from guardian.cli import build_parser, cmd_rank
from guardian.config import Policy, parse_policy
from guardian.daemon.engine import HISTORY_IDLE_S, HISTORY_STEP_S, Engine
from guardian.explain import explain
from guardian.gain import SHMEM_LOOK_BYTES, SHMEM_LOOKS, expected_gain, worth_a_look
from guardian.history import KEEP_S, MAX_GROUPS, PER_GROUP, RATE_SPAN_S, Histories, UsageHistory
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.plugins import make_plugin_manager
from guardian.ranking import Ranking
from guardian.report import MSG_DRY_RUN, Reporter
from guardian.sample import Sample
from guardian.scorers.cause import GROWTH_HORIZON_S
from guardian.selection import PAGE_SIZE, Selector
from guardian.sources.smaps import parse_freed_shmem

MiB = 1 << 20
TOTAL_KB = 4 * 1024 * 1024  # 4 GiB, no swap: the scope is 4 GiB
SCOPE = TOTAL_KB * 1024 // PAGE_SIZE * PAGE_SIZE
CAUSE = Policy(scorers={"cause": 1.0})


def build(
    tmp_path: Path,
    services: dict[str, list[int]],
    *,
    low_mib: Optional[dict[str, int]] = None,
    extra_current_mib: Optional[dict[str, int]] = None,
    adj: Optional[dict[int, int]] = None,
) -> tuple[Path, dict[int, str]]:
    """A cgroup2 host with one service per entry; each int is a process of that many MiB of
    anonymous memory. ``extra_current_mib`` adds page cache to a group's memory.current."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=TOTAL_KB, available_kb=256 * 1024)
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    comm_of: dict[int, str] = {}
    pid = 100
    for name, sizes in sorted(services.items()):
        path = f"/system.slice/{name}.service"
        for i, mib in enumerate(sizes):
            comm = f"{name}{i}"
            root.process(
                pid,
                comm,
                ppid=1,
                rss_anon_kb=mib * 1024,
                cgroup_v2=path,
                oom_score_adj=(adj or {}).get(pid, 0),
            )
            comm_of[pid] = comm
            pid += 1
        current = (sum(sizes) + (extra_current_mib or {}).get(name, 0)) * MiB
        root.cgroup_v2(path, current=current, low=(low_mib or {}).get(name, 0) * MiB)
    root.finish()
    return tmp_path / "root", comm_of


def selector(policy: Policy = CAUSE) -> Selector:
    return Selector(policy, make_plugin_manager(None, entry_points=False))


def rank(root: Path, history: Optional[Histories] = None, now_us: int = 0, mode: str = "process") -> Ranking:
    return selector().rank(Sample(Host(root), now_us), mode=mode, history=history)  # type: ignore[arg-type]


def first_comm(ranking: Ranking) -> str:
    top = ranking.top
    assert top is not None and top.candidate.process is not None
    return top.candidate.process.comm


def set_current(root: Path, service: str, mib: int) -> None:
    (root / f"sys/fs/cgroup/system.slice/{service}.service/memory.current").write_text(f"{mib * MiB}\n")


def history_of(readings: dict[str, int], at_us: int) -> Histories:
    history = Histories()
    history.cgroups.record(
        at_us, {f"/system.slice/{name}.service": mib * MiB for name, mib in readings.items()}
    )
    return history


# --- size ------------------------------------------------------------------------------------


def test_the_group_goes_first_then_its_largest_process(tmp_path: Path) -> None:
    # the largest process (db0, 600 MiB) is in the smaller group: workers hold 6 x 150 MiB
    root, _ = build(tmp_path, {"db": [600], "workers": [150] * 6})
    ranking = rank(root)
    assert first_comm(ranking).startswith("workers")
    # points are per mille of the scope: what a kill of the group frees
    top = ranking.ranked[0]
    assert top.scores["cause"] == pytest.approx(1000 * 900 * MiB / SCOPE, abs=1.0)
    # the kernel's mirror alone picks the largest process
    kernel = selector(Policy(scorers={"kernel_badness": 1.0})).rank(Sample(Host(root), 0))
    assert kernel.top is not None and kernel.top.candidate.process is not None
    assert kernel.top.candidate.process.comm == "db0"


def test_inside_the_group_the_kernel_order_with_oom_score_adj(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"app": [300, 100, 50]}, adj={102: 1000})
    ranking = rank(root)
    # adj +1000 adds a whole scope to the 50 MiB process, as oom_badness() does
    assert [r.candidate.process.comm for r in ranking.ranked if r.candidate.process][:3] == [
        "app2",
        "app0",
        "app1",
    ]
    # and the place inside the group never moves a process across groups
    assert all(0 <= r.scores["cause"] - int(r.scores["cause"]) < 1 for r in ranking.ranked)


def test_protection_is_subtracted(tmp_path: Path) -> None:
    # db frees 500 MiB, but 400 MiB of it are under memory.low: 100 MiB counts
    root, _ = build(tmp_path, {"db": [500], "web": [300]}, low_mib={"db": 400})
    ranking = rank(root)
    assert first_comm(ranking) == "web0"
    db = next(r for r in ranking.ranked if r.candidate.process and r.candidate.process.comm == "db0")
    assert int(db.scores["cause"]) == int(1000 * 100 * MiB / SCOPE)


# --- growth ----------------------------------------------------------------------------------


def test_the_growing_group_beats_a_larger_steady_one(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"db": [600], "workers": [80] * 5})  # 600 steady vs 400 growing
    history = history_of({"db": 600, "workers": 250}, at_us=0)
    now = int(10e6)  # 150 MiB in 10 s: 15 MiB/s, 900 MiB in the next minute
    ranking = rank(root, history, now)
    assert first_comm(ranking).startswith("workers")
    top = ranking.ranked[0]
    size = 1000 * 400 * MiB / SCOPE
    growth = 1000 * 15 * MiB * GROWTH_HORIZON_S / SCOPE
    assert top.scores["cause"] == pytest.approx(size + growth, abs=1.0)
    db = next(r for r in ranking.ranked if r.candidate.process and r.candidate.process.comm == "db0")
    assert db.scores["cause"] == pytest.approx(1000 * 600 * MiB / SCOPE, abs=1.0)  # no growth


def test_without_history_size_decides(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"db": [600], "workers": [80] * 5})
    assert first_comm(rank(root)) == "db0"


def test_growth_in_page_cache_earns_little(tmp_path: Path) -> None:
    # backup grows 30 MiB/s, but 900 of its 1000 MiB are page cache a kill does not free
    root, _ = build(tmp_path, {"backup": [100], "db": [500]}, extra_current_mib={"backup": 900})
    history = history_of({"backup": 700, "db": 500}, at_us=0)
    ranking = rank(root, history, int(10e6))
    assert first_comm(ranking) == "db0"
    backup = next(r for r in ranking.ranked if r.candidate.process and r.candidate.process.comm == "backup0")
    # 30 MiB/s x 60 s x (100 / 1000 freed) = 180 MiB counted, + 100 MiB of size
    assert backup.scores["cause"] == pytest.approx(1000 * 280 * MiB / SCOPE, abs=1.0)


def test_growth_counts_at_most_the_whole_scope(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"hog": [100]})
    history = history_of({"hog": 0}, at_us=0)
    ranking = rank(root, history, int(1e6))  # 100 MiB/s: 6 GiB in a minute, of a 4 GiB scope
    assert ranking.ranked[0].scores["cause"] == pytest.approx(1000 * 100 * MiB / SCOPE + 1000, abs=1.0)


def test_a_shrinking_group_counts_no_growth(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"db": [500]})
    ranking = rank(root, history_of({"db": 900}, at_us=0), int(10e6))
    assert ranking.ranked[0].scores["cause"] == pytest.approx(1000 * 500 * MiB / SCOPE, abs=1.0)


def test_explain_says_share_growth_and_gain_for_the_first_two(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"db": [600], "workers": [80] * 5})
    ranking = rank(root, history_of({"db": 600, "workers": 250}, at_us=0), int(10e6))
    first, second = ranking.ranked[0], ranking.ranked[1]
    assert "grows +15.7 MB/s over 10.0 s" in first.notes["cause"]
    assert "frees ~400.0 MiB of 4.0 GiB" in first.notes["cause"]
    assert "cause" in second.notes
    assert "cause" not in ranking.ranked[2].notes  # asked for the first two only
    text = "\n".join(explain(ranking))
    assert "group /system.slice/workers.service frees ~400.0 MiB" in text
    assert "group /system.slice/db.service frees ~600.0 MiB" in text or "in it pid" in text


# --- shared memory ------------------------------------------------------------------------------

SMAPS_NAMED_TMPFS = """\
7f0000000000-7f0019000000 rw-s 00000000 00:1a 12345                      /dev/shm/cache
Size:             409600 kB
Rss:              409600 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         0 kB
Private_Dirty:    409600 kB
VmFlags: rd wr sh mr mw me ms sd
7f1000000000-7f1000800000 rw-s 00000000 00:01 777                        /memfd:pool (deleted)
Size:               8192 kB
Rss:                8192 kB
Shared_Clean:          0 kB
Shared_Dirty:       4096 kB
Private_Clean:         0 kB
Private_Dirty:      4096 kB
VmFlags: rd wr sh mr mw me ms sd
7f2000000000-7f2000400000 rw-s 00000000 00:01 778                        /SYSV00000000 (deleted)
Size:               4096 kB
Rss:                4096 kB
Private_Dirty:      4096 kB
7f3000000000-7f3000400000 rw-p 00000000 00:00 0
Rss:                4096 kB
Private_Dirty:      4096 kB
"""


def test_smaps_counts_only_unnamed_objects_nobody_else_maps() -> None:
    # the named tmpfs file stays, SysV is kept, the private anonymous map is RssAnon not shmem,
    # and of the memfd only the pages mapped here alone
    assert parse_freed_shmem(SMAPS_NAMED_TMPFS) == 4096 * 1024


def test_a_tmpfs_mapper_is_not_the_largest_gain(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=TOTAL_KB, available_kb=256 * 1024)
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    root.process(
        200,
        "mapper",
        ppid=1,
        rss_anon_kb=8 * 1024,
        rss_shmem_kb=400 * 1024,
        cgroup_v2="/system.slice/mapper.service",
    )
    root.cgroup_v2("/system.slice/mapper.service")
    root.process(300, "hog", ppid=1, rss_anon_kb=250 * 1024, cgroup_v2="/system.slice/hog.service")
    root.cgroup_v2("/system.slice/hog.service")
    root.write("proc/200/smaps", SMAPS_NAMED_TMPFS)
    root.finish()
    sample = Sample(Host(tmp_path / "root"), 0)
    mapper = next(p for p in sample.processes if p.pid == 200)
    gain = expected_gain(mapper, sample.freed_shmem)
    assert gain.shmem_freed_bytes == 4096 * 1024 and gain.shmem_kept_bytes == 396 * MiB
    ranking = selector().rank(sample)
    assert first_comm(ranking) == "hog"
    kernel = selector(Policy(scorers={"kernel_badness": 1.0})).rank(Sample(Host(tmp_path / "root"), 0))
    assert kernel.top is not None and kernel.top.candidate.process is not None
    assert kernel.top.candidate.process.comm == "mapper"  # the kernel counts RssShmem


def test_small_shared_memory_is_not_looked_at(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"app": [10]})
    process = next(p for p in Sample(Host(root), 0).processes if p.pid == 100)
    asked: list[int] = []

    def freed(pid: int) -> Optional[int]:
        asked.append(pid)
        return 1 << 40

    small = expected_gain(process, freed)
    assert asked == [] and small.total_bytes == 10 * MiB
    from dataclasses import replace

    big = expected_gain(replace(process, rss_shmem_bytes=SHMEM_LOOK_BYTES), freed)
    assert asked == [100] and big.shmem_freed_bytes == SHMEM_LOOK_BYTES  # never above RssShmem


# --- the history ---------------------------------------------------------------------------------


def test_history_rate_spans_at_least_the_rate_span() -> None:
    history = UsageHistory()
    for second, mib in ((0, 100), (2, 100), (4, 100), (6, 180), (8, 260)):
        history.record(int(second * 1e6), {"/a": mib * MiB})
    growth = history.growth("/a", int(10e6), 340 * MiB)
    # the newest reading at least RATE_SPAN_S old is the one of second 4
    assert RATE_SPAN_S == 5.0
    assert growth is not None and growth.span_s == pytest.approx(6.0)
    assert growth.bytes_per_s == pytest.approx(240 * MiB / 6.0)


def test_history_a_group_that_appears_held_nothing_before() -> None:
    history = UsageHistory()
    history.record(0, {"/a": MiB})
    history.record(int(4e6), {"/a": MiB, "/new": 200 * MiB})
    growth = history.growth("/new", int(6e6), 300 * MiB)
    assert growth is not None and growth.bytes_per_s == pytest.approx(50 * MiB)


def test_history_forgets_groups_gone_and_keeps_unreadable_ones() -> None:
    history = UsageHistory()
    history.record(0, {"/a": MiB, "/b": MiB})
    history.record(int(2e6), {"/a": MiB}, walked=["/b"])
    assert history.growth("/b", int(3e6), MiB) is not None
    history.record(int(4e6), {"/a": MiB})
    assert history.growth("/b", int(5e6), MiB) is None and len(history) == 1


def test_history_is_bounded() -> None:
    history = UsageHistory()
    for step in range(PER_GROUP * 3):
        history.record(step * 100_000, {"/a": step})
    assert len(history._readings["/a"]) == PER_GROUP
    history.record(int((KEEP_S + 100) * 1e6), {"/a": 1})
    assert len(history._readings["/a"]) == 1  # older than KEEP_S: dropped
    many = {f"/g{i}": i for i in range(MAX_GROUPS + 50)}
    history.record(int((KEEP_S + 200) * 1e6), many)
    assert len(history) == MAX_GROUPS


def test_history_without_an_earlier_reading_says_none() -> None:
    history = UsageHistory()
    assert history.growth("/a", 0, MiB) is None
    history.record(int(5e6), {"/a": MiB})
    assert history.growth("/a", int(5e6), MiB) is None  # the same instant is no span
    assert history.growth("/unknown", int(9e6), MiB) is None


# --- the daemon keeps the history; rank takes two readings ----------------------------------------


def engine_for(root: Path, scorers: str) -> tuple[Engine, MemorySink, FakeClock]:
    policy = parse_policy(f"dry_run = true\n[scorers]\n{scorers}\n", "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    sink, clock = MemorySink(), FakeClock()
    return (
        Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), clock),
        sink,
        clock,
    )


def set_available_kb(root: Path, kb: int) -> None:
    meminfo = root / "proc/meminfo"
    lines = [
        f"MemAvailable: {kb:>8} kB" if x.startswith("MemAvailable:") else x
        for x in meminfo.read_text().splitlines()
    ]
    meminfo.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("scorers", "victim"), [("cause = 1.0", "workers"), ("kernel_badness = 1.0", "db0")])
def test_the_daemon_measures_growth_between_ticks(tmp_path: Path, scorers: str, victim: str) -> None:
    root, _ = build(tmp_path, {"db": [600], "workers": [80] * 5})
    set_available_kb(root, TOTAL_KB // 2)
    set_current(root, "workers", 250)  # calm: workers hold 250 MiB
    engine, sink, clock = engine_for(root, scorers)
    assert not engine.tick().started
    recorded = engine.history.cgroups.recorded_us
    assert (recorded is not None) == engine.keeps_history == (victim == "workers")
    clock.advance(1)
    engine.tick()
    assert engine.history.cgroups.recorded_us == recorded  # at most every HISTORY_STEP_S
    if engine.keeps_history:
        assert engine.calm is None or engine.calm.until_us <= clock.now_us + HISTORY_IDLE_S * 1e6
    # ten seconds on, workers hold 400 MiB and memory is short
    clock.advance(9)
    set_current(root, "workers", 400)
    set_available_kb(root, TOTAL_KB * 4 // 100)
    result = engine.tick()
    (act,) = result.started
    assert act.victim is not None and act.victim.candidate.process is not None
    assert act.victim.candidate.process.comm.startswith(victim)
    (event,) = [e for e in sink.events if e["MESSAGE_ID"] == MSG_DRY_RUN]
    if victim == "workers":
        assert "grows +" in event["GUARDIAN_WHY_CAUSE"]
    if engine.keeps_history:
        assert clock.now_us - HISTORY_STEP_S * 1e6 <= (engine.history.cgroups.recorded_us or 0)
    else:
        assert (
            len(engine.history.cgroups) == len(engine.history.processes) == 0
        )  # nothing recorded for a policy that does not use it


class GrowingClock(FakeClock):
    """A clock whose sleep is the time a service takes to grow."""

    def __init__(self, grow: Callable[[], None]) -> None:
        super().__init__()
        self.grow = grow

    def sleep(self, seconds: float) -> None:
        self.grow()
        super().sleep(seconds)


def test_rank_interval_takes_two_readings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = build(tmp_path, {"db": [600], "workers": [80] * 5})
    set_current(root, "workers", 350)
    policy = tmp_path / "policy.toml"
    policy.write_text("[scorers]\ncause = 1.0\n")
    argv = ["rank", "--json", "--explain", "--root", str(root), "--policy", str(policy)]

    def grow() -> None:
        set_current(root, "workers", 400)

    def first_of(extra: list[str]) -> dict[str, Any]:
        args = build_parser().parse_args(argv + extra)
        set_current(root, "workers", 350)
        assert cmd_rank(args, GrowingClock(grow)) == 0
        report: dict[str, Any] = json.loads(capsys.readouterr().out)
        return report

    once = first_of(["--interval", "0"])
    assert once["candidates"][0]["comm"] == "db0"  # one reading: size decides
    twice = first_of(["--interval", "2"])
    assert twice["candidates"][0]["comm"].startswith("workers")  # 25 MiB/s over 2 s
    assert any("grows +26.2 MB/s over 2.0 s" in line for line in twice["explanation"])


def test_smaps_is_read_for_a_few_processes_only(tmp_path: Path) -> None:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=TOTAL_KB, available_kb=256 * 1024)
    root.process(1, "systemd", ppid=0, rss_anon_kb=4096, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    for i in range(SHMEM_LOOKS + 10):  # a desktop: many processes with some shared memory
        root.process(
            100 + i, f"r{i}", ppid=1, rss_anon_kb=1024, rss_shmem_kb=(8 + i) * 1024, cgroup_v2="/app.scope"
        )
    root.process(90, "tiny", ppid=1, rss_anon_kb=1024, rss_shmem_kb=1024, cgroup_v2="/app.scope")
    root.cgroup_v2("/app.scope")
    root.finish()
    sample = Sample(Host(tmp_path / "root"), 0)
    selector().rank(sample)
    smaps = sorted(int(key.split(":")[1]) for key in sample.reads if key.startswith("smaps:"))
    # the SHMEM_LOOKS with the most shared memory, never one under SHMEM_LOOK_BYTES
    assert smaps == list(range(110, 100 + SHMEM_LOOKS + 10))
    assert worth_a_look(sample.processes) == frozenset(smaps)


# --- inside one group: the process that grew ----------------------------------------------------


def set_anon(root: Path, pid: int, mib: int) -> None:
    status = root / f"proc/{pid}/status"
    lines = [
        f"RssAnon:\t{mib * 1024:>8} kB" if x.startswith("RssAnon:") else x
        for x in status.read_text().splitlines()
    ]
    status.write_text("\n".join(lines) + "\n")


def test_inside_one_group_the_process_that_grew_goes_first(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"app": [300, 100]})  # app0 steady 300 MiB, app1 grows to 100 MiB
    scope = "/system.slice/app.service"
    history = Histories()
    set_anon(root, 101, 40)
    selector().rank(Sample(Host(root), 0), scope=scope, history=history)  # the first ranking reads both
    set_anon(root, 101, 100)
    ranking = selector().rank(Sample(Host(root), int(10e6)), scope=scope, history=history)
    assert first_comm(ranking) == "app1"  # 6 MiB/s: 360 MiB more in a minute
    assert "grows +6.3 MB/s over 10.0 s" in ranking.ranked[0].notes["cause"]
    assert first_comm(selector().rank(Sample(Host(root), int(10e6)), scope=scope)) == "app0"  # no history


def test_the_engine_records_the_processes_of_a_warm_watched_group(tmp_path: Path) -> None:
    root, _ = build(tmp_path, {"app": [300, 40]})
    limit = 500 * MiB
    (root / "sys/fs/cgroup/system.slice/app.service/memory.max").write_text(f"{limit}\n")
    policy = (
        "dry_run = true\n[machine]\nenabled = false\n[scorers]\ncause = 1.0\n"
        '[[cgroup]]\nmatch = "system.slice/*.service"\nmin_headroom = { term = "10%", kill = "4%" }\n'
    )
    parsed = parse_policy(policy, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    sink, clock = MemorySink(), FakeClock()
    engine = Engine(Host(root), Loaded(parsed, plugins, Selector(parsed, plugins)), Reporter(sink), clock)
    set_current(root, "app", 200)  # 40 % of its limit: not warm, no process is read
    engine.tick()
    assert len(engine.history.processes) == 0
    clock.advance(HISTORY_STEP_S)
    set_current(root, "app", 340)  # 68 %: warm, its processes are recorded
    engine.tick()
    assert len(engine.history.processes) == 2
    clock.advance(10)
    set_anon(root, 101, 150)  # app1 grew 110 MiB in 10 s; app0 did not move
    set_current(root, "app", 460)  # headroom 8 %: the TERM level
    (act,) = engine.tick().started
    assert act.victim is not None and act.victim.candidate.process is not None
    assert act.victim.candidate.process.comm == "app1"


def test_after_a_kill_the_group_that_grows_is_still_the_cause(tmp_path: Path) -> None:
    """Seen in the steady-and-growers scenario: a worker's death made its group's memory use
    drop, its growth read as none, and the steady db (the largest) was chosen next. The
    victim's memory is taken out of the history of its cgroup and the cgroups above it."""
    root, _ = build(tmp_path, {"db": [400], "workers": [60, 60, 60, 60, 60]})
    set_available_kb(root, TOTAL_KB // 2)
    set_current(root, "workers", 150)
    policy = parse_policy("grace_s = 1\ncooldown_s = 1\n[scorers]\ncause = 1.0\n", "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    sink, clock = MemorySink(), FakeClock()
    engine = Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), clock)
    killer = RecordingKiller(engine.killer)
    engine.killer = killer
    engine.tick()  # calm: workers hold 150 MiB
    clock.advance(5)
    set_current(root, "workers", 250)
    engine.tick()
    clock.advance(5)
    set_current(root, "workers", 350)  # 20 MiB/s
    set_available_kb(root, TOTAL_KB * 8 // 100)  # the TERM line
    (first,) = engine.tick().started
    assert first.victim is not None and first.victim.candidate.cgroup == "/system.slice/workers.service"
    victim = first.victim.candidate.process
    assert victim is not None
    # it dies: the workers' group drops by its 60 MiB, the survivors grow on (+30 MiB in 3 s)
    killer.kills[victim.pid].finish()
    (root / f"proc/{victim.pid}").rename(root / f"proc/.gone-{victim.pid}")
    set_current(root, "workers", 350 - 60 + 30)
    clock.advance(3)
    engine.tick()  # the kill ends; the cooldown holds the TERM level while memory recovers
    clock.advance(2)
    set_current(root, "workers", 350 - 60 + 50)
    (second,) = engine.tick().started  # the cooldown is over, memory is still short
    assert second.victim is not None and second.victim.candidate.cgroup == "/system.slice/workers.service"
    assert "grows +" in second.victim.notes["cause"]


def test_history_discount_touches_only_earlier_readings_and_never_goes_negative() -> None:
    history = UsageHistory()
    history.record(0, {"/a": 100 * MiB, "/a/b": 30 * MiB})
    history.record(int(2e6), {"/a": 120 * MiB, "/a/b": 50 * MiB})
    history.discount(["/a", "/a/b", "/unknown"], 40 * MiB, before_us=int(2e6))
    assert list(history._readings["/a"]) == [(0, 60 * MiB), (int(2e6), 120 * MiB)]
    assert list(history._readings["/a/b"]) == [(0, 0), (int(2e6), 50 * MiB)]


def test_inside_a_small_group_growers_stay_ordered_when_their_growth_exceeds_the_limit(
    tmp_path: Path,
) -> None:
    """In a 300 MiB memcg every worker growing at 5 MB/s projects past the limit; the place
    inside the group must still order them by what they hold (a clamp made them equal)."""
    root, _ = build(tmp_path, {"fleet": [30, 45, 60, 66, 68]})
    (root / "sys/fs/cgroup/system.slice/fleet.service/memory.max").write_text(f"{300 * MiB}\n")
    scope = "/system.slice/fleet.service"
    history = Histories()
    for pid, mib in ((100, 30), (101, 45), (102, 55), (103, 56), (104, 58)):
        set_anon(root, pid, mib)
    selector().rank(Sample(Host(root), 0), scope=scope, history=history)
    for pid, mib in ((100, 30), (101, 45), (102, 60), (103, 66), (104, 68)):
        set_anon(root, pid, mib)
    ranking = selector().rank(Sample(Host(root), int(2e6)), scope=scope, history=history)
    order = [r.candidate.process.comm for r in ranking.ranked if r.candidate.process]
    assert order[:3] == ["fleet4", "fleet3", "fleet2"]
    places = [r.scores["cause"] - int(r.scores["cause"]) for r in ranking.ranked]
    assert all(0 < p < 1 for p in places) and len(set(places)) == len(places)
