# shellcheck shell=bash
# Shell helpers for scenario.sh, sourced in the guest: . "$E2E_LIB"
# (copied into the share as lib/guest.sh by tests/e2e/vm.py). run-in-guest.sh exports:
#   E2E_NAME      the scenario's name (its directory name)
#   E2E_REPO_TAR  the guardian repository as the host has it (tracked + untracked, not ignored)
#   E2E_SCENARIO  the scenario directory (the current directory)
#   E2E_RESULTS   where results go; the host gets everything written there
# and whatever the host passed as env (scenario.env).

# e2e_log MESSAGE...: a line with the guest's uptime, on stdout (results/scenario.log + console)
e2e_log() {
    local up
    read -r up _ </proc/uptime
    echo "[$up] $*"
}

# e2e_stamp: copy stdin to stdout, each line prefixed with the uptime at which it arrived.
e2e_stamp() {
    local line up
    while IFS= read -r line; do
        read -r up _ </proc/uptime
        printf '[%s] %s\n' "$up" "$line"
    done
}

# install_guardian: install guardian the way the README tells users (scripts/install.sh, as
# root, from a clone), offline, from the repository unpacked into /root/guardian. Output, with
# a trace of install.sh's steps stamped with the uptime, goes to results/install.log; returns
# install.sh's exit status.
install_guardian() {
    local rc=0
    rm -rf /root/guardian
    mkdir -p /root/guardian
    tar -xf "$E2E_REPO_TAR" -C /root/guardian
    e2e_log "installing guardian: GUARDIAN_OFFLINE=1 bash scripts/install.sh"
    (cd /root/guardian && GUARDIAN_OFFLINE=1 bash -x scripts/install.sh) 2>&1 | e2e_stamp >"$E2E_RESULTS/install.log"
    rc=${PIPESTATUS[0]}
    e2e_log "install.sh exit status $rc"
    return "$rc"
}

# wait_until SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds; 1 on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# journal_has FIELD=VALUE...: some journal entry of this boot matches (journalctl match syntax).
journal_has() {
    [ -n "$(journalctl -b -q --no-pager -o cat -n 1 "$@" 2>/dev/null)" ]
}

# save NAME COMMAND...: COMMAND's stdout to results/NAME, stderr to results/NAME.err (removed when
# empty); returns COMMAND's exit status, also noted in scenario.log.
save() {
    local name=$1 rc=0
    shift
    "$@" >"$E2E_RESULTS/$name" 2>"$E2E_RESULTS/$name.err" || rc=$?
    [ -s "$E2E_RESULTS/$name.err" ] || rm -f "$E2E_RESULTS/$name.err"
    e2e_log "saved $name ($*): exit status $rc"
    return "$rc"
}

# hog_cmd RATE_MB_S [STOP_AT_BYTES]: a command line for a process that grows at a steady rate,
# every page touched, until killed or until it holds STOP_AT_BYTES (then it sleeps): guardian's
# own guardian.arena.hog_program, run by the installed guardian's Python.
hog_cmd() {
    if [ ! -x /usr/local/bin/e2e-hog ]; then
        cat >/usr/local/bin/e2e-hog <<'PY'
#!/opt/guardian/bin/python
import sys
from guardian.arena import hog_program
exec(hog_program(float(sys.argv[1]), stop_at_bytes=int(sys.argv[2]) if len(sys.argv) > 2 else 0))
PY
        chmod 0755 /usr/local/bin/e2e-hog
    fi
    echo "/usr/local/bin/e2e-hog $1 ${2:-0}"
}

# start_bystander UNIT MIB [systemd-run options...]: a service that takes MIB MiB and keeps it;
# returns once it holds them.
start_bystander() {
    local unit=$1 mib=$2
    shift 2
    systemd-run --unit="$unit" -p MemorySwapMax=0 "$@" $(hog_cmd 200 $((mib << 20)))
    wait_until 60 sh -c "[ \$(cat /sys/fs/cgroup/system.slice/$unit.service/memory.current 2>/dev/null || echo 0) -ge $((mib * 900 * 1024)) ]" ||
        e2e_log "$unit did not reach $mib MiB"
}

# use_policy FILE: make FILE guardian's policy (checked first) and reload the service; returns
# once guardian has said it loaded a policy.
use_policy() {
    local loaded="MESSAGE_ID=2a84573cbba6498daaab9afdcc7d2dae" before
    before=$(journalctl -b -q --no-pager -o cat "$loaded" | wc -l)
    guardian check --policy "$1" >>"$E2E_RESULTS/policy-check.txt" 2>&1 || return 1
    install -m 0644 "$1" /etc/guardian.toml
    systemctl reload guardian.service
    wait_until 30 sh -c "[ \$(journalctl -b -q --no-pager -o cat $loaded | wc -l) -gt $before ]" ||
        { e2e_log "guardian did not confirm the new policy"; return 1; }
    e2e_log "policy $1 in force"
}

# record_outcome [UNIT...]: what checks.py reads: guardian's state, each UNIT's state (the
# bystanders), guardian's journal and the kernel's OOM lines.
record_outcome() {
    local unit
    save guardian-show-after.txt systemctl show guardian.service -p MainPID -p NRestarts -p ActiveState -p SubState
    : >"$E2E_RESULTS/bystanders.txt"
    for unit in "$@"; do
        echo "$unit $(systemctl is-active "$unit")" >>"$E2E_RESULTS/bystanders.txt"
    done
    save guardian-journal.txt journalctl -b --no-pager -o short-monotonic -u guardian.service
    dmesg | grep -E 'out of memory|oom-kill|invoked oom-killer' >"$E2E_RESULTS/kernel-oom.txt" || true
}
