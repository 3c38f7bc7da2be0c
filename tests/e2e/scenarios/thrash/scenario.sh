#!/bin/bash
# File-cache thrash: a service re-reads a 400 MiB file inside MemoryMax=120M, so its page cache
# is evicted and refaulted over and over. Memory pressure is high while MemAvailable is not low
# (the machine has room; the cgroup has not). A rule on the service's memory.pressure must act;
# the machine rule must not. The rule ends the whole service (action = "group"): killing the
# `cat` alone would only make the shell loop start another one.
set -u
. "$E2E_LIB"
start_daemon || exit 1
cat >/tmp/policy.toml <<'TOML'
[[cgroup]]
match = "system.slice/thrasher.service"
psi = { kind = "some", stall_pct = 20, duration_s = 5 }
action = "group"
TOML
use_policy /tmp/policy.toml || exit 1
start_bystander bystander 60
dd if=/dev/urandom of=/var/tmp/big bs=1M count=400 status=none
sync
echo 3 >/proc/sys/vm/drop_caches
bench_start
systemd-run --unit=thrasher -p MemoryMax=120M -p MemorySwapMax=0 \
    /bin/sh -c 'while :; do cat /var/tmp/big >/dev/null; done'
for _ in $(seq 60); do  # a minute of thrash, the cgroup's pressure noted every second
    { read -r up _ </proc/uptime; echo "$up $(head -1 /sys/fs/cgroup/system.slice/thrasher.service/memory.pressure 2>/dev/null)"; } \
        >>"$E2E_RESULTS/thrasher-pressure.txt"
    systemctl is-active -q thrasher.service || break
    sleep 1
done
save meminfo-after.txt grep -E 'MemTotal|MemAvailable' /proc/meminfo
record_outcome bystander.service
