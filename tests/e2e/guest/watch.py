"""Process watcher, run in the guest by guest.sh's bench_begin: which processes lived in which
cgroup, and when each one disappeared. The benchmark attributes kills from each daemon's own log
(a pid, or a cgroup for systemd-oomd) and the kernel's; this gives every pid its cgroup and the
time it was gone, the same way whichever daemon runs.

Usage: python3 watch.py OUT_JSON ROOT...   (ROOT: cgroup2 directories, e.g. /sys/fs/cgroup/system.slice)
Every POLL_S the cgroup.procs of every cgroup under the roots are read (the directory tree is
rescanned every second; a root that does not exist yet is looked for again). A zombie leaves
cgroup.procs at once, so "gone" is when the process died, to POLL_S. Times are CLOCK_BOOTTIME
(/proc/uptime's clock). OUT_JSON is replaced every 2 s and on SIGTERM:
{"pids": {PID: {"cgroup", "comm", "seen", "gone"}}}, cgroup relative to the cgroup2 mount.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

POLL_S = 0.1
RESCAN_S = 1.0
DUMP_S = 2.0
MOUNT = "/sys/fs/cgroup"


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def cgroup_dirs(roots: list[str]) -> list[str]:
    found = []
    for root in roots:
        for dirpath, _dirnames, _files in os.walk(root):
            found.append(dirpath)
    return found


def comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def running(pid: str) -> bool:
    """Still alive and not a zombie: moved into a cgroup the last rescan did not see yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main() -> int:
    out, roots = sys.argv[1], sys.argv[2:]
    pids: dict[str, dict[str, object]] = {}

    def dump() -> None:
        tmp = f"{out}.tmp"
        with open(tmp, "w") as f:
            json.dump({"poll_s": POLL_S, "ended": now(), "pids": pids}, f)
        os.replace(tmp, out)

    def stop(signum: int, frame: object) -> None:
        dump()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    dirs: list[str] = []
    next_rescan = next_dump = 0.0
    while True:
        t = now()
        if t >= next_rescan:
            dirs, next_rescan = cgroup_dirs(roots), t + RESCAN_S
        alive = set()
        for d in dirs:
            try:
                with open(f"{d}/cgroup.procs") as f:
                    listed = f.read().split()
            except OSError:
                continue  # removed since the last rescan
            cgroup = d[len(MOUNT) :] or "/"
            for pid in listed:
                alive.add(pid)
                if pid not in pids or pids[pid]["gone"] is not None:
                    pids[pid] = {"cgroup": cgroup, "comm": comm(pid), "seen": round(t, 3), "gone": None}
                else:
                    pids[pid]["cgroup"] = cgroup  # moved: where it is now
        for pid, info in pids.items():
            if info["gone"] is None and pid not in alive and not running(pid):
                info["gone"] = round(t, 3)
        if t >= next_dump:
            dump()
            next_dump = t + DUMP_S
        time.sleep(POLL_S)


if __name__ == "__main__":
    raise SystemExit(main())
