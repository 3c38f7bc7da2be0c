#!/bin/bash
# A slow leak (8 MB/s) fills the machine beside a bystander; no cgroup limit: the machine rule
# must act, once, on the leak.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 120
bench_start
e2e_log "leak: 8 MB/s"
timeout 240 systemd-run --wait --unit=leak -p MemorySwapMax=0 $(hog_cmd 8) >"$E2E_RESULTS/leak.txt" 2>&1
e2e_log "leak.service finished: exit status $?"
record_outcome bystander.service
