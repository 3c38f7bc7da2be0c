#!/bin/bash
# A fast anonymous hog (stress-ng, as fast as the guest can fault pages in) fills the machine
# beside a bystander service; no cgroup limit anywhere: the shipped policy's machine rule
# (MemAvailable 10% TERM / 5% KILL) must stop it before the kernel's global OOM killer.
# The hog asks for 900 MiB: less than MemTotal (960 MiB; the kernel's heuristic overcommit
# refuses a single mapping larger than RAM + swap), more than is available beside the bystander
# and the system, so without a daemon the kernel's OOM killer must act.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 120
bench_start
e2e_log "hog: stress-ng --vm 1 --vm-bytes 900M"
timeout 150 systemd-run --wait --unit=hog -p MemorySwapMax=0 \
    stress-ng --vm 1 --vm-bytes 900M --vm-keep --oomable -t 60s >"$E2E_RESULTS/hog.txt" 2>&1
e2e_log "hog.service finished: exit status $?"
record_outcome bystander.service
