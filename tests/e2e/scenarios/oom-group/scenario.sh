#!/bin/bash
# A service with OOMPolicy=kill (systemd sets memory.oom.group=1 on its cgroup: the kernel kills
# the whole service when it kills one of its processes) and MemoryMax=250M: three workers that
# hold 30M each and one that grows at 20 MB/s. The shipped policy's rule is action = "process",
# but the kernel's mem_cgroup_get_oom_group() walks up to and including the OOM domain, so the
# whole service must go at once (cgroup.kill), before the kernel acts; not its processes one by
# one.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 60
bench_start
hold=$(hog_cmd 200 $((30 << 20)))
grow=$(hog_cmd 20)
timeout 120 systemd-run --wait --unit=pool -p MemoryMax=250M -p MemorySwapMax=0 -p OOMPolicy=kill \
    /bin/sh -c "$hold & $hold & $hold & sleep 2; exec $grow" >"$E2E_RESULTS/pool.txt" 2>&1 &
runner=$!
wait_until 10 test -e /sys/fs/cgroup/system.slice/pool.service/memory.oom.group
save pool-oom-group.txt cat /sys/fs/cgroup/system.slice/pool.service/memory.oom.group
wait "$runner"
e2e_log "pool.service finished: exit status $?"
save pool-journal.txt journalctl -b --no-pager -o short-monotonic -u pool.service
record_outcome bystander.service
exit 0
