#!/bin/bash
# A service runs without MemoryMax=, holding 40M, and is given MemoryMax=250M while it runs
# (systemctl set-property --runtime, as an operator or a resizing orchestrator does); then it
# grows at 20 MB/s. Writing memory.max raises no kernel event and its group is not new: the
# shipped policy's system.slice/*.service rule must see the new limit on its own (guardian reads
# the watched limits every max_interval_s) and stop the service at its headroom line, before the
# kernel's memcg OOM killer; a bystander in the same slice is left alone.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 60
bench_start
hold=$(hog_cmd 200 $((40 << 20)))
grow=$(hog_cmd 20)
timeout 120 systemd-run --wait --unit=resized -p MemorySwapMax=0 \
    /bin/sh -c "$hold & sleep 6; exec $grow" >"$E2E_RESULTS/resized.txt" 2>&1 &
runner=$!
wait_until 10 test -e /sys/fs/cgroup/system.slice/resized.service/cgroup.procs
sleep 2 # running, and long since planned for, without a limit
save resized-max-before.txt cat /sys/fs/cgroup/system.slice/resized.service/memory.max
systemctl set-property --runtime resized.service MemoryMax=250M
e2e_log "set-property: exit status $?"
save resized-max-after.txt cat /sys/fs/cgroup/system.slice/resized.service/memory.max
wait "$runner"
e2e_log "resized.service finished: exit status $?"
record_outcome bystander.service
exit 0
