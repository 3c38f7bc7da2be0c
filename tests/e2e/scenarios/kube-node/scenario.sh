#!/bin/bash
# A Kubernetes-like node without Kubernetes: pod slices and container units laid out as the
# kubelet's systemd cgroup driver does, with the oom_score_adj values the kubelet would give
# (Guaranteed -997, BestEffort 1000, Burstable 1000 - 1000*request/capacity, sandboxes -998).
# A Guaranteed pod is the largest (300 MiB, idle); a BestEffort pod is idle (80 MiB); a
# Burstable pod (request 64 MiB) grows. The kubelet's order (over-request pods first, then by
# usage above request) and common sense agree: the Burstable grower dies, the Guaranteed pod
# never does.
set -u
. "$E2E_LIB"
start_daemon || exit 1
if is_guardian; then
    cp /etc/guardian.toml /tmp/policy.toml
    sed -i 's/^cause = 1.0$/kubelet_qos = 1.0\ncause = 1.0/' /tmp/policy.toml
    grep -q '^kubelet_qos = 1.0$' /tmp/policy.toml || { e2e_log "the policy names no kubelet_qos"; exit 1; }
    use_policy /tmp/policy.toml || exit 1
fi
capacity=$(awk '/^MemTotal:/ {print $2 * 1024}' /proc/meminfo)
burstable_adj=$(awk -v c="$capacity" 'BEGIN {a = 1000 - int(1000 * 64 * 1048576 / c); if (a < 3) a = 3; if (a > 999) a = 999; print a}')
e2e_log "capacity $capacity bytes: a Burstable container with a 64 MiB request gets oom_score_adj $burstable_adj"
container() {  # container SLICE UNIT ADJ COMMAND...: one container of a pod
    local slice=$1 unit=$2 adj=$3
    shift 3
    systemd-run --unit="$unit" --slice="$slice" -p MemorySwapMax=0 choom -n "$adj" -- "$@"
}
G=kubepods-pod0f0e5b1a_1111_4c4c_8d8d_000000000001.slice
B=kubepods-burstable-pod0f0e5b1a_2222_4c4c_8d8d_000000000002.slice
E=kubepods-besteffort-pod0f0e5b1a_3333_4c4c_8d8d_000000000003.slice
container $G cri-containerd-sandbox-g -998 sleep infinity
container $B cri-containerd-sandbox-b -998 sleep infinity
container $E cri-containerd-sandbox-e -998 sleep infinity
container $G cri-containerd-postgres -997 $(hog_cmd 50 $((300 << 20)))
container $E cri-containerd-batch 1000 $(hog_cmd 50 $((80 << 20)))
sleep 12  # the idle pods settle at their sizes
! is_guardian || save pods-before.json guardian rank --json --explain
bench_start
timeout 200 systemd-run --wait --unit=cri-containerd-api --slice=$B -p MemorySwapMax=0 \
    choom -n "$burstable_adj" -- $(hog_cmd 15) >"$E2E_RESULTS/api.txt" 2>&1
e2e_log "the Burstable grower finished: exit status $?"
record_outcome cri-containerd-postgres.service cri-containerd-batch.service
