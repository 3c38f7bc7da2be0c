#!/bin/bash
# Swap on zram, one CPU: a 1 GiB guest with one vCPU and 512 MiB of swap on zram (the kernel's
# default compressor), set up before the daemon starts so that every daemon sees it from its
# start. A bystander service takes 120 MiB (kept out of swap) and a hog grows at 30 MB/s in its
# own unit, which may swap (no MemorySwapMax=). No MemoryMax= anywhere: the shipped machine rule
# decides, and it wants both low, MemAvailable and SwapFree at or below 10 % (TERM). The hog's
# pages compress well (50:1), so swap adds nearly its whole size to the room: MemAvailable reaches
# the line after about 20 s and stays at or below it for about 20 s more while the kernel moves
# the hog into swap, and the condition holds only once swap is nearly full too. The hog must be
# the one to go, the bystander must live, the kernel must not act. Without a daemon the kernel's
# OOM killer acts once swap is full, after about (512 MiB + RAM) / 30 MB/s.
set -u
. "$E2E_LIB"

swap_on_zram 512 || exit 1
start_daemon || exit 1
start_bystander bystander 120
sample_memory "$E2E_RESULTS/memory.txt" "$E2E_RESULTS/oom-scores.txt" 10 \
    system.slice/hog.service system.slice/bystander.service &
sampler=$!
bench_start
e2e_log "hog: 30 MB/s, may swap"
timeout 360 systemd-run --wait --unit=hog $(hog_cmd 30) >"$E2E_RESULTS/hog.txt" 2>&1
e2e_log "hog.service finished: exit status $?"
kill "$sampler"
save swap-end.txt sh -c 'swapon --show; zramctl'
record_outcome bystander.service
