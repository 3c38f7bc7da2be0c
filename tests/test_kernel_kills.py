"""The kernel's own OOM kills in the daemon: the kernel log followed (a recorded file under a fake
root, as KmsgFollower reads it there), the watched groups' oom_kill counters, the two
de-duplicated (kernel_kills.OomLedger), each kill reported with its own MESSAGE_ID, the rule that
watched its scope and whom the policy would have chosen there. The live kill is in
test_kernel_kills_live.py."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Optional

from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.kmsglog import kmsg_line
from support.sinks import MemorySink

from guardian.config import parse_policy
from guardian.daemon.engine import OOM_COUNT_S, Engine
from guardian.daemon.service import Service
from guardian.daemon.wakeups import Waiter
from guardian.host import Host
from guardian.kernel_kills import CREDIT_US, HOLD_US, OomLedger, SeenKill
from guardian.loaded import Loaded
from guardian.notify import Notifier
from guardian.plugins import make_plugin_manager
from guardian.records import KernelOomKill, KmsgRecord
from guardian.report import MSG_KERNEL_OOM_KILL, JsonLinesSink, Reporter, StderrSink
from guardian.selection import Selector

GiB_KB = 1024 * 1024
MiB = 1 << 20
S = 1_000_000

APP = "/system.slice/app.service"
BATCH = "/batch.slice/job.scope"

POLICY = """
[machine]
mem_available = { term = "10%", kill = "5%" }
[[cgroup]]
match = "system.slice/*.service"
min_headroom = { term = "32M", kill = "16M" }
"""


# --- the ledger: one report per kill ---------------------------------------------------------------


def test_a_logged_kill_is_not_reported_again_by_its_counter() -> None:
    ledger = OomLedger(hierarchical=True)
    assert ledger.counted({APP: 0}, 0, hold=True) == []  # the first look is the base
    ledger.logged(APP, 1 * S)
    assert ledger.counted({APP: 1}, 5 * S, hold=True) == []
    assert not ledger.pending and not ledger.credits


def test_a_rise_waits_for_the_log_line_then_is_reported_alone() -> None:
    """The counter rises a few instructions before the kernel prints the Killed line: a look in
    between must not report the kill twice."""
    ledger = OomLedger(hierarchical=True)
    ledger.counted({APP: 0}, 0, hold=True)
    assert ledger.counted({APP: 1}, 5 * S, hold=True) == []
    ledger.logged(APP, 5 * S + 10)  # the line came: the held rise was that kill
    assert ledger.due(5 * S + HOLD_US) == [] and not ledger.pending
    assert ledger.counted({APP: 3}, 10 * S, hold=True) == []  # two more, the log silent
    assert ledger.next_due_us() == 10 * S + HOLD_US
    assert ledger.due(10 * S + HOLD_US - 1) == []
    assert ledger.due(10 * S + HOLD_US) == [(APP, 2)]


def test_without_the_log_a_rise_is_reported_at_once() -> None:
    ledger = OomLedger(hierarchical=False)
    ledger.counted({APP: 4}, 0, hold=False)
    assert ledger.counted({APP: 5}, 5 * S, hold=False) == [(APP, 1)]


def test_on_cgroup2_a_kill_belongs_to_the_deepest_watched_group() -> None:
    """memory.events counts the kills below a group too: a kill in /a/b raises both /a and
    /a/b; it is /a/b's, and /a's own share is what its watched children do not explain."""
    ledger = OomLedger(hierarchical=True)
    ledger.counted({"/a": 2, "/a/b": 1}, 0, hold=False)
    assert ledger.counted({"/a": 3, "/a/b": 2}, 5 * S, hold=False) == [("/a/b", 1)]
    # a kill in /a/c (not watched) is /a's own
    assert ledger.counted({"/a": 4, "/a/b": 2}, 10 * S, hold=False) == [("/a", 1)]
    # the log's kill in /a/b/x is /a/b's, and its counters then say nothing new
    ledger.logged("/a/b/x", 11 * S)
    assert ledger.counted({"/a": 5, "/a/b": 3}, 15 * S, hold=False) == []


def test_a_share_read_between_two_counters_is_no_kill() -> None:
    """A kill between the reads of /a and /a/b shows in the child and not yet in the parent:
    the parent's share dips, and comes back at the next look; neither is a kill of /a's."""
    ledger = OomLedger(hierarchical=True)
    ledger.counted({"/a": 1, "/a/b": 1}, 0, hold=False)
    assert ledger.counted({"/a": 1, "/a/b": 2}, 5 * S, hold=False) == [("/a/b", 1)]
    assert ledger.counted({"/a": 2, "/a/b": 2}, 10 * S, hold=False) == []


def test_on_v1_each_group_counts_its_own() -> None:
    ledger = OomLedger(hierarchical=False)
    ledger.counted({"/a": 0, "/a/b": 0}, 0, hold=False)
    assert ledger.counted({"/a": 1, "/a/b": 1}, 5 * S, hold=False) == [("/a", 1), ("/a/b", 1)]
    ledger.logged("/a/b/c", 6 * S)  # v1: a group counts only its own tasks' kills
    assert ledger.credits == {}


def test_new_and_recreated_groups_start_from_their_count() -> None:
    ledger = OomLedger(hierarchical=True)
    ledger.counted({"/a": 7}, 0, hold=False)
    ledger.logged("/a", 1 * S)  # a credit for /a ...
    assert ledger.counted({"/a": 0}, 5 * S, hold=False) == []  # ... dropped: /a was made again
    assert ledger.credits == {}
    # a watched child appears: /a's share changes, and starts again; so does a child removed
    assert ledger.counted({"/a": 3, "/a/b": 3}, 10 * S, hold=False) == []
    assert ledger.counted({"/a": 3}, 15 * S, hold=False) == []
    assert ledger.counted({"/a": 4}, 20 * S, hold=False) == [("/a", 1)]


def test_old_credits_do_not_hide_a_later_kill() -> None:
    ledger = OomLedger(hierarchical=True)
    ledger.counted({APP: 0}, 0, hold=False)
    ledger.logged(APP, 1 * S)
    # the counter did not show that one (read failed, group moved...); long after, another kill
    assert ledger.counted({APP: 0}, 5 * S, hold=False) == []
    assert ledger.counted({APP: 1}, 1 * S + CREDIT_US + 1, hold=False) == [(APP, 1)]


def test_a_flood_of_logged_kills_is_remembered_within_bounds() -> None:
    from guardian.kernel_kills import CREDITS_KEPT

    ledger = OomLedger(hierarchical=True)
    ledger.counted({APP: 0}, 0, hold=True)
    for i in range(3 * CREDITS_KEPT):
        ledger.logged(APP, 1 + i)
        ledger.logged(None, 1 + i)
    assert len(ledger.credits[APP]) == len(ledger.unplaced) == CREDITS_KEPT


def test_a_kill_the_log_placed_nowhere_explains_one_rise() -> None:
    """Without the summary line (dump_header() rate-limited) the report names no cgroup."""
    ledger = OomLedger(hierarchical=True)
    ledger.counted({APP: 0, "/b": 0}, 0, hold=True)
    ledger.logged(None, 1 * S)
    assert ledger.counted({APP: 1, "/b": 0}, 5 * S, hold=True) == []
    assert ledger.counted({APP: 2, "/b": 0}, 10 * S, hold=True) == []
    assert ledger.due(10 * S + HOLD_US) == [(APP, 1)]


# --- the daemon: a fake root with a recorded kernel log ---------------------------------------------


def _root(tmp_path: Path, events: Optional[dict[str, int]] = None) -> Path:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=12 * GiB_KB)
    root.psi("memory", some=(0, 0, 0, 1000), full=(0, 0, 0, 500))
    root.vmstat(pgscan_kswapd=100)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    root.process(400, "app-worker", rss_anon_kb=200 * 1024, cgroup_v2=APP)
    root.process(401, "app-helper", rss_anon_kb=20 * 1024, cgroup_v2=APP)
    root.cgroup_v2(APP, max=256 * MiB, events_local=events or {})
    root.process(500, "job", rss_anon_kb=100 * 1024, cgroup_v2=BATCH)
    root.cgroup_v2(BATCH, max=128 * MiB)
    root.process(600, "browser", rss_anon_kb=2 * GiB_KB, cgroup_v2="/user.slice/browser.scope")
    root.cgroup_v2("/user.slice/browser.scope")
    root.finish()
    (tmp_path / "root/dev").mkdir(exist_ok=True)
    (tmp_path / "root/dev/kmsg").write_bytes(b"")
    return tmp_path / "root"


def _engine(root: Path, policy: str = POLICY) -> tuple[Engine, MemorySink, FakeClock]:
    parsed = parse_policy(policy, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    sink, clock = MemorySink(), FakeClock()
    engine = Engine(Host(root), Loaded(parsed, plugins, Selector(parsed, plugins)), Reporter(sink), clock)
    return engine, sink, clock


_SEQ = [100]


def _log(root: Path, *texts: str, time_us: int = 5_000_000) -> None:
    """Append kernel records to the recorded log, as /dev/kmsg prints them."""
    with open(root / "dev/kmsg", "ab") as f:
        for text in texts:
            _SEQ[0] += 1
            time_us += 10
            f.write(kmsg_line(KmsgRecord(0, 3, _SEQ[0], time_us, "-", text)))


def _memcg_oom(root: Path, memcg: str, pid: int, comm: str) -> None:
    _log(
        root,
        f"{comm} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg={memcg},task_memcg={memcg},task={comm},pid={pid},uid=0",
        f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:300000kB, "
        "anon-rss:250000kB, file-rss:6032kB, shmem-rss:4kB, UID:0 pgtables:600kB oom_score_adj:0",
    )


def _kernel_kills(sink: MemorySink) -> list[dict[str, str]]:
    return [e for e in sink.events if e.get("MESSAGE_ID") == MSG_KERNEL_OOM_KILL]


def _set_oom_kills(root: Path, cgroup: str, count: int) -> None:
    path = root / f"sys/fs/cgroup{cgroup}/memory.events"
    lines = [line for line in path.read_text().splitlines() if not line.startswith("oom_kill ")]
    path.write_text("\n".join([*lines, f"oom_kill {count}"]) + "\n")


def test_a_memcg_oom_kill_in_a_watched_group_is_reported_with_the_policy_s_choice(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root)
    assert engine.follow_kernel_log() is None
    seen: list[SeenKill] = []
    engine.kernel_kill_listeners.append(seen.append)
    engine.tick()
    assert _kernel_kills(sink) == []
    _memcg_oom(root, APP, 399, "app-leak")
    _set_oom_kills(root, APP, 1)  # the kernel's counter counts the same kill
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["PRIORITY"] == "4"
    assert event["MESSAGE"] == (
        f"kernel OOM killer killed pid 399 (app-leak) in {APP}: memory cgroup {APP} out of memory "
        "(CONSTRAINT_MEMCG); anon-rss 244.1 MiB, file-rss 5.9 MiB, shmem-rss 4.0 KiB; guardian's "
        f"rule cgroup[0] watches {APP}; its policy would have chosen pid 400 (app-worker), 200.0 MiB"
    )
    assert event["GUARDIAN_SOURCE"] == "kmsg"
    assert event["GUARDIAN_VICTIM_PID"] == "399"
    assert event["GUARDIAN_VICTIM_COMM"] == "app-leak"
    assert event["GUARDIAN_VICTIM_CGROUP"] == APP
    assert event["GUARDIAN_SCOPE"] == APP
    assert event["GUARDIAN_OOM_CONSTRAINT"] == "CONSTRAINT_MEMCG"
    assert event["GUARDIAN_OOM_MEMCG"] == APP
    assert event["GUARDIAN_OOM_CONTEXT"] == "Memory cgroup out of memory"
    assert event["GUARDIAN_VICTIM_ANON_RSS_BYTES"] == str(250000 * 1024)
    assert event["GUARDIAN_VICTIM_FILE_RSS_BYTES"] == str(6032 * 1024)
    assert event["GUARDIAN_VICTIM_SHMEM_RSS_BYTES"] == str(4 * 1024)
    assert event["GUARDIAN_RULE"] == "cgroup[0]"
    assert event["GUARDIAN_WOULD_CHOOSE_PID"] == "400"
    assert event["GUARDIAN_WOULD_CHOOSE_COMM"] == "app-worker"
    assert event["GUARDIAN_WOULD_CHOOSE_CGROUP"] == APP
    assert event["GUARDIAN_OOM_KILLS"] == "1"
    assert engine.kernel_kills == 1
    (kill,) = seen
    assert kill.kill is not None and kill.kill.pid == 399 and kill.source == "kmsg"
    # the counter's rise is that kill: no second report, now or after the hold
    engine.tick(engine.clock.monotonic_us() + int(OOM_COUNT_S * S) + HOLD_US)
    assert len(_kernel_kills(sink)) == 1 and engine.kernel_kills == 1


def test_a_kill_no_rule_watches_says_so(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root)
    engine.follow_kernel_log()
    _memcg_oom(root, BATCH, 501, "job-child")
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["GUARDIAN_RULE"] == "none"
    assert f"no guardian rule watches {BATCH}" in event["MESSAGE"]
    assert event["GUARDIAN_WOULD_CHOOSE_PID"] == "500"  # what its ranking would pick there


def test_a_machine_wide_oom_is_the_machine_rule_s(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root)
    engine.follow_kernel_log()
    _log(
        root,
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
        "task_memcg=/user.slice/editor.scope,task=editor,pid=290,uid=1000",
        "Out of memory: Killed process 290 (editor) total-vm:373156kB, anon-rss:362504kB, "
        "file-rss:4kB, shmem-rss:0kB, UID:1000 pgtables:768kB oom_score_adj:0",
    )
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["GUARDIAN_SCOPE"] == "/"
    assert event["GUARDIAN_OOM_CONSTRAINT"] == "CONSTRAINT_NONE"
    assert "GUARDIAN_OOM_MEMCG" not in event
    assert event["GUARDIAN_RULE"] == "machine"
    assert event["GUARDIAN_VICTIM_UID"] == "1000"
    assert "the machine out of memory (CONSTRAINT_NONE)" in event["MESSAGE"]
    assert event["GUARDIAN_WOULD_CHOOSE_COMM"] == "browser"


def test_a_scope_that_is_gone_or_unknown_is_said(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root)
    engine.follow_kernel_log()
    _memcg_oom(root, "/system.slice/gone.service", 700, "gone")
    # no summary (dump_header() rate-limited): the kernel does not say where the OOM was
    _log(
        root,
        "Memory cgroup out of memory: Killed process 701 (other) total-vm:1000kB, anon-rss:900kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0",
        time_us=9_000_000,
    )
    engine.tick()
    gone, unknown = _kernel_kills(sink)
    assert gone["GUARDIAN_RULE"] == "cgroup[0]"
    assert gone["GUARDIAN_WOULD_CHOOSE"] == "nothing: /system.slice/gone.service is gone"
    assert "GUARDIAN_SCOPE" not in unknown and "GUARDIAN_VICTIM_CGROUP" not in unknown
    assert unknown["GUARDIAN_WOULD_CHOOSE"] == "nothing: the kernel's report does not say where the OOM was"
    assert unknown["GUARDIAN_RULE"] == "none"


def test_nothing_rankable_is_said(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root, POLICY + '[[protect]]\ncgroup = "/system.slice/app.service"\n')
    engine.follow_kernel_log()
    _memcg_oom(root, APP, 399, "app-leak")
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["GUARDIAN_WOULD_CHOOSE"].startswith("nothing: nothing may be killed there: ")
    assert "GUARDIAN_WOULD_CHOOSE_PID" not in event


def test_a_group_rule_would_have_chosen_the_group(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root, POLICY.replace('kill = "16M" }', 'kill = "16M" }\naction = "group"'))
    engine.follow_kernel_log()
    _memcg_oom(root, APP, 399, "app-leak")
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["GUARDIAN_WOULD_CHOOSE"] == f"cgroup {APP} (2 processes), 220.0 MiB"
    assert event["GUARDIAN_WOULD_CHOOSE_CGROUP"] == APP and "GUARDIAN_WOULD_CHOOSE_PID" not in event


def test_a_counter_rise_the_log_never_reports_is_reported_after_the_hold(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, clock = _engine(root)
    engine.follow_kernel_log()
    engine.tick()
    _set_oom_kills(root, APP, 2)
    clock.advance(OOM_COUNT_S)
    result = engine.tick()
    assert _kernel_kills(sink) == [] and engine.calm is None  # held for the log's line
    assert result.interval_s <= HOLD_US / S
    clock.advance(HOLD_US / S)
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["GUARDIAN_SOURCE"] == "memory.events"
    assert event["GUARDIAN_OOM_KILLS"] == "2"
    assert event["GUARDIAN_VICTIM_CGROUP"] == APP and "GUARDIAN_VICTIM_PID" not in event
    assert event["MESSAGE"].startswith(
        f"kernel OOM killer killed 2 processes in {APP}: its oom_kill counter rose, and the kernel "
        "log did not report it; guardian's rule cgroup[0] watches"
    )
    assert engine.kernel_kills == 2


def test_without_a_kernel_log_the_counter_reports_at_once(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "dev/kmsg").unlink()
    engine, sink, clock = _engine(root)
    assert "does not exist" in (engine.follow_kernel_log() or "") or engine.kernel_log is None
    engine.tick()
    _set_oom_kills(root, APP, 1)
    clock.advance(OOM_COUNT_S)
    engine.tick()
    (event,) = _kernel_kills(sink)
    assert event["GUARDIAN_SOURCE"] == "memory.events"


def test_counters_are_not_read_on_every_full_tick(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, _, clock = _engine(root)
    engine.tick()
    engine.calm = None
    clock.advance(OOM_COUNT_S / 2)
    # a rule without events conditions does not read memory.events: only the counter look does
    reads = _reads_of_tick(engine)
    assert not [r for r in reads if r.endswith((":oom_kill", ":memory.events"))]
    clock.advance(OOM_COUNT_S)
    assert [r for r in _reads_of_tick(engine) if r.endswith(":oom_kill")] == [f"cgroup:{APP}:oom_kill"]


def _reads_of_tick(engine: Engine) -> list[str]:
    import guardian.daemon.engine as engine_module

    made = []
    original = engine_module.Sample

    class Recording(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            made.append(self)

    engine_module.Sample = Recording  # type: ignore[misc]
    try:
        engine.tick()
    finally:
        engine_module.Sample = original  # type: ignore[misc]
    return [r for sample in made for r in sample.reads]


# --- the report's other sinks ------------------------------------------------------------------------


def _kill(**changes: object) -> KernelOomKill:
    values: dict[str, object] = {
        "pid": 4242,
        "comm": "bad\nname",
        "context": "Memory cgroup out of memory",
        "kernel_time_us": 16276056770,
        "seq": 3066,
        "total_vm_bytes": 137100 * 1024,
        "anon_rss_bytes": 127616 * 1024,
        "file_rss_bytes": 6032 * 1024,
        "shmem_rss_bytes": 0,
        "uid": 0,
        "constraint": "CONSTRAINT_MEMCG",
        "oom_memcg": "/a",
        "task_memcg": "/a/b",
    }
    values.update(changes)
    return KernelOomKill(**values)  # type: ignore[arg-type]


def test_the_plain_line_escapes_the_comm_and_keeps_the_key_fields() -> None:
    import io

    stream = io.StringIO()
    Reporter(StderrSink(stream)).kernel_oom_kill(
        SeenKill("kmsg", 1, "/a/b", "/a", kill=_kill(), choice_note="/a is gone")
    )
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert line.startswith(
        "guardian: kernel OOM killer killed pid 4242 (bad\\nname) in /a/b: memory cgroup /a"
    )
    assert line.rstrip().endswith("[GUARDIAN_SCOPE=/a GUARDIAN_VICTIM_PID=4242]")


def test_the_json_line_has_numbers_as_numbers() -> None:
    import io
    import json

    stream = io.StringIO()
    Reporter(JsonLinesSink(stream)).kernel_oom_kill(
        SeenKill("kmsg", 1, "/a/b", "/a", kill=_kill(shmem_rss_bytes=None), choice_note="x")
    )
    event = json.loads(stream.getvalue())
    assert event["MESSAGE_ID"] == MSG_KERNEL_OOM_KILL
    assert event["GUARDIAN_VICTIM_PID"] == 4242 and event["GUARDIAN_KERNEL_TIME_USEC"] == 16276056770
    assert "GUARDIAN_VICTIM_SHMEM_RSS_BYTES" not in event  # a kernel before 4.5 printed none
    assert "shmem-rss" not in event["MESSAGE"]


# --- the loop: the log's descriptor, and wakes that carry only log records ---------------------------


class PipeLog:
    """A follower whose descriptor is a pipe the test writes to (a record arriving)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.kills: list[KernelOomKill] = []
        self.reads = 0
        self.records = 0  # what KmsgFollower counts: records read, and overruns
        self.overruns = 0
        self.drains = True  # False: a descriptor that stays readable, a read that gets nothing

    def fileno(self) -> int:
        return self.r

    def read(self) -> list[KernelOomKill]:
        self.reads += 1
        if self.drains:
            with contextlib.suppress(BlockingIOError):
                self.records += len(os.read(self.r, 4096))
        kills, self.kills = self.kills, []
        return kills

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_the_waiter_keeps_the_log_across_rearms_and_says_what_woke_it() -> None:
    log = PipeLog()
    waiter = Waiter()
    try:
        waiter.set_kmsg(log.fileno())
        from guardian.daemon.wakeups import WakePlan

        waiter.arm(WakePlan())  # re-arming drops the plan's descriptors, not the log's
        assert not waiter.wait(0).kmsg
        os.write(log.w, b"x")
        wake = waiter.wait(1)
        assert wake.kmsg and wake.kmsg_only and not wake.kernel
        waiter.set_kmsg(None)
        assert not waiter.wait(0).kmsg
        waiter.close()
        os.fstat(log.r)  # still open: the follower owns it, the waiter never closes it
    finally:
        waiter.close()
        log.close()


def test_a_wake_with_only_log_records_reads_the_log_and_sleeps_on(tmp_path: Path) -> None:
    root = _root(tmp_path)
    engine, sink, _ = _engine(root)
    log = PipeLog()
    engine.kernel_log = log  # type: ignore[assignment]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(5)
    service = Service(engine, None, False, Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}))
    service.waiter.set_kmsg(log.fileno())
    ticks = []
    real_tick = engine.tick

    def counting_tick(now_us: Optional[int] = None):  # type: ignore[no-untyped-def]
        ticks.append(1)
        return real_tick(now_us)

    engine.tick = counting_tick  # type: ignore[method-assign]
    try:
        log.kills.append(_kill(comm="hog", oom_memcg=APP, task_memcg=APP))
        os.write(log.w, b"x")
        wake = service.wait(0.3)
        assert not wake.kmsg  # it read the record, then slept the interval out
        assert log.reads == 1 and ticks == []
        (event,) = _kernel_kills(sink)
        assert event["GUARDIAN_VICTIM_COMM"] == "hog" and event["GUARDIAN_RULE"] == "cgroup[0]"
        # `systemctl status` hears of it
        assert notify.recv(4096).decode().endswith("; 0 kills; 1 kernel OOM kills seen")
    finally:
        notify.close()
        service.notifier.close()
        service.waiter.close()
        engine.kernel_log = None
        log.close()


def test_the_service_says_once_that_the_log_cannot_be_read(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "dev/kmsg").unlink()
    engine, sink, _ = _engine(root)
    assert Service(engine, None, False, Notifier({})).run(ticks=3) == 0
    said = [e["MESSAGE"] for e in sink.events if "kernel log cannot be read" in e["MESSAGE"]]
    assert len(said) == 1 and "oom_kill counters" in said[0]


def test_the_service_follows_a_recorded_log_through_its_ticks(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _memcg_oom(root, APP, 399, "app-leak")  # under --root the recorded file is read from its start
    engine, sink, _ = _engine(root, POLICY + "[poll]\nmin_interval_s = 0.01\nmax_interval_s = 0.01\n")
    assert Service(engine, None, False, Notifier({})).run(ticks=2) == 0
    assert [e["GUARDIAN_VICTIM_PID"] for e in _kernel_kills(sink)] == ["399"]
    assert engine.kernel_log is None  # closed with the loop


def test_a_log_that_stays_readable_with_nothing_to_read_is_dropped(tmp_path: Path) -> None:
    """A descriptor that polls readable for ever while reads get nothing must not make the loop
    spin: after IDLE_LOG_WAKES such wakes it is no longer followed, and that is said once."""
    from guardian.daemon.service import IDLE_LOG_WAKES

    root = _root(tmp_path)
    engine, sink, _ = _engine(root)
    log = PipeLog()
    log.drains = False
    engine.kernel_log = log  # type: ignore[assignment]
    service = Service(engine, None, False, Notifier({}))
    service.waiter.set_kmsg(log.fileno())
    try:
        os.write(log.w, b"x")
        service.wait(30)  # returns once the log is dropped: the rest of the wait is not spun away
        assert log.reads == IDLE_LOG_WAKES
        assert service.waiter.kmsg_fd is None and engine.kernel_log is None
        said = [e["MESSAGE"] for e in sink.events if "no longer followed" in e["MESSAGE"]]
        assert len(said) == 1
    finally:
        service.waiter.close()


def test_the_metrics_count_each_kernel_kill_by_constraint_and_coverage(tmp_path: Path) -> None:
    from guardian.daemon.exporter import make_registry

    root = _root(tmp_path)
    engine, _, _ = _engine(root)
    engine.follow_kernel_log()
    engine.tick()
    _memcg_oom(root, APP, 399, "app-leak")  # a rule watches APP
    engine.tick()
    _memcg_oom(root, BATCH, 501, "job-child")  # none watches BATCH
    engine.tick()
    registry = make_registry(engine.metrics, engine.clock.monotonic_us)
    name = "guardian_kernel_oom_kills_total"
    assert registry.get_sample_value(name, {"constraint": "memcg", "covered": "true"}) == 1
    assert registry.get_sample_value(name, {"constraint": "memcg", "covered": "false"}) == 1
