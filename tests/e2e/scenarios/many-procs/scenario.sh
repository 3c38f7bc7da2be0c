#!/bin/bash
# Two services of five mid-size workers each walk past MemoryMax=300M (workers stop at 30, 45,
# 60, 75 and 120 MiB, growing 5 MB/s: without the largest, the rest fit). One is under a rule with action = "group" (every worker
# dies at once through cgroup.kill), the other under action = "process" (only the largest dies;
# the rest of the service keeps running).
set -u
. "$E2E_LIB"
start_daemon || exit 1
cat >/tmp/policy.toml <<'TOML'
[[cgroup]]
match = "system.slice/fleet-group.service"
min_headroom = { term = "10%", kill = "3%" }
action = "group"
[[cgroup]]
match = "system.slice/fleet-proc.service"
min_headroom = { term = "10%", kill = "3%" }
action = "process"
TOML
use_policy /tmp/policy.toml || exit 1
workers=""
for mib in 30 45 60 75 120; do
    workers="$workers $(hog_cmd 5 $((mib << 20))) &"
done
bench_start
for unit in fleet-group fleet-proc; do
    systemd-run --unit="$unit" -p MemoryMax=300M -p MemorySwapMax=0 /bin/sh -c "$workers wait"
done
sleep 90  # 330 MiB asked at 5 MB/s per worker: the TERM line is crossed after about a minute
save fleet-proc-pids.txt cat /sys/fs/cgroup/system.slice/fleet-proc.service/cgroup.procs
save fleet-group-state.txt systemctl show fleet-group.service -p ActiveState -p Result
record_outcome fleet-proc.service
