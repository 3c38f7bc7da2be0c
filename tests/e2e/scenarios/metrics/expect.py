"""[metrics] during an episode: scraped from inside the guest, the counters move, the walker's
cgroup has series while it runs, and the kill is counted by the endpoint and the text file."""

from __future__ import annotations

from typing import Any

from e2e import checks
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 420

VICTIM = ("/system.slice/walker.service",)
SPARED = ("/system.slice/bystander.service",)
WALKER = "/system.slice/walker.service"

Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def kills_counted(samples: Samples) -> float:
    return sum(
        total(samples, "guardian_kills_total", rule="cgroup[0]", outcome=o) for o in ("terminated", "killed")
    )


def check(result: Any) -> list[str]:
    failures = checks.ran(result)
    if failures:
        return failures
    try:
        before = parse(result.text("metrics-before.txt"))
        after = parse(result.text("metrics-after.txt"))
        textfile = parse(result.text("metrics-textfile.txt"))
        during = [parse(p.read_text()) for p in sorted((result.results_dir / "metrics-during").glob("*.txt"))]
    except ValueError as exc:
        return [f"a scrape is not Prometheus text: {exc}"]
    if not before or not after or not during:
        return [f"scrapes missing: before {len(before)}, during {len(during)}, after {len(after)} samples"]
    for name in ("guardian_looks_total", "guardian_wakeups_total"):
        if not total(after, name) > total(before, name) > 0:
            failures.append(f"{name} did not move: {total(before, name)} -> {total(after, name)}")
    walker_seen = [
        s for s in during if total(s, "guardian_cgroup_memory_max_bytes", cgroup=WALKER) == 250 << 20
    ]
    if not walker_seen:
        failures.append("no scrape during the episode had the walker's cgroup with its 250M limit")
    kills = [e for e in checks.kills(result, WALKER) if e.get("GUARDIAN_OUTCOME") in ("terminated", "killed")]
    if not kills:
        failures.append("guardian did not kill the walker")
    if kills_counted(before) != 0 or kills_counted(after) != len(kills):
        failures.append(
            f"kills counted {kills_counted(before)} -> {kills_counted(after)}, journal has {len(kills)}"
        )
    if kills_counted(textfile) != len(kills):
        failures.append(f"the text file counts {kills_counted(textfile)} kills, the journal {len(kills)}")
    if result.text("metrics-textfile-mode.txt").strip() != "644":
        failures.append(
            f"the text file's mode is {result.text('metrics-textfile-mode.txt').strip()}, not 644"
        )
    if total(after, "guardian_triggers_total", rule="cgroup[0]", condition="headroom") < 1:
        failures.append("no headroom trigger counted")
    if total(after, "guardian_decision_seconds_count") < len(kills):
        failures.append(f"decision latency observed {total(after, 'guardian_decision_seconds_count')} times")
    if total(after, "process_resident_memory_bytes") <= 0 or total(after, "process_cpu_seconds_total") <= 0:
        failures.append("the process collector's RSS and CPU are missing")
    return (
        failures
        + checks.no_kernel_oom(result)
        + checks.bystanders_alive(result)
        + checks.guardian_survived(result)
    )
