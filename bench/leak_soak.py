"""Leak soak: does ``guardian run`` hold on to anything of the cgroups and processes it saw?

Runs ``guardian run --dry-run`` (a subprocess, the shipped code path) with a ``[[cgroup]]`` rule
that watches every group below a confined parent (tests/support/arena.py: a 2 GiB limit,
removed afterwards), then churns ``--groups`` child cgroups (default 1000) through it: each is
made (in the v1 memory hierarchy where it is mounted, and in cgroup2), given a short-lived
process, and removed again. Every ``--hot``-th group (default 10) is made with a small limit and
a process that holds most of it, so guardian crosses its headroom line there and decides (a dry
run: nothing is signalled); the others are only watched (rescans, inotify, PSI triggers,
memory.events descriptors, v1 usage thresholds, per-group assessment state).

Prints guardian's open file descriptors and RSS after start and after the churn (both after a
settle), the decisions it reported, and the elapsed time. A leak shows as descriptors or RSS
growing with the number of groups.

    .venv/bin/python bench/leak_soak.py [--groups 1000] [--hot 10] [--batch 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.arena import Arena, GuardianProcess, hog_program

from guardian.host import Host

MiB = 1 << 20


def fd_targets(pid: int) -> dict[str, str]:
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return found


def fds_and_rss(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return fds, rss_kb * 1024


class Child:
    """One churned group: its directories in both hierarchies and the process inside."""

    def __init__(self, arena: Arena, name: str, limit: int, code: str) -> None:
        self.dirs = [d for d in (arena.v1_dir, arena.v2_dir) if d is not None]
        self.paths = [f"{d}/{name}" for d in self.dirs]
        for path in self.paths:
            os.mkdir(path)
        if arena.v1_dir is not None and limit:
            Path(f"{arena.v1_dir}/{name}/memory.limit_in_bytes").write_text(str(limit))
        elif arena.v2_dir is not None and limit and Path(f"{arena.v2_dir}/{name}/memory.max").exists():
            Path(f"{arena.v2_dir}/{name}/memory.max").write_text(str(limit))
        gate_r, gate_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import os; os.read({gate_r}, 1)\n{code}"],
            pass_fds=(gate_r,),
            stdout=subprocess.DEVNULL,
        )
        os.close(gate_r)
        for path in self.paths:
            Path(f"{path}/cgroup.procs").write_text(str(self.proc.pid))
        os.write(gate_w, b"x")
        os.close(gate_w)

    def remove(self) -> None:
        if self.proc.poll() is None:
            fd = os.pidfd_open(self.proc.pid)
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
        self.proc.wait(timeout=30)
        for path in reversed(self.paths):
            for _ in range(100):  # a memcg may take a moment to go offline after its last task
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--hot", type=int, default=10, help="every Nth group crosses its headroom line")
    parser.add_argument("--batch", type=int, default=20, help="groups alive at once")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before each measurement")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (cgroups)", file=sys.stderr)
        return 1
    host = Host("/")
    arena = Arena(host, 2048 * MiB, prefix="guardian-soak")
    workdir = tempfile.mkdtemp(prefix="guardian-soak-")
    policy = f"""
cooldown_s = 0.5
[machine]
enabled = false
[scorers]
kernel_badness = 1.0
cgroup_largest = 1.0
rules = 1.0
[[cgroup]]
match = "{arena.name.strip("/")}/*"
min_headroom = {{ term = "25%", kill = "10%" }}
psi = {{ kind = "some", stall_pct = 50, duration_s = 5 }}
events = {{ oom_per_s = 0 }}
"""
    guardian = GuardianProcess(workdir, policy, dry_run=True)
    start = time.monotonic()
    try:
        guardian.wait_for("READY=1")
        time.sleep(args.settle)
        fds0, rss0 = fds_and_rss(guardian.proc.pid)
        targets0 = fd_targets(guardian.proc.pid)
        live: list[Child] = []
        for i in range(args.groups):
            hot = args.hot and i % args.hot == 0
            code = hog_program(200, stop_at_bytes=20 * MiB) if hot else "import time; time.sleep(0.5)"
            live.append(Child(arena, f"g{i:05d}", 32 * MiB if hot else 0, code))
            if len(live) >= args.batch:
                time.sleep(0.3)  # let guardian see this batch (inotify, a tick, a decision)
                for child in live:
                    child.remove()
                live = []
        for child in live:
            child.remove()
        time.sleep(args.settle)
        fds1, rss1 = fds_and_rss(guardian.proc.pid)
        new_fds = sorted(set(fd_targets(guardian.proc.pid).items()) - set(targets0.items()))
        decisions = [e for e in guardian.events() if e.get("GUARDIAN_OUTCOME") == "dry-run"]
        failed = [e for e in guardian.events() if e.get("MESSAGE", "").startswith("a tick failed")]
    finally:
        code = guardian.stop()
        with contextlib.suppress(OSError):
            arena.cleanup()
    print(f"groups churned: {args.groups} ({args.groups // args.hot if args.hot else 0} crossed their line)")
    print(f"guardian open fds: {fds0} after start, {fds1} after the churn; new: {new_fds or 'none'}")
    print(f"guardian VmRSS:    {rss0 / MiB:.1f} MiB after start, {rss1 / MiB:.1f} MiB after the churn")
    print(f"dry-run decisions reported: {len(decisions)}; failed ticks: {len(failed)}; exit status {code}")
    print(f"elapsed: {time.monotonic() - start:.0f} s")
    return 0 if code == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
