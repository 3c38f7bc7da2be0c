#!/bin/bash
# The two largest processes must survive: precious.service (300 MiB) is protected by the
# policy, critical.service (250 MiB) runs with OOMScoreAdjust=-1000. A hog grows machine-wide
# at 20 MB/s; it is smaller than both when memory runs low, and it must be the one to die.
set -u
. "$E2E_LIB"
start_daemon || exit 1
if is_guardian; then
    cp /etc/guardian.toml /tmp/policy.toml
    printf "\n[[protect]]\nunit = '^precious\\.service$'\n" >>/tmp/policy.toml
    use_policy /tmp/policy.toml || exit 1
fi
start_bystander precious 300
start_bystander critical 250 -p OOMScoreAdjust=-1000
save critical-adj.txt sh -c 'cat /proc/$(systemctl show -p MainPID --value critical.service)/oom_score_adj'
bench_start
timeout 200 systemd-run --wait --unit=hog -p MemorySwapMax=0 $(hog_cmd 20) >"$E2E_RESULTS/hog.txt" 2>&1
e2e_log "hog.service finished: exit status $?"
! is_guardian || save rank-after.json guardian rank --json --explain
record_outcome precious.service critical.service
