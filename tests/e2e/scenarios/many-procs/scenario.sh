#!/bin/bash
# Two services of five mid-size workers each walk past MemoryMax=300M (workers stop at 30, 45,
# 60 and 75 MiB growing 5 MB/s, and at 120 MiB growing 10 MB/s: without the largest, the rest
# fit). One is under a rule with action = "group" (every worker dies at once through
# cgroup.kill), the other under action = "process" (only the largest dies; the rest of the
# service keeps running). The largest grows faster so that it is the largest when the TERM line
# is crossed (about 97 MiB against 48): at one rate, the 75 and the 120 MiB workers held the same
# memory then, and which of them went was a coin toss (the 75 MiB one leaves the rest over the
# line, and a second kill follows).
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
for spec in 5:30 5:45 5:60 5:75 10:120; do
    workers="$workers $(hog_cmd "${spec%%:*}" $((${spec#*:} << 20))) &"
done
bench_start
for unit in fleet-group fleet-proc; do
    systemd-run --unit="$unit" -p MemoryMax=300M -p MemorySwapMax=0 /bin/sh -c "$workers wait"
done
sleep 90  # 360 MiB asked: the TERM line is crossed after 10-15 s; the rest shows that the others fit
save fleet-proc-pids.txt cat /sys/fs/cgroup/system.slice/fleet-proc.service/cgroup.procs
save fleet-group-state.txt systemctl show fleet-group.service -p ActiveState -p Result
record_outcome fleet-proc.service
