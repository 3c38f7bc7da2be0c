#!/bin/bash
# The kernel acts where guardian does not watch: a transient unit in a slice of its own
# (batch.slice: outside the shipped policy's system.slice/*.service) with MemoryMax=96M and no
# swap, a 20 MiB keeper and a hog growing at 50 MB/s in it. The kernel's memcg OOM killer kills
# the hog; guardian must report that kill (its "kernel OOM kill seen" MESSAGE_ID) with the hog's
# pid, comm and cgroup, that no rule watches the group, and whom its policy would have chosen
# there (the keeper). OOMPolicy=continue and the sleep keep the keeper alive for that ranking.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 60
bench_start
keeper=$(hog_cmd 200 $((20 << 20)))
grow=$(hog_cmd 50)
out=$E2E_RESULTS
timeout 120 systemd-run --wait --unit=batch --slice=batch.slice -p MemoryMax=96M -p MemorySwapMax=0 \
    -p OOMPolicy=continue /bin/sh -c "$keeper & echo \$! >$out/keeper.pid; sleep 2;
        $grow & echo \$! >$out/hog.pid; cat /proc/\$!/comm >$out/hog.comm; wait \$!; sleep 5" \
    >"$E2E_RESULTS/batch.txt" 2>&1
e2e_log "batch.service finished: exit status $?"
save batch-events.txt cat /sys/fs/cgroup/batch.slice/memory.events
if is_guardian; then
    save status.txt guardian status --interval 0
fi
record_outcome bystander.service
exit 0
