#!/bin/bash
# [metrics] during an episode. guardian serves its Prometheus endpoint on 127.0.0.1:9464 and
# writes node_exporter's text file, under the drop-in packaging/guardian-metrics.conf, installed
# as the README tells; a service walks towards MemoryMax=250M at 8 MB/s beside a bystander and
# guardian's cgroup rule stops it. The endpoint is scraped from inside the guest before, every
# half second during, and after the episode: the loop's counters move, the walker's cgroup has
# series of its own while it runs, and the kill is counted, by the endpoint and the text file.
set -u
. "$E2E_LIB"
start_daemon || exit 1
if is_guardian; then
    mkdir -p /var/lib/prometheus/node-exporter
    install -D -m 0644 /root/guardian/packaging/guardian-metrics.conf /etc/systemd/system/guardian.service.d/metrics.conf
    systemctl daemon-reload
    systemctl restart guardian.service
    wait_until 30 systemctl is-active -q guardian.service || e2e_log "guardian did not come back"
fi
cat >/tmp/metrics.toml <<'TOML'
[machine]
mem_available = { term = "10%", kill = "5%" }
[[cgroup]]
match = "system.slice/*.service"
min_headroom = { term = "10%", kill = "4%" }
[metrics]
listen = "127.0.0.1:9464"
textfile = "/var/lib/prometheus/node-exporter/guardian.prom"
textfile_interval_s = 1
TOML
use_policy /tmp/metrics.toml || exit 1
scrape() {
    python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode())'
}
start_bystander bystander 60
wait_until 10 scrape >/dev/null 2>&1 || e2e_log "the endpoint does not answer"
save metrics-before.txt scrape
bench_start
systemd-run --unit=walker -p MemoryMax=250M -p MemorySwapMax=0 $(hog_cmd 8)
mkdir -p "$E2E_RESULTS/metrics-during"
n=0
while systemctl is-active -q walker.service && [ "$n" -lt 180 ]; do
    scrape >"$E2E_RESULTS/metrics-during/$n.txt" 2>/dev/null
    n=$((n + 1))
    sleep 0.5
done
e2e_log "walker.service $(systemctl is-active walker.service) after $n scrapes"
# the kill is counted when it is over (the victim gone), and the text file is written every second
sleep 3
save metrics-after.txt scrape
save metrics-textfile.txt cat /var/lib/prometheus/node-exporter/guardian.prom
save metrics-textfile-mode.txt stat -c %a /var/lib/prometheus/node-exporter/guardian.prom
record_outcome bystander.service
