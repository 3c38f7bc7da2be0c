#!/bin/bash
# The cause, not the largest: db.service takes DB_MIB (360) MiB and then sits still for 10 s;
# beside it workers.service, a shell with WORKERS (6) hogs that each grow at WORKER_RATE (4) MB/s
# and never stop. No MemoryMax= anywhere: the shipped machine rule (MemAvailable TERM 10%, KILL
# 5%) decides. When MemAvailable reaches the TERM line, after about 12 s of growth, each worker
# holds about 47 MiB and all six together about 280 MiB: db is by far the largest single process
# (the kernel's, earlyoom's and nohang's choice), but killing it only postpones the shortage the
# workers make. Every kill must be in workers.service; db.service must live. The run ends when
# the workers are all gone, or after 120 s.
set -u
. "$E2E_LIB"
DB_MIB=${DB_MIB:-360}
WORKERS=${WORKERS:-6}
WORKER_RATE=${WORKER_RATE:-4}
start_daemon || exit 1
start_bystander db "$DB_MIB"
sleep 10 # db holds its memory, steady, long enough for any growth measure to see it flat
sample_memory "$E2E_RESULTS/memory.txt" "$E2E_RESULTS/oom-scores.txt" 15 \
    system.slice/db.service system.slice/workers.service &
sampler=$!
echo -1000 >"/proc/$sampler/oom_score_adj" # an instrument, not a candidate
workers=""
for _ in $(seq "$WORKERS"); do
    workers="$workers $(hog_cmd "$WORKER_RATE") &"
done
bench_start
systemd-run --unit=workers -p MemorySwapMax=0 /bin/bash -c "$workers wait"
wait_until 10 systemctl is-active -q workers.service || e2e_log "workers.service did not start"
if wait_until 120 sh -c '! systemctl is-active -q workers.service'; then
    e2e_log "workers.service is gone"
else
    e2e_log "workers.service still runs after 120 s"
fi
kill "$sampler"
! is_guardian || save rank-after.json guardian rank --json --explain
save workers-journal.txt journalctl -b --no-pager -o short-monotonic -u workers.service
record_outcome db.service
systemctl stop workers.service db.service 2>/dev/null
exit 0
