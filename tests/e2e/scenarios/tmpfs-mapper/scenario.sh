#!/bin/bash
# Size that a kill does not free: mapper.service creates a MAPPER_MIB (380) MiB file in /dev/shm
# (tmpfs), maps it shared and touches every page, then sleeps. Its RssShmem is 380 MiB, so its
# oom_score is the largest on the machine, but killing it frees nothing: the file stays in
# tmpfs. Beside it hog.service grows at HOG_RATE (20) MB/s until killed, machine-wide (no
# MemoryMax=; the shipped machine rule, MemAvailable TERM 10%, KILL 5%): it holds 270-300 MiB
# (less beside guardian's own memory) when MemAvailable reaches the TERM line, after about 15 s.
# The first victim must be the hog; the mapper must live. The file is removed at the end.
set -u
. "$E2E_LIB"
MAPPER_MIB=${MAPPER_MIB:-380}
HOG_RATE=${HOG_RATE:-20}
SHM_FILE=/dev/shm/e2e-mapper
start_daemon || exit 1
cat >/usr/local/bin/mapper <<'PY'
#!/usr/bin/python3
"""mapper PATH MIB: create PATH (tmpfs) of MIB MiB, map it shared, touch every page, sleep."""
import mmap
import os
import sys
import time

path, size = sys.argv[1], int(sys.argv[2]) << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.ftruncate(fd, size)
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
page = 4096
for offset in range(0, size, 1 << 20):
    m[offset : offset + (1 << 20) : page] = b"x" * ((1 << 20) // page)
print(f"mapped {size >> 20} MiB of {path}", flush=True)
while True:
    time.sleep(3600)
PY
chmod 0755 /usr/local/bin/mapper
systemd-run --unit=mapper -p MemorySwapMax=0 /usr/local/bin/mapper "$SHM_FILE" "$MAPPER_MIB"
wait_until 60 sh -c "[ \$(cat /sys/fs/cgroup/system.slice/mapper.service/memory.current 2>/dev/null || echo 0) -ge $((MAPPER_MIB * 900 * 1024)) ]" ||
    e2e_log "mapper.service did not reach $MAPPER_MIB MiB"
save mapper-before.txt sh -c "grep -E '^(VmRSS|RssAnon|RssFile|RssShmem):' /proc/\$(systemctl show -p MainPID --value mapper.service)/status;
    echo oom_score \$(cat /proc/\$(systemctl show -p MainPID --value mapper.service)/oom_score);
    ls -l $SHM_FILE; grep -E '^(MemAvailable|Shmem):' /proc/meminfo"
sleep 5
sample_memory "$E2E_RESULTS/memory.txt" "$E2E_RESULTS/oom-scores.txt" 15 \
    system.slice/mapper.service system.slice/hog.service &
sampler=$!
echo -1000 >"/proc/$sampler/oom_score_adj" # an instrument, not a candidate
bench_start
timeout 200 systemd-run --wait --unit=hog -p MemorySwapMax=0 $(hog_cmd "$HOG_RATE") >"$E2E_RESULTS/hog.txt" 2>&1
e2e_log "hog.service finished: exit status $?"
sleep 2 # the mapper's state after the hog, whoever ended it
kill "$sampler"
! is_guardian || save rank-after.json guardian rank --json --explain
save mapper-journal.txt journalctl -b --no-pager -o short-monotonic -u mapper.service
record_outcome mapper.service
systemctl stop mapper.service hog.service 2>/dev/null
rm -f "$SHM_FILE"
exit 0
