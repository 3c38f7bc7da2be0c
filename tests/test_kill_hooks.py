"""Kill hooks: guardian_before_kill vetoes (fail open, bounded), guardian_after_kill and [[hook]]
commands off the loop, the [[hook]] policy section and the environment a command gets.

Engines run on built roots with a killer that records instead of signalling
(tests/support/fakekill.py); hook commands are real processes (/bin/sh) started by the test's
own AfterKill."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pytest
from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.fakekill import RecordingKiller
from support.sinks import MemorySink

from guardian.actions import Outcome
from guardian.api import KillDecision, KillOutcome, hookimpl
from guardian.config import HookCommand, PolicyError, parse_policy
from guardian.daemon.engine import Engine
from guardian.decision import hook_env
from guardian.hooks import MAX_RUNNING, QUEUE_MAX, VETO_MAX, AfterKill, _Told
from guardian.host import Host
from guardian.loaded import Loaded, load
from guardian.plugins import make_plugin_manager
from guardian.policy import Trigger
from guardian.report import MSG_HOOK, MSG_LIFECYCLE, MSG_NOT_DONE, MSG_VETOED, Reporter
from guardian.sample import Sample
from guardian.selection import Selector

GiB_KB = 1024 * 1024
POLICY = """
grace_s = 30
[scorers]
kernel_badness = 1.0
[machine]
mem_available = { term = "10%", kill = "5%" }
[plugins]
budget_ms = 50
"""


def build(tmp_path: Path, hogs: int = 2, protect_hog: bool = False) -> Path:
    """A machine at its TERM level: hog (pid 500) first in the ranking, then pids 600, 601, ..."""
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(total_kb=64 * GiB_KB, available_kb=int(64 * GiB_KB * 0.08))
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.process(
        500, "hog", rss_anon_kb=6 * GiB_KB, cgroup_v2="/user.slice/user-1000.slice/session-2.scope", uid=1000
    )
    for i in range(hogs - 1):
        root.process(
            600 + i, f"other{i}", rss_anon_kb=GiB_KB // (i + 1) // 4 * 4, cgroup_v2="/system.slice/b.service"
        )
    root.finish()
    return tmp_path / "root"


def engine_for(
    root: Path, *plugins: object, text: str = POLICY
) -> tuple[Engine, RecordingKiller, MemorySink, FakeClock]:
    policy = parse_policy(text, "test.toml")
    manager = make_plugin_manager(None, entry_points=False, extra=plugins)
    assert manager.errors == []
    sink, clock = MemorySink(), FakeClock()
    engine = Engine(Host(root), Loaded(policy, manager, Selector(policy, manager)), Reporter(sink), clock)
    killer = RecordingKiller(engine.killer)
    engine.killer = killer
    return engine, killer, sink, clock


class Vetoes:
    """Vetoes the pids it is given; remembers every decision it was asked about."""

    def __init__(self, *pids: int) -> None:
        self.pids = set(pids)
        self.asked: list[KillDecision] = []

    @hookimpl
    def guardian_before_kill(self, decision: KillDecision) -> Optional[str]:
        self.asked.append(decision)
        return "a backup is running" if decision.pid in self.pids or not self.pids else None


def test_a_veto_moves_on_to_the_next_candidate_and_is_reported(tmp_path: Path) -> None:
    vetoes = Vetoes(500)
    engine, killer, sink, _ = engine_for(build(tmp_path), vetoes)
    engine.tick()
    assert killer.log == [("start", 600, "SIGTERM")]
    assert [d.pid for d in vetoes.asked] == [500, 600]
    first = vetoes.asked[0]
    assert (first.comm, first.uid, first.unit, first.rule, first.level, first.action) == (
        "hog",
        1000,
        "session-2.scope",
        "machine",
        "TERM",
        "term",
    )
    (veto,) = [e for e in sink.events if e["MESSAGE_ID"] == MSG_VETOED]
    assert veto["GUARDIAN_PLUGIN"] == "extra:0:Vetoes"
    assert veto["GUARDIAN_VETO"] == "a backup is running"
    assert veto["GUARDIAN_VICTIM_PID"] == "500"
    assert "the next candidate is asked about" in veto["MESSAGE"]


def test_vetoing_everyone_asks_about_a_bounded_number_and_kills_nobody(tmp_path: Path) -> None:
    vetoes = Vetoes()  # vetoes everything
    engine, killer, sink, clock = engine_for(build(tmp_path, hogs=VETO_MAX + 3), vetoes)
    engine.tick()
    assert killer.log == []
    assert len(vetoes.asked) == VETO_MAX
    assert [e["MESSAGE_ID"] for e in sink.events].count(MSG_VETOED) == VETO_MAX
    (none,) = [e for e in sink.events if e["MESSAGE_ID"] == MSG_NOT_DONE]
    assert none["GUARDIAN_OUTCOME"] == "vetoed"
    clock.advance(0.5)
    engine.tick()  # the scope cools down: not asked again on every tick
    assert len(vetoes.asked) == VETO_MAX


def test_a_protected_process_is_never_asked_about(tmp_path: Path) -> None:
    vetoes = Vetoes(600)
    text = POLICY + "[[protect]]\ncomm = '^hog$'\n"
    engine, killer, _, _ = engine_for(build(tmp_path, hogs=3), vetoes, text=text)
    engine.tick()
    assert 500 not in [d.pid for d in vetoes.asked]
    assert killer.log == [("start", 601, "SIGTERM")]


class Raises:
    @hookimpl
    def guardian_before_kill(self, decision: KillDecision) -> Optional[str]:
        raise SystemExit("no")


class Garbage:
    @hookimpl
    def guardian_before_kill(self, decision: KillDecision) -> object:
        return 42


class Empty:
    @hookimpl
    def guardian_before_kill(self, decision: KillDecision) -> object:
        return "  "


@pytest.mark.parametrize(
    ("plugin", "reason"),
    [
        (Raises(), "raised SystemExit: no"),
        (Garbage(), "returned 42 (int): a reason is a str, or None"),
        (Empty(), "returned an empty reason: a veto must say why"),
    ],
)
def test_a_failing_veto_hook_fails_open(tmp_path: Path, plugin: object, reason: str) -> None:
    engine, killer, sink, _ = engine_for(build(tmp_path), plugin)
    engine.tick()
    assert killer.log == [("start", 500, "SIGTERM")]  # the kill went ahead
    warnings = [e["MESSAGE"] for e in sink.events if e["MESSAGE_ID"] == MSG_LIFECYCLE]
    assert any(
        "guardian_before_kill" in w and reason in w and "the kill goes ahead" in w for w in warnings
    ), warnings


class Hangs:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    @hookimpl
    def guardian_before_kill(self, decision: KillDecision) -> Optional[str]:
        self.calls += 1
        self.release.wait()
        return "too late"


def test_a_hanging_veto_hook_does_not_block_the_kill_and_is_not_started_again(tmp_path: Path) -> None:
    hangs = Hangs()
    try:
        engine, killer, sink, clock = engine_for(build(tmp_path), hangs)
        engine.tick()
        assert killer.log == [("start", 500, "SIGTERM")]
        warnings = [e["MESSAGE"] for e in sink.events if e["MESSAGE_ID"] == MSG_LIFECYCLE]
        assert any("did not finish within its budget of 50 ms" in w for w in warnings)
        killer.kills[500].finish()
        clock.advance(1)
        engine.tick()
        engine.cooldowns.clear()
        clock.advance(1)
        engine.tick()  # a second kill: the stuck plugin is not started again
        assert hangs.calls == 1
        assert killer.log[-1] == ("start", 500, "SIGTERM")
        warnings = [e["MESSAGE"] for e in sink.events if e["MESSAGE_ID"] == MSG_LIFECYCLE]
        assert any("not started: its earlier guardian_before_kill is still running" in w for w in warnings)
    finally:
        hangs.release.set()


class Slow:
    """An after-kill hook that blocks until the test releases it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.told: list[tuple[KillDecision, KillOutcome]] = []

    @hookimpl
    def guardian_after_kill(self, decision: KillDecision, outcome: KillOutcome) -> None:
        self.told.append((decision, outcome))
        self.entered.set()
        self.release.wait()


def test_a_slow_after_kill_hook_does_not_hold_up_the_loop(tmp_path: Path) -> None:
    slow = Slow()
    text = POLICY.replace("budget_ms = 50", "budget_ms = 60000")  # it could hold its worker a minute
    engine, killer, _, clock = engine_for(build(tmp_path), slow, text=text)
    try:
        engine.tick()
        killer.kills[500].finish()
        clock.advance(0.1)
        result = engine.tick()
        assert [a.outcome.result for a in result.finished if a.outcome] == ["terminated"]
        assert slow.entered.wait(30), "the after-kill hook was never called"
        # the hook is still blocked in its worker; the loop goes on ticking
        for _ in range(3):
            clock.advance(0.1)
            engine.tick()
        assert not slow.release.is_set() and not engine.after_kill.flush(0)
    finally:
        slow.release.set()
    assert engine.after_kill.flush(30)
    ((decision, outcome),) = slow.told
    assert decision.pid == 500 and decision.comm == "hog" and decision.action == "term"
    assert outcome.result == "terminated" and outcome.signals == ("SIGTERM",) and outcome.pids == (500,)
    assert outcome.freed_bytes == 6 << 30  # its anonymous memory


def decision(**changes: object) -> KillDecision:
    base = KillDecision(
        pid=4242,
        comm="java",
        cgroup="/system.slice/app.service",
        unit="app.service",
        uid=0,
        kind="process",
        kill_group=None,
        rule="machine",
        condition="memory",
        scope=None,
        level="KILL",
        reason="MemAvailable 180 MiB (1.1%) at or below 2%",
        action="kill",
        score=712.5,
        rss_bytes=3 << 30,
        detected_us=1,
        dry_run=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


OUTCOME = KillOutcome("killed", ("SIGKILL",), (4242,), 3 << 30, 0.05, "")


def test_hook_env_is_the_decision_printable_and_nothing_else() -> None:
    env = hook_env(decision(comm="a\udcff\nb", cgroup="/x/\udcfe\x00y"), OUTCOME)
    assert env["GUARDIAN_COMM"] == "a\\xff\\nb"
    assert env["GUARDIAN_CGROUP"] == "/x/\\xfe\\x00y"
    assert env["GUARDIAN_PID"] == "4242" and env["GUARDIAN_OUTCOME"] == "killed"
    assert env["GUARDIAN_FREED_BYTES"] == str(3 << 30)
    assert env["GUARDIAN_UNIT"] == "app.service" and env["GUARDIAN_LEVEL"] == "KILL"
    for key, value in env.items():
        assert "\0" not in value
        value.encode("utf-8")  # strict: no surrogates reach the environment
        assert key == "PATH" or key.startswith("GUARDIAN_")
    group = hook_env(decision(pid=None, comm="", uid=None, kind="cgroup"), OUTCOME)
    assert group["GUARDIAN_PID"] == "" and group["GUARDIAN_UID"] == ""


def runner(tmp_path: Path, *commands: HookCommand) -> tuple[AfterKill, MemorySink]:
    sink = MemorySink()
    plugins = make_plugin_manager(None, entry_points=False)
    return AfterKill(plugins, commands, 250, Reporter(sink)), sink


def tell(after: AfterKill, d: KillDecision) -> None:
    """Queue a kill directly (what AfterKill.told does after building the records)."""
    with after._cond:
        after._queue.append(_Told(d, OUTCOME))
        if after._thread is None:
            after._thread = threading.Thread(target=after._main, daemon=True)
            after._thread.start()
        after._cond.notify()


def test_a_hook_command_gets_the_decision_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    command = HookCommand(
        ("/bin/sh", "-c", f"env > {out}; echo done; echo oops >&2; exit 3"), label="hook[0]"
    )
    after, sink = runner(tmp_path, command)
    tell(after, decision(comm="we\udcffird"))
    assert after.flush(30)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["GUARDIAN_PID"] == "4242" and env["GUARDIAN_COMM"] == "we\\xffird"
    assert "NOTIFY_SOCKET" not in env and "HOME" not in env
    (ran,) = [e for e in sink.events if e["MESSAGE_ID"] == MSG_HOOK]
    assert ran["GUARDIAN_HOOK"] == "hook[0]" and ran["GUARDIAN_HOOK_RESULT"] == "exit status 3"
    assert ran["GUARDIAN_HOOK_EXIT"] == "3" and ran["PRIORITY"] == "4"
    assert ran["GUARDIAN_DETAIL"] == "done\noops"


def test_hook_commands_run_only_after_a_kill_that_ended(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    after, _ = runner(
        tmp_path, HookCommand(("/bin/sh", "-c", f"echo $GUARDIAN_OUTCOME >> {out}"), label="hook[0]")
    )
    for result in ("vanished", "pid-reused", "protected", "failed", "abandoned", "dry-run", "alive"):
        with after._cond:
            after._queue.append(_Told(decision(), replace(OUTCOME, result=result)))  # type: ignore[arg-type]
    tell(after, decision())
    assert after.flush(30)
    # each command runs on its own (up to four at once): in any order
    assert sorted(out.read_text().split()) == ["alive", "dry-run", "killed"]


def test_a_hook_command_that_overruns_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # a child in the background keeps the output pipe open, and the command itself hangs
    script = f"sleep 600 & echo $! > {pids}; echo $$ >> {pids}; exec sleep 600"
    after, sink = runner(tmp_path, HookCommand(("/bin/sh", "-c", script), timeout_s=0.5, label="hook[0]"))
    tell(after, decision())
    assert after.flush(30)
    (ran,) = [e for e in sink.events if e["MESSAGE_ID"] == MSG_HOOK]
    assert ran["GUARDIAN_HOOK_RESULT"] == "killed after its timeout of 0.5 s"
    for pid in map(int, pids.read_text().split()):
        # the background sleep was re-parented; it must be gone (or a zombie of init's)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"pid {pid} of the hook's group survived its timeout"


def test_a_hook_whose_program_cannot_start_is_reported(tmp_path: Path) -> None:
    after, sink = runner(tmp_path, HookCommand((str(tmp_path / "gone"),), label="hook[0]"))
    tell(after, decision())
    assert after.flush(30)
    (ran,) = [e for e in sink.events if e["MESSAGE_ID"] == MSG_HOOK]
    assert ran["GUARDIAN_HOOK_RESULT"] == "failed to start"
    assert after.running == 0


def test_hook_commands_beyond_the_bound_are_not_run(tmp_path: Path) -> None:
    release = tmp_path / "release"
    wait = HookCommand(("/bin/sh", "-c", f"while [ ! -e {release} ]; do sleep 0.05; done"), label="hook[0]")
    after, sink = runner(tmp_path, *([wait] * (MAX_RUNNING + 2)))
    tell(after, decision())
    try:
        for _ in range(600):
            if len([e for e in sink.events if e["MESSAGE_ID"] == MSG_HOOK]) >= 2:
                break
            threading.Event().wait(0.05)
        skipped = [e for e in sink.events if e["MESSAGE_ID"] == MSG_HOOK]
        assert [e["GUARDIAN_HOOK_RESULT"] for e in skipped] == ["not run", "not run"]
        assert after.running == MAX_RUNNING
    finally:
        release.touch()
    assert after.flush(30)


def test_ended_kills_beyond_the_queue_are_dropped_and_reported(tmp_path: Path) -> None:
    slow = Slow()
    engine, _, sink, _ = engine_for(build(tmp_path), slow)
    try:
        victim = engine.loaded.selector.rank(Sample(engine.host, 1)).top
        assert victim is not None
        trigger = Trigger("machine", None, "memory", "TERM", "process", "low")
        for _ in range(QUEUE_MAX + 3):  # the first is taken by the worker, which then blocks
            engine.after_kill.told(trigger, victim, "term", Outcome("terminated", pids=[500]), False)
        slow.entered.wait(30)
        assert engine.after_kill.dropped >= 2
        dropped = [e for e in sink.events if "ended kills are still waiting" in e["MESSAGE"]]
        assert len(dropped) == engine.after_kill.dropped
    finally:
        slow.release.set()


# --- [[hook]] in the policy ------------------------------------------------------------------


def test_a_hook_section_parses() -> None:
    policy = parse_policy('[[hook]]\ncommand = ["/bin/sh", "-c", "true"]\ntimeout_s = 3\n', "p.toml")
    assert policy.hooks == (HookCommand(("/bin/sh", "-c", "true"), "after", 3.0, "hook[0]"),)
    assert parse_policy('[[hook]]\ncommand = ["/bin/true"]\n', "p.toml").hooks[0].timeout_s == 10.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'command = "/bin/true"',
            "p.toml: hook[0].command: expected a non-empty array of strings (the argv, no shell)",
        ),
        ("command = []", "p.toml: hook[0].command: expected a non-empty array of strings"),
        ('command = ["/bin/true", 3]', "p.toml: hook[0].command[1]: expected a string, got a number"),
        (
            'command = ["true"]',
            'p.toml: hook[0].command[0]: "true": expected an absolute path to an executable (no search of PATH)',
        ),
        (
            'command = ["/nonexistent/notify"]',
            'p.toml: hook[0].command[0]: "/nonexistent/notify": cannot use it: No such file or directory',
        ),
        ('command = ["{tmp}/plain"]', 'p.toml: hook[0].command[0]: "{tmp}/plain": not executable'),
        ('command = ["/bin"]', 'p.toml: hook[0].command[0]: "/bin": a directory, not a program'),
        (
            'command = ["/dev/null"]',
            'p.toml: hook[0].command[0]: "/dev/null": a character device, not a program',
        ),
        (
            'command = ["/bin/true", "a\\u0000b"]',
            "p.toml: hook[0].command[1]: an argument cannot hold a NUL character",
        ),
        (
            'command = ["/bin/true\\u0000"]',
            "p.toml: hook[0].command[0]: an argument cannot hold a NUL character",
        ),
        (
            'command = ["/bin/true"]\ntimeout_s = 0',
            "p.toml: hook[0].timeout_s: expected a number from 0.1 to 60, got 0",
        ),
        (
            'command = ["/bin/true"]\ntimeout_s = 1e400',
            "p.toml: hook[0].timeout_s: expected a number from 0.1 to 60, got inf",
        ),
        ('command = ["/bin/true"]\nwhen = "before"', 'p.toml: hook[0].when: expected "after", got "before"'),
        ('command = ["/bin/true"]\nuser = "nobody"', "p.toml: hook[0].user: unknown key"),
    ],
)
def test_bad_hook_sections_are_refused_with_file_key_and_reason(
    body: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("#!/bin/sh\n")  # mode 0644: not executable
    with pytest.raises(PolicyError) as info:
        parse_policy(f"[[hook]]\n{body.replace('{tmp}', str(tmp_path))}\n", "p.toml")
    assert str(info.value).startswith(message.replace("{tmp}", str(tmp_path)))


def test_too_many_or_too_long_arguments_are_refused() -> None:
    with pytest.raises(PolicyError, match=r"hook\[0\].command: expected at most 64 arguments, got 65"):
        parse_policy("[[hook]]\ncommand = [" + ", ".join(['"/bin/true"'] * 65) + "]\n", "p.toml")
    with pytest.raises(PolicyError, match=r"hook\[0\].command\[1\]: longer than 4096 characters"):
        parse_policy(f'[[hook]]\ncommand = ["/bin/true", "{"x" * 5000}"]\n', "p.toml")
    with pytest.raises(PolicyError, match=r"hook: expected an array of tables \(\[\[hook\]\]\)"):
        parse_policy('hook = "x"\n', "p.toml")


def test_a_hook_program_a_user_could_change_is_refused_at_load(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the rule is about root: ownership checks need it")
    script = tmp_path / "notify"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[hook]]\ncommand = ["{script}"]\n')
    with pytest.raises(PolicyError) as info:
        load(Host("/"), str(policy))
    assert str(info.value).startswith(
        f"{policy}: hook[0].command[0]: {script}: /tmp is writable by group or others"
    )


def test_every_hook_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Kill hooks", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("| `GUARDIAN_"))
    names = set(hook_env(decision(), OUTCOME)) - {"PATH"}
    assert sorted(n for n in names if f"`{n}`" not in rows) == []
    assert sorted(set(re.findall(r"`(GUARDIAN_\w+)`", rows)) - names) == []


VETO_PLUGIN = """
from guardian.api import hookimpl

@hookimpl
def guardian_before_kill(decision):
    return None
"""


def test_check_names_the_plugins_that_can_veto_and_the_hook_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.secure import root_only_dir, secure_base

    from guardian.cli import main

    if secure_base() is None:
        pytest.skip("needs root and a directory only root controls")
    with root_only_dir() as plugin_dir:
        (Path(plugin_dir) / "vetoes.py").write_text(VETO_PLUGIN)
        policy = tmp_path / "policy.toml"
        policy.write_text(
            f'[plugins]\ndirectory = "{plugin_dir}"\nentry_points = false\n'
            '[[hook]]\ncommand = ["/bin/sh", "-c", "logger killed $GUARDIAN_PID"]\n'
        )
        assert main(["check", "--policy", str(policy), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[2]
        == f"{policy}: plugins that can veto a kill (guardian_before_kill): vetoes (file {plugin_dir}/vetoes.py)"
    )
    assert out[3] == f"{policy}: commands run after a kill: hook[0]: /bin/sh -c 'logger killed $GUARDIAN_PID'"
