#!/bin/bash
# `systemctl reload guardian` under pressure. A service walks towards MemoryMax=250M at 6 MB/s
# while guardian's policy has no rule for it. First a broken policy is reloaded: rejected, the
# old one stays, guardian keeps running. Then a good policy adding the rule: guardian must stop
# the walker before the kernel's memcg OOM does.
set -u
. "$E2E_LIB"
start_daemon || exit 1
cat >/tmp/no-rule.toml <<'TOML'
[machine]
mem_available = { term = "10%", kill = "5%" }
TOML
use_policy /tmp/no-rule.toml || exit 1
bench_start
systemd-run --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 $(hog_cmd 6)
sleep 8
if is_guardian; then
    e2e_log "reloading a broken policy"
    printf '[[cgroup]]\nmatch = "system.slice/walker.service"\nmin_headroom = { term = "lots" }\n' >/etc/guardian.toml
    systemctl reload guardian.service
    wait_until 20 journal_has MESSAGE_ID=2f664e5f69b9416d8cda340495d0661a || e2e_log "no rejection message"
    save after-broken.txt systemctl show guardian.service -p ActiveState -p MainPID -p NRestarts
fi
save usage-at-reload.txt cat /sys/fs/cgroup/system.slice/walker.service/memory.current
cat >/tmp/rule.toml <<'TOML'
[machine]
mem_available = { term = "10%", kill = "5%" }
[[cgroup]]
match = "system.slice/walker.service"
min_headroom = { term = "10%", kill = "4%" }
TOML
use_policy /tmp/rule.toml || exit 1
wait_until 90 sh -c '! systemctl is-active -q walker.service' || e2e_log "walker still running after 90 s"
record_outcome
