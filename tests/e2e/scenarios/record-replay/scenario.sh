#!/bin/bash
# Record and replay: `guardian record` runs beside the daemon while a service of two processes,
# a steady one of 60 MiB and a walker at 10 MB/s, walks past the TERM line of its MemoryMax=
# (250M) under the shipped policy (system.slice/*.service, headroom TERM below 10%, KILL below
# 4%). The trace and the policy come back with the results; expect.py replays the trace on the
# host through that policy and requires the victim the daemon chose live (the same pid), and the
# fast suite replays a committed copy of one such trace (tests/fixtures/traces/).
# The walker ignores SIGTERM and stops at 158 MiB: with the steady one and the interpreters the
# group holds about 232 of 250 MiB (a walker of 166 MiB took it to 240.4), past TERM at 225 and
# short of KILL at 240, so the daemon's SIGTERM leaves the group past the line for grace_s (5 s)
# before its SIGKILL: a recorder that samples every 0.25 s (slower under TCG) sees it hold. A victim that died within milliseconds of the
# line, as a plain walker does, would leave no frame past it to replay (docs/trace.md).
set -u
. "$E2E_LIB"
start_daemon || exit 1
start_bystander bystander 60
if is_guardian; then
    cp /etc/guardian.toml "$E2E_RESULTS/policy.toml"
    # in e2e.slice beside the instruments, never a candidate (OOMScoreAdjust=-1000); it stops at
    # SIGINT below, or after --duration
    systemd-run --unit=e2e-record --slice=e2e.slice -p OOMScoreAdjust=-1000 \
        guardian record --out "$E2E_RESULTS/episode.trace" --interval 0.25 --duration 150 \
        --policy /etc/guardian.toml
    sleep 2
fi
bench_start
steady=$(hog_cmd 200 $((60 << 20)))
walker=$(hog_cmd 10 $((158 << 20)) ignore-term)
e2e_log "walker.service: '$steady' in the background, then '$walker' as the main process"
timeout 120 systemd-run --wait --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 \
    /bin/sh -c "$steady & sleep 3; exec $walker" >"$E2E_RESULTS/walker.txt" 2>&1
e2e_log "walker.service finished: exit status $?"
if is_guardian; then
    sleep 2 # a few frames after the kill: the replay sees the memory come back
    systemctl kill -s INT e2e-record.service
    wait_until 30 sh -c '! systemctl is-active -q e2e-record.service' ||
        e2e_log "guardian record did not stop within 30 s of SIGINT"
    save record.txt journalctl -b --no-pager -o cat -u e2e-record.service
fi
record_outcome bystander.service
