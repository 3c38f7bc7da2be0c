"""Nothing under ``--root`` is ever written: a fixture tree or a chroot is read, never changed.

Arming a PSI trigger writes the trigger into the pressure file, and a v1 usage threshold writes
cgroup.event_control: on a real kernel that registers them, on a fake tree it overwrote the
files (``run --root`` once left every watched memory.pressure unparseable). Every subcommand
runs over a copy of each fixture root, which must come out byte for byte the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES

from guardian.cli import EXIT_OK, main

POLICY = """
[machine]
mem_available = { term = "10%", kill = "5%" }
psi = { kind = "some", stall_pct = 10, duration_s = 2 }
[[cgroup]]
match = "**"
min_headroom = { term = "50%", kill = "40%" }
psi = { kind = "some", stall_pct = 10, duration_s = 2 }
events = { oom_per_s = 0 }
"""


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    found: dict[str, tuple[int, bytes]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path.relative_to(root))] = (st.st_mode, content)
    return found


def run_daemon(root: Path, policy: Path, tmp_path: Path) -> None:
    """``guardian run --root`` until READY=1 and a few passes of its loop, then SIGTERM."""
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "GUARDIAN_LOG_FORMAT": "json"}
    args = [sys.executable, "-m", "guardian.cli", "run", "--root", str(root), "--policy", str(policy)]
    daemon = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        messages = []
        while not any("READY=1" in m.split("\n") for m in messages):
            messages.append(notify.recv(4096).decode())
        end = time.monotonic() + 2  # let it tick for a while
        notify.settimeout(0.2)
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                notify.recv(4096)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, stderr.decode()
        # whatever the policy says, a run under --root signals nothing, and says so at start
        assert b"DRY RUN (--root " in stderr, stderr.decode()[:2000]
        assert f"started: policy {policy}: ".encode() in stderr  # which policy file it runs
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir() if (p / "proc").is_dir()))
def test_no_subcommand_writes_under_root(
    fixture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / fixture, root, symlinks=True)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    before = snapshot(root)
    for argv in (
        ["status", "--interval", "0.1"],
        ["status", "--json", "--interval", "0"],
        ["rank", "--explain"],
        ["rank", "--json", "--mode", "cgroup"],
        ["check", "--policy", str(policy)],
        ["rank", "--policy", str(policy)],
    ):
        assert main([*argv, "--root", str(root)]) == EXIT_OK, (argv, capsys.readouterr().err)
    capsys.readouterr()
    run_daemon(root, policy, tmp_path)
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == []
