#!/bin/bash
# Two services in trouble at once, under the shipped policy (system.slice/*.service: headroom
# TERM 10%, KILL 4%; grace_s 5): stubborn.service grows into its TERM band (MemoryMax=200M, it
# stops at about 184M) and ignores SIGTERM; a moment after its SIGTERM, walker.service
# (MemoryMax=200M) walks to its limit at 100 MB/s, inside stubborn's grace period. Both must be
# stopped by the daemon, the walker before stubborn's grace ends, and the kernel's memcg OOM
# killer must not act. A loop that waits out one victim's grace period is deaf to the walker.
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 60
bench_start
systemd-run --unit=stubborn -p MemoryMax=200M -p MemorySwapMax=0 $(hog_cmd 100 $((175 << 20)) ignore-term)
# the walker starts once stubborn has had its SIGTERM (it says so on stdout), or after 20 s
# (a daemon that does not act in the TERM band never sends one)
if wait_until 20 sh -c "journalctl -b -q --no-pager -o cat -u stubborn.service | grep -q '^term '"; then
    e2e_log "stubborn.service got SIGTERM and ignored it"
else
    e2e_log "stubborn.service got no SIGTERM within 20 s"
fi
timeout 60 systemd-run --wait --unit=walker -p MemoryMax=200M -p MemorySwapMax=0 $(hog_cmd 100) \
    >"$E2E_RESULTS/walker.txt" 2>&1
e2e_log "walker.service finished: exit status $?"
wait_until 30 sh -c '! systemctl is-active -q stubborn.service' || e2e_log "stubborn.service still runs"
save stubborn-journal.txt journalctl -b --no-pager -o short-monotonic -u stubborn.service
record_outcome bystander.service
systemctl stop stubborn.service 2>/dev/null
exit 0
