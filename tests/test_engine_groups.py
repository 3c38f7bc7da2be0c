"""Group kills chosen by the engine on built roots (dry runs: a fake root's pids are not this
machine's): memory.oom.group as the kernel walks it, never-kill members spared, and group
victims through the same exclusions as every other candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.sinks import MemorySink

from guardian.config import parse_policy
from guardian.daemon.engine import Act, Engine
from guardian.hookspecs import hookimpl
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.plugins import make_plugin_manager
from guardian.report import MSG_DRY_RUN, MSG_NOT_DONE, Reporter
from guardian.selection import Selector

GiB_KB = 1024 * 1024
MiB = 1 << 20


def web_root(tmp_path: Path, adj: int = 0, oom_group: bool = True, available_pct: float = 3) -> Path:
    """nginx.service (memory.oom.group=1 unless told) with a master, two workers and a helper at
    ``adj``, beside a smaller service, on a machine at ``available_pct`` of its memory."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=16 * GiB_KB, available_kb=int(16 * GiB_KB * available_pct / 100))
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    web = "/system.slice/nginx.service"
    root.process(700, "nginx", rss_anon_kb=64 * 1024, cgroup_v2=web)
    root.process(701, "nginx", ppid=700, rss_anon_kb=3 * GiB_KB, cgroup_v2=web)
    root.process(702, "nginx", ppid=700, rss_anon_kb=GiB_KB, cgroup_v2=web)
    root.process(703, "helper", ppid=700, rss_anon_kb=32 * 1024, oom_score_adj=adj, cgroup_v2=web)
    root.process(800, "cron", rss_anon_kb=512 * 1024, cgroup_v2="/system.slice/cron.service")
    root.cgroup_v2(web, max=8 << 30, oom_group=oom_group)
    root.cgroup_v2("/system.slice/cron.service")
    root.finish()
    return tmp_path / "root"


def engine_for(root: Path, policy_text: str, extra: tuple[object, ...] = ()) -> tuple[Engine, MemorySink]:
    policy = parse_policy(policy_text, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False, extra=extra)
    sink = MemorySink()
    engine = Engine(
        Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), FakeClock()
    )
    return engine, sink


def only_act(engine: Engine) -> Act:
    result = engine.tick()
    assert len(result.started) == 1
    return result.started[0]


MACHINE = "[machine]\nmem_available = { term = '10%', kill = '5%' }\n[scorers]\nkernel_badness = 1.0\n"


def test_an_oom_group_kill_spares_a_never_kill_member(tmp_path: Path) -> None:
    """The largest process is in a memory.oom.group=1 service: the whole group dies, as the
    kernel would kill it, but not the member at oom_score_adj -1000 (the kernel's
    oom_kill_memcg_member() skips OOM_SCORE_ADJ_MIN tasks too)."""
    engine, sink = engine_for(web_root(tmp_path, adj=-1000), MACHINE)
    act = only_act(engine)
    assert act.action == "group-kill"
    assert act.victim is not None and act.victim.candidate.kill_group == "/system.slice/nginx.service"
    assert act.outcome is not None and act.outcome.result == "dry-run"
    assert act.outcome.pids == [700, 701, 702]
    assert act.outcome.spared == [703]
    (event,) = sink.events
    assert event["MESSAGE_ID"] == MSG_DRY_RUN
    assert event["MESSAGE"].startswith(
        "dry run: would group-kill cgroup /system.slice/nginx.service (3 processes), "
        "the memory.oom.group of pid 701 (nginx)"
    )
    assert event["GUARDIAN_VICTIM_PIDS"] == "700,701,702" and event["GUARDIAN_VICTIM_PID"] == "701"
    assert event["GUARDIAN_SPARED_PIDS"] == "703"
    assert "would spare pid 703: helper: oom_score_adj is -1000" in event["GUARDIAN_DETAIL"]


def test_an_oom_group_kill_spares_a_protected_member(tmp_path: Path) -> None:
    engine, _ = engine_for(web_root(tmp_path), MACHINE + "[[protect]]\ncomm = '^helper$'\n")
    act = only_act(engine)
    assert act.outcome is not None and act.outcome.spared == [703] and act.outcome.pids == [700, 701, 702]


def test_the_oom_group_walk_includes_the_scope_itself(tmp_path: Path) -> None:
    """A service with OOMPolicy=kill (memory.oom.group=1 on its own cgroup) under a rule with
    action = "process": mem_cgroup_get_oom_group() walks up to and including the OOM domain,
    so the whole service goes, not its processes one by one."""
    root = web_root(tmp_path, available_pct=50)
    current = root / "sys/fs/cgroup/system.slice/nginx.service/memory.current"
    current.write_text(f"{(8 << 30) - 100 * MiB}\n")  # 100 MiB of headroom under MemoryMax=8G
    engine, _ = engine_for(
        root,
        "[machine]\nenabled = false\n[scorers]\nkernel_badness = 1.0\n[[cgroup]]\n"
        "match = 'system.slice/*.service'\nmin_headroom = { term = '5%', kill = '2%' }\naction = 'process'\n",
    )
    act = only_act(engine)
    assert act.trigger.scope == "/system.slice/nginx.service"
    assert act.action == "group-kill"
    assert act.victim is not None and act.victim.candidate.kill_group == "/system.slice/nginx.service"


def test_without_oom_group_one_process_goes(tmp_path: Path) -> None:
    engine, _ = engine_for(web_root(tmp_path, oom_group=False), MACHINE)
    act = only_act(engine)
    assert act.action == "kill"
    assert act.victim is not None and act.victim.candidate.process is not None
    assert act.victim.candidate.process.pid == 701


class ExcludeWeb:
    @hookimpl
    def guardian_exclude(self, candidate: object, context: object) -> Optional[str]:
        cgroup = getattr(candidate, "cgroup", None)
        return (
            "the web tier is drained by its own tooling" if cgroup == "/system.slice/nginx.service" else None
        )


GROUP_RULE = (
    "[machine]\nenabled = false\n[scorers]\nkernel_badness = 1.0\n[[cgroup]]\n"
    "match = 'system.slice/nginx.service'\nmin_headroom = { term = '5%' }\naction = 'group'\n"
)


def near_limit(tmp_path: Path) -> Path:
    root = web_root(tmp_path, oom_group=False, available_pct=50)
    current = root / "sys/fs/cgroup/system.slice/nginx.service/memory.current"
    current.write_text(f"{(8 << 30) - 100 * MiB}\n")
    return root


def test_a_group_victim_is_asked_of_the_plugins_exclude_hooks(tmp_path: Path) -> None:
    """action = "group" goes through the Selector like every victim: a plugin's
    guardian_exclude keeps the group alive (it used to be built by hand, never asked)."""
    engine, sink = engine_for(near_limit(tmp_path), GROUP_RULE, extra=(ExcludeWeb(),))
    act = only_act(engine)
    assert act.victim is None
    assert act.skipped == "group /system.slice/nginx.service: the web tier is drained by its own tooling"
    assert sink.events[-1]["MESSAGE_ID"] == MSG_NOT_DONE
    assert sink.events[-1]["GUARDIAN_OUTCOME"] == "no-candidate"


def test_a_group_victim_is_subject_to_cgroup_ignore_rules(tmp_path: Path) -> None:
    engine, sink = engine_for(
        near_limit(tmp_path), GROUP_RULE + "[[ignore]]\ncgroup = '^/system.slice/nginx'\n"
    )
    act = only_act(engine)
    assert act.victim is None and act.skipped is not None and "ignored by policy ignore[0]" in act.skipped
    assert sink.events[-1]["GUARDIAN_OUTCOME"] == "no-candidate"


def test_a_group_victim_is_killed_whole(tmp_path: Path) -> None:
    engine, sink = engine_for(near_limit(tmp_path), GROUP_RULE)
    act = only_act(engine)
    assert act.action == "group-kill" and act.outcome is not None
    assert act.outcome.pids == [700, 701, 702, 703] and act.outcome.spared == []
    assert "would send 1 to cgroup.kill" in sink.events[-1]["GUARDIAN_DETAIL"]


def test_a_member_that_cannot_be_judged_is_spared_and_rules_out_cgroup_kill(tmp_path: Path) -> None:
    """cgroup.procs lists a process outside guardian's pid namespace as 0, and a process whose
    files do not parse cannot be judged: cgroup.kill would take them unjudged (found in review:
    a protected process outside the namespace died). Both are spared; the others are killed
    member by member."""
    root = near_limit(tmp_path)
    procs = root / "sys/fs/cgroup/system.slice/nginx.service/cgroup.procs"
    procs.write_text(procs.read_text() + "0\n")
    (root / "proc/703/status").write_text("Name:\thelper\nUid:\tgarbage\n")
    engine, sink = engine_for(root, GROUP_RULE)
    act = only_act(engine)
    assert act.action == "group-kill" and act.outcome is not None
    assert act.outcome.pids == [700, 701, 702]
    assert act.outcome.spared == [0, 703]
    detail = sink.events[-1]["GUARDIAN_DETAIL"]
    assert "would send SIGKILL to each member" in detail
    assert "outside guardian's pid namespace" in detail and "cannot be read" in detail
