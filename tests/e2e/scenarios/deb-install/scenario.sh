#!/bin/bash
# deb-install: guardian installed from its Debian package (built on the host from this checkout
# by scripts/build_deb.sh, installed with dpkg -i) beside the peers a Debian host may run:
# earlyoom, which the unit's Conflicts= must stop, and systemd-oomd with Debian's own defaults
# (ManagedOOMSwap=kill on -.slice, ManagedOOMMemoryPressure=kill on user@.service), which may
# stay and about which guardian must warn (its machine rule covers the root slice's cgroup).
# Then what the package installed, and the shipped policy at work: a service walks to its
# MemoryMax=250M at 8 MB/s and guardian stops it before the kernel's memcg OOM killer.
set -u
. "$E2E_LIB"
R=$E2E_RESULTS

systemctl start earlyoom.service systemd-oomd.service
save peers-before.txt systemctl is-active earlyoom.service systemd-oomd.service
start_daemon || exit 1
save peers-after.txt systemctl is-active earlyoom.service systemd-oomd.service
wait_until 20 journal_has MESSAGE_ID=8614d6fccaca40658d1eb8dcdae3a3e6 ||
    e2e_log "no 'started' message from guardian after 20 s"

# what the package did
save is-enabled.txt systemctl is-enabled guardian.service
save guardian-show.txt systemctl show guardian.service -p MainPID -p NRestarts -p ActiveState \
    -p FragmentPath -p ExecStart -p Documentation -p Conflicts
save version.txt guardian --version
save dpkg-status.txt dpkg-query -W -f='${Package} ${Version} ${Status}\n${Conffiles}\n' guardian-oom
save dpkg-files.txt dpkg -L guardian-oom
save catalog.txt journalctl --list-catalog 8614d6fccaca40658d1eb8dcdae3a3e6 7291c848aa2b4d64ad479ace240749f7
save check.txt guardian check --policy /etc/guardian.toml
# the rules' RE2 engine: the package's binding to libre2, with no google-re2 on the machine
save engine.txt python3 -c 'from guardian import rules; print(rules.ENGINE, rules.__file__)'
save google-re2.txt sh -c 'python3 -c "import re2" 2>&1 | tail -n 1'

bench_start
systemd-run --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 $(hog_cmd 8)
wait_until 90 sh -c '! systemctl is-active -q walker.service' || e2e_log "walker still running after 90 s"
record_outcome
exit 0
