#!/bin/bash
# A desktop session, machine-wide (no MemoryMax=; the shipped machine rule, MemAvailable TERM
# 10%, KILL 5%): uid 1000's apps as units in user-1000.slice. The editor
# (/user.slice/user-1000.slice/editor.service, comm "editor") takes EDITOR_MIB (350) MiB and
# then sits still for 10 s; the browser (browser.service: a small main process "browser" and
# RENDERERS (4) children "renderer") keeps growing, each renderer at RENDERER_RATE (5) MB/s. At
# the TERM line, after about 15 s of growth, each renderer holds about 70 MiB, the browser about
# 285 MiB: the editor is the largest single process (the kernel's, earlyoom's and nohang's
# choice), but the browser made the shortage. The first victim must be a renderer; the editor
# must live. The run ends when the browser is gone, or after 120 s.
set -u
. "$E2E_LIB"
EDITOR_MIB=${EDITOR_MIB:-350}
RENDERERS=${RENDERERS:-4}
RENDERER_RATE=${RENDERER_RATE:-5}
SLICE=user-1000.slice
CG=user.slice/$SLICE
start_daemon || exit 1
getent passwd 1000 >/dev/null || useradd -u 1000 -M -d /nonexistent -s /usr/sbin/nologin desk ||
    e2e_log "useradd failed: the apps run as uid 1000 without a passwd entry"

# hog_script PATH RATE [STOP_AT_BYTES]: hog_cmd's program as a file of its own (uid 1000 cannot
# read /root/guardian), so that its comm is PATH's name
hog_script() {
    {
        echo '#!/usr/bin/python3'
        python3 -c "import sys; sys.path[:0] = ['/root/guardian', '/root/guardian/tests']
from support.arena import hog_program
print(hog_program($2, stop_at_bytes=${3:-0}))"
    } >"$1" && chmod 0755 "$1"
}
hog_script /usr/local/bin/editor 200 $((EDITOR_MIB << 20))
hog_script /usr/local/bin/renderer "$RENDERER_RATE"
printf '%s\n' '#!/bin/bash' '# a browser: a small main process and its renderers' \
    "for _ in \$(seq $RENDERERS); do /usr/local/bin/renderer & done" 'wait' >/usr/local/bin/browser
chmod 0755 /usr/local/bin/browser

app() { # app NAME: uid 1000's app NAME as a unit in its user slice
    systemd-run --unit="$1" --slice="$SLICE" --uid=1000 -p MemorySwapMax=0 "/usr/local/bin/$1"
}
app editor
wait_until 60 sh -c "[ \$(cat /sys/fs/cgroup/$CG/editor.service/memory.current 2>/dev/null || echo 0) -ge $((EDITOR_MIB * 900 * 1024)) ]" ||
    e2e_log "the editor did not reach $EDITOR_MIB MiB"
sleep 10 # the editor holds its memory, steady, long enough for any growth measure to see it flat
sample_memory "$E2E_RESULTS/memory.txt" "$E2E_RESULTS/oom-scores.txt" 15 "$CG/editor.service" "$CG/browser.service" &
sampler=$!
echo -1000 >"/proc/$sampler/oom_score_adj" # an instrument, not a candidate
bench_start
app browser
wait_until 10 systemctl is-active -q browser.service || e2e_log "browser.service did not start"
if wait_until 120 sh -c '! systemctl is-active -q browser.service'; then
    e2e_log "browser.service is gone"
else
    e2e_log "browser.service still runs after 120 s"
fi
kill "$sampler"
! is_guardian || save rank-after.json guardian rank --json --explain
save browser-journal.txt journalctl -b --no-pager -o short-monotonic -u browser.service
save user-slice.txt systemd-cgls --no-pager /user.slice
record_outcome editor.service
systemctl stop browser.service editor.service 2>/dev/null
exit 0
