"""Sample a cgroup's memory.current every INTERVAL seconds until the cgroup goes away.

Usage (in the guest): python3 sample_memory.py CGROUP_DIR OUT [INTERVAL] [MAX_SECONDS]
Each line of OUT: CLOCK_MONOTONIC seconds (the journal's __MONOTONIC_TIMESTAMP clock) and bytes.
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    cgroup, out = sys.argv[1], sys.argv[2]
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
    deadline = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else 120.0)
    lines = []
    while time.monotonic() < deadline:
        try:
            with open(f"{cgroup}/memory.current") as f:
                value = f.read().strip()
        except OSError:
            break
        lines.append(f"{time.monotonic():.6f} {value}\n")
        time.sleep(interval)
    with open(out, "w") as f:
        f.writelines(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
