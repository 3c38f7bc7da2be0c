#!/bin/bash
# Smoke: guardian installed the README's way (scripts/install.sh, offline) runs as the shipped
# service with the shipped policy, answers `status` and `rank`, and stops a hog confined by
# MemoryMax= in system.slice before the kernel's memcg OOM killer does (the default policy's
# [[cgroup]] rule: system.slice/*.service, min_headroom term 10% kill 4%).
# Expectations: expect.py. This script records; it fails only when it cannot go on.
set -u
. "$E2E_LIB"
R=$E2E_RESULTS
# guardian learns of a new cgroup under its rules' globs through inotify at once (and rescans
# every 30 s besides); the hog's unit exists, idle, this long before it starts allocating.
ARM_WAIT_S=${ARM_WAIT_S:-3}

start_daemon || exit 1

# What only guardian has: its service, status, rank, and what the kernel accepts for PSI triggers.
if is_guardian; then
save is-active.txt systemctl is-active guardian.service
# install.sh's `systemctl restart` returns once READY=1 came; the started message is sent
# just before, so it is in the journal by now, but give journald a moment under TCG.
wait_until 20 journal_has MESSAGE_ID=8614d6fccaca40658d1eb8dcdae3a3e6 ||
    e2e_log "no 'started' message from guardian after 20 s"
save guardian-show.txt systemctl show guardian.service -p MainPID -p NRestarts -p ActiveState -p SubState -p StatusText
save status.json guardian status --json
save rank.json guardian rank --json

# The daemon as the unit runs it: capabilities, oom_score_adj, locked memory.
pid=$(systemctl show -p MainPID --value guardian.service)
{
    grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|VmRSS|VmLck|NoNewPrivs|Seccomp):' "/proc/$pid/status"
    echo "oom_score_adj: $(cat "/proc/$pid/oom_score_adj")"
} >"$R/guardian-proc.txt" 2>&1
# What the kernel accepts for PSI triggers: a window that is not a multiple of 2 s, system-wide and
# on a cgroup, and a second trigger on one fd; as root with every capability (this script), and
# as root without CAP_SYS_RESOURCE.
cat >/run/psi-probe.py <<'PY'
import os
import sys

for path in ("/proc/pressure/memory", "/sys/fs/cgroup/system.slice/memory.pressure"):
    for trigger in ("some 150000 1000000", "full 100000 2000000", "some 50000 500000"):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as e:
            print(f"{sys.argv[1]}: {path}: open: {os.strerror(e.errno)}")
            break
        try:
            os.write(fd, (trigger + "\0").encode())
            result = "accepted"
            try:
                os.write(fd, b"some 150000 2000000\0")
                result += "; a second trigger on the same fd: accepted"
            except OSError as e:
                result += f"; a second trigger on the same fd: {os.strerror(e.errno)}"
        except OSError as e:
            result = os.strerror(e.errno)
        finally:
            os.close(fd)
        print(f"{sys.argv[1]}: {path}: {trigger!r}: {result}")
PY
{
    echo "this script: $(grep CapEff /proc/self/status)"
    python3 /run/psi-probe.py "root, all capabilities"
    setpriv --inh-caps=-sys_resource --bounding-set=-sys_resource python3 /run/psi-probe.py "root without CAP_SYS_RESOURCE"
} >"$R/psi-triggers.txt" 2>&1

# Running install.sh again is the README's upgrade: it keeps the policy and must restart the
# running guardian (a running Python keeps the code it imported), not leave it as it was.
save pid-before-reinstall.txt systemctl show -p MainPID --value guardian.service
(cd /root/guardian && GUARDIAN_OFFLINE=1 bash scripts/install.sh) >"$R/reinstall.log" 2>&1
e2e_log "install.sh again: exit status $?"
save pid-after-reinstall.txt systemctl show -p MainPID --value guardian.service
fi

# --oomable: stress-ng does not start a new worker when this one is killed (by SIGKILL, from
# the kernel or from guardian), so the run is one episode: guardian or the kernel, who is first.
# CPUQuota: unthrottled, the hog fills its limit at ~150 MB/s under TCG and crossed the TERM
# band (then 10 MiB, now 20 MiB) in ~65 ms, a race that guardian lost about one run in four (its sample showed the
# KILL level, and the kernel's memcg OOM came first). A smoke test must not be a coin toss:
# at 25% of a CPU the band takes a few hundred ms. Racing the full speed is the job of the
# reaction-time scenarios and the benchmark.
HOG="stress-ng --vm 1 --vm-bytes 400M --vm-keep --oomable -t 30s"
HOG_CPU_QUOTA=${HOG_CPU_QUOTA:-25%}
e2e_log "hog.service (MemoryMax=200M CPUQuota=$HOG_CPU_QUOTA) waits on the fifo /run/hog-go, then runs: $HOG"
rm -f /run/hog-go
mkfifo /run/hog-go
systemd-run --wait --unit=hog -p MemoryMax=200M -p MemorySwapMax=0 -p CPUQuota="$HOG_CPU_QUOTA" \
    /bin/sh -c "read -r _ </run/hog-go; exec $HOG" >"$R/hog.txt" 2>&1 &
hog_pid=$!
wait_until 10 systemctl is-active -q hog.service || e2e_log "hog.service did not start"
sleep "$ARM_WAIT_S"
save hog-before.txt cat /sys/fs/cgroup/system.slice/hog.service/memory.max /sys/fs/cgroup/system.slice/hog.service/memory.events
# memory.current of the hog every 10 ms, to time guardian's kill against the TERM/KILL lines
python3 "$E2E_SCENARIO/sample_memory.py" /sys/fs/cgroup/system.slice/hog.service /run/hog-memory.txt 0.01 120 &
sampler=$!
sleep 2 # python's start under TCG
bench_start
e2e_log "go"
timeout 10 sh -c 'echo go >/run/hog-go' || e2e_log "nobody read /run/hog-go"
wait "$hog_pid"
e2e_log "hog.service finished: systemd-run exit status $?"
wait "$sampler"
cp /run/hog-memory.txt "$R/hog-memory.txt"

record_outcome
save hog-journal.txt journalctl -b --no-pager -o short-monotonic -u hog.service
e2e_log "guardian kills: $(journalctl -b -q --no-pager -o cat MESSAGE_ID=7291c848aa2b4d64ad479ace240749f7 | wc -l)," \
    "kernel memcg OOM kills: $(grep -c 'Memory cgroup out of memory' "$R/kernel-oom.txt")"
exit 0
