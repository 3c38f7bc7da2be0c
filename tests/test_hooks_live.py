"""Live: ``guardian run`` kills a hog in a confined arena (ARENA.md) and the policy's [[hook]]
command runs after the kill, with the victim's pid and the outcome in its environment.

The hook is ``/bin/sh -c 'env > FILE'`` (a program root alone can change, as guardian requires);
the file is written to a temporary name and renamed, so the test never reads half of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.arena import Arena, GuardianProcess, hog_program, skip_without_arena
from test_daemon_live import LIMIT, TERM_HEADROOM, decisions, policy_for, start, wait_dead

from guardian.host import Host
from guardian.report import MSG_HOOK, MSG_KILL

pytestmark = pytest.mark.live


@pytest.fixture
def hook_arena(live_host: Host) -> Arena:
    skip_without_arena(live_host)
    arena = Arena(live_host, limit_bytes=LIMIT, prefix="guardian-test")
    yield arena
    arena.cleanup()


def read_env(path: Path, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the hook did not write {path} within {timeout_s} s")
        time.sleep(0.05)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_a_hook_command_runs_after_a_real_kill(hook_arena: Arena, tmp_path: Path) -> None:
    out = tmp_path / "hook.env"
    script = f"env | sort > {out}.tmp && mv {out}.tmp {out}; echo notified"
    extra = f"""
[[hook]]
command = ["/bin/sh", "-c", "{script}"]
timeout_s = 5
"""
    g = GuardianProcess(str(tmp_path), policy_for(hook_arena, extra=extra))
    try:
        g.wait_for("READY=1")
        hog = start(hook_arena, hog_program(100, hook_arena.usage_file, LIMIT - TERM_HEADROOM))
        assert wait_dead(hog) is not None, "guardian did not kill the hog"
        env = read_env(out, timeout_s=30)
        (kill,) = decisions(g, MSG_KILL)
        (ran,) = decisions(g, MSG_HOOK)
    finally:
        g.stop()
    assert hook_arena.oom_kills() == 0, "the kernel got there first"
    assert env["GUARDIAN_PID"] == str(hog.pid)
    assert env["GUARDIAN_OUTCOME"] == kill["GUARDIAN_OUTCOME"]
    assert env["GUARDIAN_OUTCOME"] in ("terminated", "killed")
    assert env["GUARDIAN_CGROUP"] == hook_arena.name
    assert env["GUARDIAN_RULE"] == "cgroup[0]" and env["GUARDIAN_SCOPE"] == hook_arena.name
    assert int(env["GUARDIAN_FREED_BYTES"]) > 0
    assert ran["GUARDIAN_HOOK_RESULT"] == "exit status 0" and ran["GUARDIAN_DETAIL"] == "notified"
    # for the README: the environment a hook got in this run
    print("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
