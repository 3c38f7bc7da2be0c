#!/bin/bash
# guardian restarted in the middle of an episode: a service walks towards MemoryMax=250M at
# 8 MB/s; when it is half way, `systemctl restart guardian`. The new guardian must pick the
# episode up and stop the walker before the kernel's memcg OOM does.
set -u
. "$E2E_LIB"
start_daemon || exit 1
bench_start
systemd-run --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 $(hog_cmd 8)
wait_until 60 sh -c '[ $(cat /sys/fs/cgroup/system.slice/walker.service/memory.current) -gt $((125 << 20)) ]'
if [ -n "$(daemon_unit)" ]; then
    save pid-before.txt systemctl show -p MainPID --value "$(daemon_unit)"
    e2e_log "restarting $E2E_DAEMON half way"
    systemctl restart "$(daemon_unit)"
    save pid-after.txt systemctl show -p MainPID --value "$(daemon_unit)"
fi
wait_until 90 sh -c '! systemctl is-active -q walker.service' || e2e_log "walker still running after 90 s"
record_outcome
