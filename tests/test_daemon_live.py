"""Live: guardian run against real hogs in a confined arena (ARENA.md).

Every hog grows inside a cgroup pair the test made (a 320 MiB v1 memory limit here, plus the
cgroup2 group of the same name), next to a bystander. guardian watches only that cgroup. The
kernel's own verdict is the arena's oom_kill counter: it must stay 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from support.arena import Arena, GuardianProcess, hog_program, skip_without_arena
from support.secure import root_only_dir, secure_base

from guardian.config import UNITS_TEXT
from guardian.host import Host
from guardian.report import MSG_DRY_RUN, MSG_KILL, MSG_POLICY_LOADED, MSG_POLICY_REJECTED

pytestmark = pytest.mark.live

MiB = 1 << 20
LIMIT = 320 * MiB
TERM_HEADROOM = 64 * MiB


def policy_for(arena: Arena, action: str = "process", extra: str = "") -> str:
    return f"""
cooldown_s = 2
grace_s = 2
[machine]
enabled = false
[[cgroup]]
match = "{arena.name.strip("/")}"
min_headroom = {{ term = "64M", kill = "32M" }}
action = "{action}"
[scorers]
kernel_badness = 1.0
{extra}
"""


@pytest.fixture
def big_arena(live_host: Host) -> Arena:
    skip_without_arena(live_host)
    arena = Arena(live_host, limit_bytes=LIMIT, prefix="guardian-test")
    yield arena
    arena.cleanup()


def start(arena: Arena, code: str) -> subprocess.Popen[bytes]:
    child = arena.spawn(code)
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def bystander(arena: Arena, mib: int = 24) -> subprocess.Popen[bytes]:
    return start(
        arena,
        f"import time; x = bytearray({mib} << 20); x[::4096] = b'b' * len(x[::4096]); "
        "print('ready', flush=True); time.sleep(600)",
    )


def wait_dead(child: subprocess.Popen[bytes], timeout: float = 60) -> Optional[int]:
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def decisions(
    g: GuardianProcess, message_id: str, count: int = 1, timeout_s: float = 10
) -> list[dict[str, Any]]:
    """guardian's events with ``message_id``, once there are ``count`` of them (reports come from
    a sender thread, just after the decision) or the timeout has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in g.events() if e.get("MESSAGE_ID") == message_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("rate", [20, 50, 100, 150, 200, 250, 300, 400, 450, 500])
def test_hog_dies_by_guardians_hand_before_the_kernel(big_arena: Arena, tmp_path: Path, rate: int) -> None:
    g = GuardianProcess(str(tmp_path), policy_for(big_arena))
    try:
        g.wait_for("READY=1")
        calm = bystander(big_arena)
        hog = start(big_arena, hog_program(rate, big_arena.usage_file, LIMIT - TERM_HEADROOM))
        code = wait_dead(hog, timeout=LIMIT / (rate * 1e6) + 30)
        assert code is not None, "the hog outlived the test"
        assert code in (-signal.SIGKILL, 143), code  # 143: its SIGTERM handler's exit
        assert calm.poll() is None, "the bystander died"
        assert big_arena.oom_kills() == 0
        kills = decisions(g, MSG_KILL)
        assert kills, g.events()
        assert kills[0]["GUARDIAN_VICTIM_PID"] == hog.pid
        assert kills[0]["GUARDIAN_TRIGGER"].endswith(":headroom")
        assert kills[0]["GUARDIAN_SCOPE"] == big_arena.name
    finally:
        assert g.stop() == 0


def test_group_kill_takes_every_process(big_arena: Arena, live_host: Host, tmp_path: Path) -> None:
    """Through cgroup.kill where cgroup2 accounts memory; on a hybrid host (memory on v1) each
    member of the v1 group through its own pidfd: the cgroup2 namesake is another group."""
    g = GuardianProcess(str(tmp_path), policy_for(big_arena, action="group"))
    try:
        g.wait_for("READY=1")
        members = [bystander(big_arena, 16) for _ in range(3)]
        hog = start(big_arena, hog_program(100, big_arena.usage_file, LIMIT - TERM_HEADROOM))
        for child in [hog, *members]:
            assert wait_dead(child, timeout=30) == -signal.SIGKILL
        assert big_arena.oom_kills() == 0
        (kill,) = decisions(g, MSG_KILL)
        assert kill["GUARDIAN_ACTION"] == "group-kill"
        v1 = live_host.cgroup_layout().memory_controller == "v1"
        assert kill["GUARDIAN_SIGNALS"] == ("SIGKILL" if v1 else "cgroup.kill")
        assert set(kill["GUARDIAN_VICTIM_PIDS"]) == {c.pid for c in [hog, *members]}
    finally:
        assert g.stop() == 0


def test_hybrid_group_kill_never_reaches_the_cgroup2_namesake(
    big_arena: Arena, live_host: Host, tmp_path: Path
) -> None:
    """On a hybrid host the group judged is the v1 memory group. A protected process that sits
    only in the cgroup2 group of the same name is no member of it: writing that group's
    cgroup.kill (as guardian once did) killed it."""
    if live_host.cgroup_layout().mode != "hybrid" or big_arena.v2_dir is None:
        pytest.skip("needs a hybrid host (v1 memory controller beside cgroup2)")
    sentinel = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; print('ready', flush=True); time.sleep(600)",
            "guardian-sentinel",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert sentinel.stdout is not None and sentinel.stdout.readline() == b"ready\n"
        Path(big_arena.v2_dir, "cgroup.procs").write_text(str(sentinel.pid))  # cgroup2 only
        g = GuardianProcess(
            str(tmp_path),
            policy_for(big_arena, action="group", extra="[[protect]]\ncmdline = 'guardian-sentinel'\n"),
        )
        try:
            g.wait_for("READY=1")
            member = bystander(big_arena, 16)
            hog = start(big_arena, hog_program(100, big_arena.usage_file, LIMIT - TERM_HEADROOM))
            for child in (hog, member):
                assert wait_dead(child, timeout=30) == -signal.SIGKILL
            (kill,) = decisions(g, MSG_KILL)
            assert set(kill["GUARDIAN_VICTIM_PIDS"]) == {hog.pid, member.pid}
            assert sentinel.poll() is None, "the protected process in the cgroup2 namesake died"
        finally:
            assert g.stop() == 0
    finally:
        sentinel.kill()
        sentinel.wait()
        if sentinel.stdout is not None:
            sentinel.stdout.close()


def test_dry_run_reports_and_signals_nothing(big_arena: Arena, tmp_path: Path) -> None:
    g = GuardianProcess(str(tmp_path), policy_for(big_arena), dry_run=True)
    try:
        g.wait_for("READY=1")
        # the hog (with its interpreter) stops about 50 MiB short of the limit: past the TERM
        # line (64 MiB of headroom), short of the KILL line and of the kernel
        hog = start(big_arena, hog_program(100, stop_at_bytes=LIMIT - 48 * MiB - 16 * MiB))
        deadline = time.monotonic() + 30
        while not decisions(g, MSG_DRY_RUN) and time.monotonic() < deadline:
            time.sleep(0.1)
        (decision,) = decisions(g, MSG_DRY_RUN)[:1]
        assert decision["GUARDIAN_VICTIM_PID"] == hog.pid
        assert decision["GUARDIAN_OUTCOME"] == "dry-run"
        assert decision["MESSAGE"].startswith("dry run: would ")
        time.sleep(1)
        assert hog.poll() is None, "guardian signalled the hog in a dry run"
        assert decisions(g, MSG_KILL) == []
    finally:
        assert g.stop() == 0


def test_protected_largest_process_survives(big_arena: Arena, tmp_path: Path) -> None:
    extra = '[[protect]]\ncmdline = "precious-marker"\n'
    g = GuardianProcess(str(tmp_path), policy_for(big_arena, extra=extra))
    try:
        g.wait_for("READY=1")
        precious = start(
            big_arena,
            "import time  # precious-marker\nx = bytearray(150 << 20); x[::4096] = b'p' * len(x[::4096])\n"
            "print('ready', flush=True); time.sleep(600)",
        )
        hog = start(big_arena, hog_program(50, big_arena.usage_file, LIMIT - TERM_HEADROOM))
        assert wait_dead(hog, timeout=30) is not None
        assert precious.poll() is None, "the protected process died"
        assert big_arena.oom_kills() == 0
        time.sleep(0.2)
        assert decisions(g, MSG_KILL)[0]["GUARDIAN_VICTIM_PID"] == hog.pid
    finally:
        assert g.stop() == 0


def test_sighup_with_a_broken_policy_keeps_the_old_one(big_arena: Arena, tmp_path: Path) -> None:
    g = GuardianProcess(str(tmp_path), policy_for(big_arena))
    try:
        g.wait_for("READY=1")
        Path(g.policy_path).write_text("[machine]\nmem_available = { term = 'lots' }\n")
        g.signal(signal.SIGHUP)
        g.wait_for("READY=1")  # reload finished
        (rejected,) = decisions(g, MSG_POLICY_REJECTED)
        assert rejected["GUARDIAN_POLICY_ERROR"] == (
            f'{g.policy_path}: machine.mem_available.term: expected {UNITS_TEXT}, got "lots"'
        )
        # the old policy still acts
        hog = start(big_arena, hog_program(100, big_arena.usage_file, LIMIT - TERM_HEADROOM))
        assert wait_dead(hog, timeout=30) is not None
        assert big_arena.oom_kills() == 0
        # a good policy is taken
        Path(g.policy_path).write_text(policy_for(big_arena))
        g.signal(signal.SIGHUP)
        g.wait_for("READY=1")
        assert decisions(g, MSG_POLICY_LOADED)
        assert g.proc.poll() is None
    finally:
        assert g.stop() == 0


def test_invalid_policy_at_start_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[cgroup]]\nmatch = 'system.slice/[oops'\nmin_headroom = { term = '5%' }\n")
    out = subprocess.run(
        [sys.executable, "-m", "guardian.cli", "run", "--policy", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 78
    assert (
        out.stderr
        == f'guardian run: {bad}: cgroup[0].match: bad glob "system.slice/[oops": unclosed [ in glob\n'
    )


@pytest.mark.parametrize("glob", ["wildcard", "literal", "nested"])
def test_a_cgroup_made_after_start_is_watched_at_once(live_host: Host, tmp_path: Path, glob: str) -> None:
    """A rule's glob matches a group that does not exist yet; it appears and fills at once.
    inotify where it appears, not the 30 s rescan, must bring it under watch in time: for a
    wildcard glob, for a glob naming the one group (whose directory does not exist yet), and
    for a wildcard below two levels that do not exist yet either (made one after the other
    just before the group, as ``mkdir -p`` or systemd making a slice would)."""
    skip_without_arena(live_host)
    name = f"guardian-late-{os.getpid()}-{glob}"
    match = f"guardian-late-{os.getpid()}-*" if glob == "wildcard" else name
    levels: list[Arena] = []
    if glob == "nested":
        outer = f"/guardian-outer-{os.getpid()}"
        match = f"{outer.lstrip('/')}/mid/guardian-late-*"
        name = f"{outer.lstrip('/')}/mid/{name}"
    policy = f"""
[machine]
enabled = false
[[cgroup]]
match = "{match}"
min_headroom = {{ term = "64M", kill = "32M" }}
[scorers]
kernel_badness = 1.0
"""
    g = GuardianProcess(str(tmp_path), policy)
    arena = None
    try:
        g.wait_for("READY=1")
        if glob == "nested":
            for level in (outer, f"{outer}/mid"):
                levels.append(Arena(live_host, limit_bytes=None, name=level))  # nothing runs there
        arena = Arena(live_host, limit_bytes=LIMIT, name=f"/{name}")
        hog = start(arena, hog_program(200, arena.usage_file, LIMIT - TERM_HEADROOM))
        assert wait_dead(hog, timeout=30) is not None
        assert arena.oom_kills() == 0, "the kernel got there first"
        time.sleep(0.2)
        assert decisions(g, MSG_KILL)[0]["GUARDIAN_VICTIM_PID"] == hog.pid
    finally:
        if arena is not None:
            arena.cleanup()
        for level in reversed(levels):
            level.cleanup()
        assert g.stop() == 0


@pytest.mark.parametrize("change", ["written-before-its-first-process", "lowered-while-it-runs"])
def test_a_limit_written_after_guardian_planned_is_watched(
    live_host: Host, tmp_path: Path, change: str
) -> None:
    """No kernel event reports a limit written. A group guardian found without one, which gets
    it before its first process enters (as systemd starts a unit), is planned again when that
    process enters; a running group whose limit is lowered (``systemctl set-property``) is seen
    within max_interval_s (5 s). Either way its hog dies by guardian's hand, not the kernel's."""
    skip_without_arena(live_host)
    lowered = change == "lowered-while-it-runs"
    arena = Arena(live_host, limit_bytes=(4 << 30) if lowered else None, prefix="guardian-test")
    g = None
    try:
        calm = bystander(arena) if lowered else None  # running: no first process to wake on
        g = GuardianProcess(str(tmp_path), policy_for(arena))
        g.wait_for("READY=1")
        arena.set_limit(LIMIT)
        # lowered: 232 MiB to the TERM line at 25 MB/s, about 9.7 s: past the 5 s look
        rate = 25 if lowered else 200
        hog = start(arena, hog_program(rate, arena.usage_file, LIMIT - TERM_HEADROOM))
        code = wait_dead(hog, timeout=LIMIT / (rate * 1e6) + 30)
        assert code in (-signal.SIGKILL, 143), code
        assert arena.oom_kills() == 0, "the kernel got there first"
        # acted on at the TERM line, before the limit: not woken by reclaim there (with swap,
        # the kernel would not have killed, and the hog would have died late but still by guardian)
        assert arena.limit_hits() == 0, "usage reached the limit"
        assert calm is None or calm.poll() is None, "the bystander died"
        kills = decisions(g, MSG_KILL)
        assert kills and kills[0]["GUARDIAN_VICTIM_PID"] == hog.pid, g.events()
        assert kills[0]["GUARDIAN_TRIGGER"].endswith(":headroom")
    finally:
        code = g.stop() if g is not None else 0
        arena.cleanup()
        assert code == 0


def test_a_second_group_is_acted_on_during_the_first_victims_grace_period(
    live_host: Host, tmp_path: Path
) -> None:
    """Kills are state in the loop: while a victim that ignores SIGTERM sits in its grace period
    (30 s here), a second confined group walking to its TERM line is acted on at once, before
    the kernel's memcg OOM killer and long before the first grace period ends."""
    skip_without_arena(live_host)
    first = Arena(live_host, limit_bytes=LIMIT, prefix="guardian-test")
    second = Arena(live_host, limit_bytes=LIMIT, prefix="guardian-test")
    rules = "".join(
        f'[[cgroup]]\nmatch = "{a.name.strip("/")}"\nmin_headroom = {{ term = "64M", kill = "32M" }}\n'
        for a in (first, second)
    )
    g = GuardianProcess(
        str(tmp_path),
        f"grace_s = 30\ncooldown_s = 2\n[machine]\nenabled = false\n[scorers]\nkernel_badness = 1.0\n{rules}",
    )
    try:
        g.wait_for("READY=1")
        # between the TERM line (usage 256M) and the KILL line (288M): SIGTERM, then 30 s of grace
        stubborn = start(
            first, hog_program(200, stop_at_bytes=LIMIT - TERM_HEADROOM + 8 * MiB, ignore_term=True)
        )
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline().startswith(b"term "), "the first victim got no SIGTERM"
        hog = start(second, hog_program(100, second.usage_file, LIMIT - TERM_HEADROOM))
        code = wait_dead(hog, timeout=30)
        assert code in (143, -signal.SIGKILL), f"the second hog was not stopped: {code}"
        assert stubborn.poll() is None, "the first victim's grace period ended early"
        assert second.oom_kills() == 0 and first.oom_kills() == 0
        kills = decisions(g, MSG_KILL)
        assert [k["GUARDIAN_SCOPE"] for k in kills] == [second.name], kills
        assert kills[0]["GUARDIAN_VICTIM_PID"] == hog.pid
    finally:
        code = g.stop()
        first.cleanup()
        second.cleanup()
        assert code == 0


def test_a_reload_that_takes_long_keeps_the_watchdog_fed(tmp_path: Path) -> None:
    """A reload loads the policy and its plugins in a thread: a plugin that hangs at import
    (refused after its 10 s budget) used to stop the loop for those 10 s, past the unit's
    WatchdogSec=10s; then systemd killed guardian and it came back with the new policy."""
    if secure_base() is None:
        pytest.skip("plugin files must be in a root-only directory")
    watchdog_s = 3.0
    with root_only_dir() as plugins:
        g = GuardianProcess(
            str(tmp_path),
            f"[machine]\nenabled = false\n[plugins]\nentry_points = false\ndirectory = {str(plugins)!r}\n",
            dry_run=True,
            extra_env={"WATCHDOG_USEC": str(int(watchdog_s * 1e6))},
        )
        try:
            g.wait_for("READY=1")
            (plugins / "hangs.py").write_text("import time\ntime.sleep(60)\n")
            (plugins / "hangs.py").chmod(0o644)
            g.signal(signal.SIGHUP)
            g.wait_for("RELOADING=1")
            pings = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not decisions(g, MSG_POLICY_REJECTED, timeout_s=0):
                g.wait_for("WATCHDOG=1", timeout_s=watchdog_s)  # raises if the watchdog would expire
                pings.append(time.monotonic())
            (rejected,) = decisions(g, MSG_POLICY_REJECTED)
            assert "hangs.py" in rejected["GUARDIAN_POLICY_ERROR"]
            assert len(pings) >= 3  # fed all along the 10 s import budget
        finally:
            assert g.stop() == 0
