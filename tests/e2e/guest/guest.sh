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

# E2E_DAEMON: which OOM daemon the run has (scenario.env; tests/e2e/bench.py sets it): guardian
# (the default: the suite), earlyoom, nohang, systemd-oomd, or none.
E2E_DAEMON=${E2E_DAEMON:-guardian}

is_guardian() {
    [ "$E2E_DAEMON" = guardian ]
}

# daemon_unit: the unit of the run's daemon (empty for none)
daemon_unit() {
    case $E2E_DAEMON in
    guardian | earlyoom | nohang | systemd-oomd) echo "$E2E_DAEMON.service" ;;
    *) echo "" ;;
    esac
}

# unpack_repo: the repository as the host has it, in /root/guardian
unpack_repo() {
    rm -rf /root/guardian
    mkdir -p /root/guardian
    tar -xf "$E2E_REPO_TAR" -C /root/guardian
}

# deb_file SPEC: the Debian package the host built for this run (expect.py's DEBS; vm.py
# build_debs) as a path in the share: SPEC "current" is the checkout's version, anything else
# the version it was built as. Empty when there is none.
deb_file() {
    local name
    name=$(awk -v spec="$1" '$1 == spec { print $2 }' "$E2E_SHARE/debs/index.txt" 2>/dev/null)
    [ -n "$name" ] && echo "$E2E_SHARE/debs/$name"
}

# install_deb SPEC: dpkg -i the package deb_file SPEC names (a first installation or an
# upgrade); its maintainer scripts enable and start, or restart, guardian.service. Output to
# results/install.log (appended), stamped with the uptime; returns dpkg's exit status.
install_deb() {
    local deb rc
    deb=$(deb_file "$1")
    if [ -z "$deb" ]; then
        e2e_log "no Debian package $1 in the share (expect.py's DEBS)"
        return 1
    fi
    e2e_log "installing $(basename "$deb"): dpkg -i"
    dpkg -i "$deb" </dev/null 2>&1 | e2e_stamp >>"$E2E_RESULTS/install.log"
    rc=${PIPESTATUS[0]}
    e2e_log "dpkg -i exit status $rc; guardian.service $(systemctl is-active guardian.service)"
    return "$rc"
}

# install_guardian: install guardian the way the README tells users (scripts/install.sh, as
# root, from a clone), offline, from the repository unpacked into /root/guardian. Output, with
# a trace of install.sh's steps stamped with the uptime, goes to results/install.log; returns
# install.sh's exit status. With E2E_INSTALL=deb (scenario.env), the Debian package of the
# checkout built on the host instead (install_deb current), with google-re2 taken away.
install_guardian() {
    local rc=0
    unpack_repo
    if [ "${E2E_INSTALL:-}" = deb ]; then
        # the package needs nothing from outside Debian: google-re2, which the image has for
        # install.sh, goes first (the package brings its own binding to Debian's libre2)
        python3 -m pip uninstall -y -q --break-system-packages google-re2 2>&1 | e2e_stamp >>"$E2E_RESULTS/install.log"
        install_deb current
        return
    fi
    e2e_log "installing guardian: GUARDIAN_OFFLINE=1 bash scripts/install.sh"
    (cd /root/guardian && GUARDIAN_OFFLINE=1 bash -x scripts/install.sh) 2>&1 | e2e_stamp >"$E2E_RESULTS/install.log"
    rc=${PIPESTATUS[0]}
    e2e_log "install.sh exit status $rc"
    return "$rc"
}

# start_daemon: bring up the run's daemon with its defaults (guardian: installed the README's
# way, with the shipped policy; systemd-oomd: ManagedOOMMemoryPressure=kill on system.slice and
# kubepods.slice, where the scenarios' workloads run), then the profiler if the host asked for
# one (start_profiler) and the benchmark's instruments (bench_begin). Every scenario starts with it.
start_daemon() {
    case $E2E_DAEMON in
    guardian) install_guardian || return 1 ;;
    earlyoom | nohang) unpack_repo && systemctl start "$(daemon_unit)" || return 1 ;;
    systemd-oomd)
        unpack_repo
        local slice
        for slice in system.slice kubepods.slice; do
            mkdir -p "/etc/systemd/system/$slice.d"
            printf '[Slice]\nManagedOOMMemoryPressure=kill\n' >"/etc/systemd/system/$slice.d/50-e2e-oomd.conf"
        done
        systemctl daemon-reload
        systemctl start systemd-oomd.service || return 1
        save oomd-dump.txt oomctl dump
        ;;
    none) unpack_repo ;;
    *)
        e2e_log "unknown E2E_DAEMON=$E2E_DAEMON"
        return 1
        ;;
    esac
    e2e_log "daemon: $E2E_DAEMON $(systemctl is-active "$(daemon_unit)" 2>/dev/null)"
    start_profiler
    bench_begin
}

# start_profiler: when the host asked for a profile (GUARDIAN_E2E_PROFILE: E2E_PROFILER is then
# the py-spy binary in the share) and the daemon is guardian, py-spy samples guardian's main
# process in the background, E2E_PROFILER_RATE (20) times a second without pausing it, at nice
# -20 so that its samples come on time against guardian's Nice=-10, into results/profile.txt
# (py-spy's raw format: "frame;frame;... count" lines, "function (file:line)" frames); running
# or runnable stacks only, unless E2E_PROFILER_IDLE=1; until stop_profiler.
# results/profile-window.txt notes when sampling started and ended (uptime), and py-spy's own
# CPU time. start_daemon calls it. Under TCG a sample costs py-spy about 3 ms of CPU: at 100/s
# it took a third of one vCPU.
E2E_PROFILER_PID=""
start_profiler() {
    local pid up idle=() rate=${E2E_PROFILER_RATE:-20}
    [ -n "${E2E_PROFILER:-}" ] && is_guardian || return 0
    pid=$(systemctl show -p MainPID --value guardian.service)
    if [ "${pid:-0}" = 0 ]; then
        e2e_log "profiler: guardian.service has no main process"
        return 0
    fi
    [ "${E2E_PROFILER_IDLE:-}" != 1 ] || idle=(--idle)
    nice -n -20 "$E2E_PROFILER" record --pid "$pid" --rate "$rate" --format raw --nonblocking \
        "${idle[@]}" -o "$E2E_RESULTS/profile.txt" >"$E2E_RESULTS/profile.log" 2>&1 &
    E2E_PROFILER_PID=$!
    echo -1000 >"/proc/$E2E_PROFILER_PID/oom_score_adj" 2>/dev/null || true # no daemon's victim
    read -r up _ </proc/uptime
    echo "start $up guardian $pid rate $rate ${idle[*]:-on-cpu}" >"$E2E_RESULTS/profile-window.txt"
    e2e_log "profiler: py-spy (pid $E2E_PROFILER_PID) samples guardian (pid $pid)"
}

# process_gone PID: PID has exited (a child of this shell stays a zombie until waited for)
process_gone() {
    local state
    { read -r _ _ state _ <"/proc/$1/stat"; } 2>/dev/null || return 0
    [ "$state" = Z ]
}

# stop_profiler: stop py-spy by its pid (SIGINT: it then writes profile.txt) and wait for it.
# bench_finish calls it, so the profile is written before the results are collected.
stop_profiler() {
    local pid=$E2E_PROFILER_PID up stat
    [ -n "$pid" ] || return 0
    E2E_PROFILER_PID=""
    read -r up _ </proc/uptime
    # py-spy's own CPU time: utime and stime, fields 14 and 15 (a zombie still has them)
    { read -r -a stat <"/proc/$pid/stat"; } 2>/dev/null || stat=()
    echo "end $up profiler_cpu_ticks $((${stat[13]:-0} + ${stat[14]:-0})) clk_tck $(getconf CLK_TCK)" \
        >>"$E2E_RESULTS/profile-window.txt"
    kill -INT "$pid" 2>/dev/null
    if ! wait_until 60 process_gone "$pid"; then
        e2e_log "profiler: py-spy did not stop on SIGINT; killed, no profile"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    e2e_log "profiler: stopped: $(grep -m1 -E 'Samples:|Error' "$E2E_RESULTS/profile.log" 2>/dev/null)"
}

# bench_begin: start the instruments (in e2e.slice, outside the scenarios' slices): the latency
# probe (probe.py, an ordinary process: a daemon may kill it, which counts as a lost bystander)
# and the process watcher (watch.py, oom_score_adj -1000: instrumentation, not a candidate).
# They write straight into results/, so a run that hangs still brings back what they saw.
bench_begin() {
    systemd-run -q --unit=e2e-watch --slice=e2e.slice -p OOMScoreAdjust=-1000 \
        /usr/bin/python3 "$E2E_SHARE/lib/watch.py" "$E2E_RESULTS/watch.json" \
        /sys/fs/cgroup/system.slice /sys/fs/cgroup/kubepods.slice /sys/fs/cgroup/user.slice /sys/fs/cgroup/e2e.slice
    systemd-run -q --unit=e2e-probe --slice=e2e.slice /usr/bin/python3 "$E2E_SHARE/lib/probe.py" "$E2E_RESULTS/probe.json"
    wait_until 30 test -s "$E2E_RESULTS/probe.json" || e2e_log "the latency probe did not start"
    wait_until 30 test -s "$E2E_RESULTS/watch.json" || e2e_log "the process watcher did not start"
}

# daemon_cpu_ns: the CPU time the daemon's unit has used so far (ns; empty for none)
daemon_cpu_ns() {
    [ -z "$(daemon_unit)" ] || systemctl show -p CPUUsageNSec --value "$(daemon_unit)"
}

# bench_start: the pressure starts now (the benchmark's "seconds to the kill" count from here;
# the daemon's CPU time is noted too)
bench_start() {
    local up
    read -r up _ </proc/uptime
    echo "$up" >"$E2E_RESULTS/bench-start.txt"
    daemon_cpu_ns >"$E2E_RESULTS/daemon-cpu-start.txt"
    e2e_log "pressure starts"
}

# bench_finish: stop the instruments (they write their last state) and keep what they saw
bench_finish() {
    local up
    read -r up _ </proc/uptime
    echo "$up" >"$E2E_RESULTS/bench-end.txt"
    daemon_cpu_ns >"$E2E_RESULTS/daemon-cpu-end.txt"
    e2e_log "latency probe: $(systemctl is-active e2e-probe.service) $(systemctl show -p Result --value e2e-probe.service)"
    systemctl stop e2e-probe.service e2e-watch.service 2>/dev/null
    stop_profiler
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

# hog_cmd RATE_MB_S [STOP_AT_BYTES [ignore-term]]: a command line for a process that grows at a
# steady rate, every page touched, until killed or until it holds STOP_AT_BYTES (then it sleeps);
# with ignore-term it notes a SIGTERM ("term <uptime>" on stdout) and goes on. guardian's own
# tests/support/arena.py (hog_program) from the unpacked repository, run by Debian's Python (the
# same whichever daemon the run has).
hog_cmd() {
    if [ ! -x /usr/local/bin/e2e-hog ]; then
        cat >/usr/local/bin/e2e-hog <<'PY'
#!/usr/bin/python3
import sys
sys.path[:0] = ["/root/guardian", "/root/guardian/tests"]  # the support module imports guardian's
from support.arena import hog_program
exec(hog_program(
    float(sys.argv[1]),
    stop_at_bytes=int(sys.argv[2]) if len(sys.argv) > 2 else 0,
    ignore_term=len(sys.argv) > 3 and sys.argv[3] == "ignore-term",
))
PY
        chmod 0755 /usr/local/bin/e2e-hog
    fi
    echo "/usr/local/bin/e2e-hog $1 ${2:-0} ${3:-}"
}

# swap_on_zram MIB: MIB MiB of swap on /dev/zram0 (the kernel's zram module with its default
# compressor; the guest has no other swap). Call it before start_daemon, so that whichever daemon
# runs sees the swap from its start. What was set up goes to results/swap-setup.txt; returns
# non-zero when the kernel cannot do it.
swap_on_zram() {
    modprobe zram num_devices=1 || return 1
    wait_until 10 test -w /sys/block/zram0/disksize || return 1
    echo "$1M" >/sys/block/zram0/disksize || return 1
    mkswap /dev/zram0 >/dev/null || return 1
    swapon /dev/zram0 || return 1
    {
        echo "comp_algorithm: $(cat /sys/block/zram0/comp_algorithm)"
        zramctl
        swapon --show
        grep -E '^(MemTotal|MemAvailable|SwapTotal|SwapFree):' /proc/meminfo
    } >"$E2E_RESULTS/swap-setup.txt" 2>&1
    e2e_log "swap: $1 MiB on /dev/zram0 ($(swapon --show=NAME,SIZE --noheadings))"
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

# sample_memory OUT SNAPSHOT PCT CGROUP...: until killed, every 0.5 s a line to OUT: the uptime,
# MemAvailable and SwapFree (KiB) and each CGROUP's memory.current (bytes; "-" while it has none;
# CGROUP is relative to /sys/fs/cgroup). The first time MemAvailable is at or below PCT % of MemTotal, one
# line per process to SNAPSHOT: oom_score, pid, cgroup, comm (who is largest just before a line).
# Shell builtins only, but for sleep, so it keeps up under pressure. Run it in the background
# (sample_memory ... & sampler=$!) and kill "$sampler" at the end.
sample_memory() {
    local out=$1 snapshot=$2 pct=$3 key value total=0 avail=0 swapfree=0 up line cg cur taken=0 p score comm cgroup
    shift 3
    while :; do
        while read -r key value _; do
            case $key in
            MemTotal:) total=$value ;;
            MemAvailable:) avail=$value ;;
            SwapFree:)
                swapfree=$value
                break
                ;;
            esac
        done </proc/meminfo
        read -r up _ </proc/uptime
        line="$up $avail $swapfree"
        for cg in "$@"; do
            { read -r cur <"/sys/fs/cgroup/$cg/memory.current"; } 2>/dev/null || cur=-
            line+=" $cur"
        done
        echo "$line" >>"$out"
        if [ "$taken" = 0 ] && [ $((avail * 100)) -le $((total * pct)) ]; then
            taken=1
            for p in /proc/[0-9]*; do
                { read -r score <"$p/oom_score" && read -r cgroup <"$p/cgroup" && read -r comm <"$p/comm"; } 2>/dev/null ||
                    continue
                echo "$score ${p#/proc/} ${cgroup#0::} $comm"
            done >"$snapshot"
            e2e_log "MemAvailable $avail KiB: oom_score of every process in $(basename "$snapshot")"
        fi
        sleep 0.5
    done
}

# use_policy FILE: make FILE guardian's policy (checked first) and reload the service; returns
# once guardian has said it loaded a policy. With a peer daemon, which keeps its defaults, the
# configuration change an operator would make is `systemctl reload-or-restart` of its unit.
use_policy() {
    local loaded="MESSAGE_ID=2a84573cbba6498daaab9afdcc7d2dae" before
    if ! is_guardian; then
        [ -z "$(daemon_unit)" ] || systemctl reload-or-restart "$(daemon_unit)"
        e2e_log "$E2E_DAEMON keeps its defaults (policy $1 is guardian's)"
        return 0
    fi
    before=$(journalctl -b -q --no-pager -o cat "$loaded" | wc -l)
    guardian check --policy "$1" >>"$E2E_RESULTS/policy-check.txt" 2>&1 || return 1
    install -m 0644 "$1" /etc/guardian.toml
    systemctl reload guardian.service
    wait_until 30 sh -c "[ \$(journalctl -b -q --no-pager -o cat $loaded | wc -l) -gt $before ]" ||
        { e2e_log "guardian did not confirm the new policy"; return 1; }
    e2e_log "policy $1 in force"
}

# record_outcome [UNIT...]: what checks.py and the benchmark read: the daemon's state, each
# UNIT's state (the bystanders), the daemon's journal, the kernel's OOM lines, the instruments.
record_outcome() {
    local unit
    bench_finish
    if [ -n "$(daemon_unit)" ]; then
        save daemon-show-after.txt systemctl show "$(daemon_unit)" -p MainPID -p NRestarts -p ActiveState -p SubState
        save daemon-journal.txt journalctl -b --no-pager -o short-monotonic -u "$(daemon_unit)"
    fi
    : >"$E2E_RESULTS/bystanders.txt"
    for unit in "$@"; do
        echo "$unit $(systemctl is-active "$unit")" >>"$E2E_RESULTS/bystanders.txt"
    done
    dmesg | grep -E 'out of memory|oom-kill|invoked oom-killer' >"$E2E_RESULTS/kernel-oom.txt" || true
}
