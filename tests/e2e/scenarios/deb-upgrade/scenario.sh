#!/bin/bash
# deb-upgrade: an upgrade of the Debian package in the middle of a pressure episode. The older
# build (the same tree built as version $OLD_VERSION) is installed and running; the admin edits
# /etc/guardian.toml (the conffile: the cgroup rule's TERM line from 10% to 15% of the limit)
# and reloads; a service walks towards its MemoryMax=250M at 4 MB/s; once it holds 40 MiB, the
# checkout's own build is installed over the old one. The upgrade must restart guardian on the
# new code (a new main process, whose start message names the new version), keep the local
# edit (dpkg leaves a modified conffile alone when the shipped one did not change), and the new
# guardian must stop the walker at the edited line (15%), before the kernel's memcg OOM killer.
set -u
. "$E2E_LIB"
R=$E2E_RESULTS

unpack_repo
install_deb "$OLD_VERSION" || exit 1
save version-old.txt guardian --version
save show-old.txt systemctl show guardian.service -p MainPID -p ExecMainStartTimestampMonotonic -p ActiveState

# the local edit, in force under the old code before the upgrade
sed -i '/^\[\[cgroup\]\]/,/^action/ s/term = "10%"/term = "15%"/' /etc/guardian.toml
grep -q 'term = "15%"' /etc/guardian.toml || e2e_log "the edit did not apply"
sha256sum /etc/guardian.toml >"$R/policy-edited.sha256"
guardian check --policy /etc/guardian.toml >"$R/check-edited.txt" 2>&1 || e2e_log "the edited policy is invalid"
systemctl reload guardian.service
start_profiler
bench_begin

bench_start
systemd-run --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 $(hog_cmd 4)
wait_until 60 sh -c '[ $(cat /sys/fs/cgroup/system.slice/walker.service/memory.current) -gt $((40 << 20)) ]'
save walker-at-upgrade.txt cat /sys/fs/cgroup/system.slice/walker.service/memory.current
install_deb current || exit 1
save walker-after-upgrade.txt cat /sys/fs/cgroup/system.slice/walker.service/memory.current
save version-new.txt guardian --version
save show-new.txt systemctl show guardian.service -p MainPID -p ExecMainStartTimestampMonotonic -p ActiveState
save dpkg-status.txt dpkg-query -W -f='${Package} ${Version} ${Status}\n' guardian-oom
sha256sum /etc/guardian.toml >"$R/policy-after.sha256"
ls /etc/guardian.toml* >"$R/policy-files.txt"

wait_until 90 sh -c '! systemctl is-active -q walker.service' || e2e_log "walker still running after 90 s"
record_outcome
exit 0
