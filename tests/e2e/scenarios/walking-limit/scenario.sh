#!/bin/bash
# A service walks towards its MemoryMax= (250M, 10 MB/s) under the shipped policy: the
# system.slice/*.service rule (headroom 5% TERM, 2% KILL) must stop it before the kernel's
# memcg OOM killer; a bystander service in the same slice is left alone.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 60
bench_start
timeout 120 systemd-run --wait --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 $(hog_cmd 10) \
    >"$E2E_RESULTS/walker.txt" 2>&1
e2e_log "walker.service finished: exit status $?"
save walker-events.txt cat /sys/fs/cgroup/system.slice/memory.events
record_outcome bystander.service
