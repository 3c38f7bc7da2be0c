"""[metrics]: the policy section, the values a full look leaves on fake roots, the bounds on
label cardinality, and the exporter's endpoint and text file on this host's loopback.

The values are read back through prometheus_client's own registry (``get_sample_value``) and
its text format: what a scrape would see."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
from fixtures.builder import FakeRoot, set_meminfo_kb
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.clock import FakeClock
from support.sinks import MemorySink

from guardian.config import Listen, MetricsSettings, Policy, PolicyError, builtin_policy, parse_policy
from guardian.daemon import engine as engine_module
from guardian.daemon.engine import Engine
from guardian.daemon.exporter import MAX_SCRAPES, Export, listen_error, make_registry
from guardian.daemon.wakeups import Armed, Wake
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.metrics import LATENCY_BUCKETS_S, Metrics
from guardian.plugins import make_plugin_manager
from guardian.records import CgroupMemory
from guardian.report import Reporter
from guardian.sample import Listing, Sample
from guardian.selection import Selector

GiB_KB = 1024 * 1024
MiB = 1 << 20
SRC = "metrics.toml"


def metrics_of(text: str) -> MetricsSettings:
    return parse_policy(text, SRC).metrics


# --- the policy section --------------------------------------------------------------------------


def test_off_by_default_and_in_the_shipped_policy() -> None:
    assert not Policy().metrics.enabled
    assert not builtin_policy().metrics.enabled
    assert metrics_of("[metrics]\n") == MetricsSettings()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", Listen("127.0.0.1", 9464)),
        ("127.3.4.5:1", Listen("127.3.4.5", 1)),  # all of 127/8 is loopback
        ("localhost:9464", Listen("127.0.0.1", 9464)),
        ("[::1]:0", Listen("::1", 0)),  # 0: the kernel chooses
        ("[0:0:0:0:0:0:0:1]:65535", Listen("::1", 65535)),
    ],
)
def test_loopback_addresses(listen: str, expected: Listen) -> None:
    settings = metrics_of(f'[metrics]\nlisten = "{listen}"\n')
    assert settings.listen == expected and settings.enabled


def test_another_address_only_when_the_operator_says_so() -> None:
    with pytest.raises(PolicyError) as info:
        metrics_of('[metrics]\nlisten = "0.0.0.0:9464"\n')
    assert str(info.value).startswith(
        'metrics.toml: metrics.listen: "0.0.0.0:9464" is not a loopback address'
    )
    assert "allow_remote = true" in str(info.value)
    assert metrics_of('[metrics]\nlisten = "0.0.0.0:9464"\nallow_remote = true\n').listen == Listen(
        "0.0.0.0", 9464
    )
    assert metrics_of('[metrics]\nlisten = "[::]:9464"\nallow_remote = true\n').listen == Listen("::", 9464)


def test_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "guardian.prom"
    settings = metrics_of(f'[metrics]\ntextfile = "{path}"\ntextfile_interval_s = 5\nmax_cgroups = 3\n')
    assert settings == MetricsSettings(textfile=str(path), textfile_interval_s=5.0, max_cgroups=3)
    assert settings.enabled and settings.listen is None


def _broken(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "file"
    a_file.write_text("")
    return [
        ('listen = "127.0.0.1:65536"', 'metrics.listen: expected a port from 0 to 65535 after the colon, got "127.0.0.1:65536"'),
        ('listen = "127.0.0.1:99999999999999999999"', "expected a port from 0 to 65535 after the colon"),
        ('listen = "127.0.0.1:-1"', "expected a port from 0 to 65535 after the colon"),
        ('listen = "127.0.0.1:\u0669\u0664"', "expected a port from 0 to 65535 after the colon"),  # Arabic-Indic digits
        ('listen = "127.0.0.1:"', "expected a port from 0 to 65535 after the colon"),
        ('listen = "127.0.0.1"', 'metrics.listen: expected "ADDRESS:PORT" with an IP address'),
        ('listen = ":9464"', 'metrics.listen: expected "ADDRESS:PORT" with an IP address'),
        ('listen = "::1:9464"', "an IPv6 address goes in brackets"),
        ('listen = "example.com:9464"', '"example.com" is not an IP address (names are not resolved)'),
        ('listen = "[fe80::1%eth0]:9464"', "without a zone"),
        ('listen = "10.0.0.1:9464"', "is not a loopback address"),
        ("listen = 9464", "metrics.listen: expected a string, got a number"),
        ("allow_remote = true", "metrics.allow_remote: only means something with listen"),
        ('allow_remote = "yes"', 'metrics.allow_remote: expected true or false, got "yes"'),
        ('textfile = "guardian.prom"', 'metrics.textfile: "guardian.prom": expected an absolute path'),
        (f'textfile = "{tmp_path}/guardian.txt"', "expected a file name ending in .prom"),
        (f'textfile = "{tmp_path}/"', "expected a file name ending in .prom"),
        (f'textfile = "{tmp_path}/missing/guardian.prom"', "cannot use it: No such file or directory"),
        (f'textfile = "{a_file}/guardian.prom"', "not a directory"),
        ('textfile = "/tmp/a\\u0000b.prom"', "a path cannot hold a NUL character"),
        ("textfile = 1", "metrics.textfile: expected a string, got a number"),
        ("textfile_interval_s = 0.5", "metrics.textfile_interval_s: expected a number from 1 to 3600, got 0.5"),
        ("max_cgroups = -1", "metrics.max_cgroups: expected an integer from 0 to 10000, got -1"),
        ("max_cgroups = 1e3", "metrics.max_cgroups: expected an integer from 0 to 10000, got 1000"),
        ("port = 9464", "metrics.port: unknown key (known here: allow_remote, listen, max_cgroups, textfile, textfile_interval_s)"),
    ]  # fmt: skip


def test_bad_values_name_file_key_and_reason(tmp_path: Path) -> None:
    for line, reason in _broken(tmp_path):
        with pytest.raises(PolicyError) as info:
            parse_policy(f"[metrics]\n{line}\n", SRC)
        assert str(info.value).startswith(f"{SRC}: metrics."), line
        assert reason in str(info.value), (line, str(info.value))
    with pytest.raises(PolicyError, match="metrics: expected a table, got a string"):
        parse_policy('metrics = "on"\n', SRC)


# --- values after a full look on a fake root -------------------------------------------------------

POLICY = """
[plugins]
entry_points = false
[machine]
mem_available = { term = "10%", kill = "5%" }
psi = { kind = "full", stall_pct = 90, duration_s = 600 }
reclaim_window_s = false
[[cgroup]]
match = "system.slice/*.service"
min_headroom = { term = "10%", kill = "4%" }
psi = { kind = "some", stall_pct = 90, duration_s = 600 }
"""


def build_root(
    tmp_path: Path, services: int = 2, available_pct: float = 50, swap_free_pct: float = 50
) -> Path:
    root = FakeRoot(tmp_path / "root")
    root.mounts("unified")
    root.meminfo(
        total_kb=16 * GiB_KB,
        available_kb=int(16 * GiB_KB * available_pct / 100),
        swap_total_kb=GiB_KB,
        swap_free_kb=int(GiB_KB * swap_free_pct / 100),
    )
    root.psi("memory", some=(12.5, 3.0, 1.0, 2_000_000), full=(4.25, 1.0, 0.5, 1_000_000))
    root.vmstat(pgscan_kswapd=100)
    root.process(1, "systemd", ppid=0, rss_anon_kb=8192, cgroup_v2="/init.scope")
    root.cgroup_v2("/init.scope")
    for i in range(services):
        pid = 100 + i
        root.process(
            pid, f"svc{i}", ppid=1, rss_anon_kb=100 * 1024, cgroup_v2=f"/system.slice/svc{i}.service"
        )
        root.cgroup_v2(
            f"/system.slice/svc{i}.service",
            max=1024 * MiB,
            pressure=((1.5, 0.0, 0.0, 500_000), (0.5, 0.0, 0.0, 100_000)),
        )
    root.finish()
    return tmp_path / "root"


def engine_for(root: Path, text: str = POLICY, max_cgroups: int = 64) -> tuple[Engine, FakeClock, MemorySink]:
    policy = parse_policy(text, "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    clock, sink = FakeClock(), MemorySink()
    engine = Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), clock)
    engine.metrics.configure(True, max_cgroups)
    return engine, clock, sink


def value(engine: Engine, name: str, **labels: str) -> float | None:
    registry = make_registry(engine.metrics, engine.clock.monotonic_us)
    return registry.get_sample_value(name, labels)


def test_the_machine_and_the_watched_groups_after_full_looks(tmp_path: Path) -> None:
    root = build_root(tmp_path)
    engine, clock, _ = engine_for(root)
    engine.tick()
    clock.advance(1)
    # the kernel's totals moved by 0.25 s of some and 0.1 s of full stall in that second
    (root / "proc" / "pressure" / "memory").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=2250000\nfull avg10=4.25 avg60=1.00 avg300=0.50 total=1100000\n"
    )
    engine.tick()
    assert value(engine, "guardian_memory_total_bytes") == 16 * GiB_KB * 1024
    assert value(engine, "guardian_memory_available_bytes") == 8 * GiB_KB * 1024
    assert value(engine, "guardian_swap_total_bytes") == GiB_KB * 1024
    assert value(engine, "guardian_swap_free_bytes") == GiB_KB * 512
    assert value(engine, "guardian_memory_read_age_seconds") == 0
    assert value(engine, "guardian_memory_stall_avg10_ratio", kind="some") == pytest.approx(0.125)
    assert value(engine, "guardian_memory_stall_avg10_ratio", kind="full") == pytest.approx(0.0425)
    assert value(engine, "guardian_memory_stall_ratio", kind="some") == pytest.approx(0.25)
    assert value(engine, "guardian_memory_stall_ratio", kind="full") == pytest.approx(0.10)
    assert value(engine, "guardian_memory_stall_seconds_total", kind="full") == pytest.approx(1.1)
    assert value(engine, "guardian_watched_cgroups") == 2
    group = "/system.slice/svc0.service"
    current = value(engine, "guardian_cgroup_memory_current_bytes", cgroup=group)
    assert current is not None and current >= 100 * MiB
    assert value(engine, "guardian_cgroup_memory_max_bytes", cgroup=group) == 1024 * MiB
    assert value(engine, "guardian_cgroup_memory_headroom_bytes", cgroup=group) == 1024 * MiB - current
    assert value(
        engine, "guardian_cgroup_memory_stall_avg10_ratio", cgroup=group, kind="some"
    ) == pytest.approx(0.015)
    clock.advance(3)  # the age of a reading is counted at the scrape
    assert value(engine, "guardian_memory_read_age_seconds") == 3
    assert value(engine, "guardian_memory_stall_read_age_seconds") == 3
    assert value(engine, "guardian_triggers_total", rule="machine", condition="memory", level="TERM") is None


def test_a_full_look_reads_nothing_more_for_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same looks with metrics on and off read the same files, in the same order."""
    made: list[Sample] = []

    class Recorded(Sample):
        def __init__(self, host: Host, time_us: int, listing: Optional[Listing] = None) -> None:
            super().__init__(host, time_us, listing)
            made.append(self)

    monkeypatch.setattr(engine_module, "Sample", Recorded)
    reads = []
    for on in (False, True):
        made.clear()
        engine, clock, _ = engine_for(build_root(tmp_path / str(on), available_pct=8, swap_free_pct=2))
        engine.metrics.configure(on, 64)
        for _ in range(3):
            engine.tick()
            clock.advance(0.5)
        reads.append([list(s.reads) for s in made])
        assert (value(engine, "guardian_memory_total_bytes") is not None) is on
    assert reads[0] == reads[1] and reads[0]


def test_triggers_kills_latency_and_wakeups_are_counted(tmp_path: Path) -> None:
    root = build_root(tmp_path, available_pct=4, swap_free_pct=2)
    engine, clock, _ = engine_for(root)
    engine.tick()
    clock.advance(0.2)
    engine.tick()  # still crossed, cooling down: crossed once
    term = {"rule": "machine", "condition": "memory"}
    assert value(engine, "guardian_triggers_total", level="KILL", **term) == 1
    # under a fake root the killer only decides: a dry run, counted as such
    assert value(engine, "guardian_kills_total", action="kill", outcome="dry-run", rule="machine") == 1
    assert value(engine, "guardian_decision_seconds_count") == 1
    assert value(engine, "guardian_decision_seconds_bucket", le="+Inf") == 1
    set_meminfo_kb(root, "MemAvailable", 16 * GiB_KB // 2)
    clock.advance(0.5)
    engine.tick()  # recovered
    set_meminfo_kb(root, "MemAvailable", int(16 * GiB_KB * 0.08))
    clock.advance(20)
    engine.tick()  # a new episode, at the TERM level this time
    assert value(engine, "guardian_triggers_total", level="TERM", **term) == 1
    assert value(engine, "guardian_triggers_total", level="KILL", **term) == 1
    assert value(engine, "guardian_kills_total", action="term", outcome="dry-run", rule="machine") == 1
    for wake in (Wake(kernel=True), Wake(signal=True), Wake(), Wake()):
        engine.woke(wake, clock.monotonic_us())
    assert value(engine, "guardian_wakeups_total", source="kernel") == 1
    assert value(engine, "guardian_wakeups_total", source="signal") == 1
    assert value(engine, "guardian_wakeups_total", source="timer") == 2
    engine.metrics.kernel_oom_kill("CONSTRAINT_MEMCG", covered=True)
    engine.metrics.kernel_oom_kill(None, covered=False)
    engine.metrics.kernel_oom_kill("CONSTRAINT_\x1b[31m", covered=False)
    assert value(engine, "guardian_kernel_oom_kills_total", constraint="memcg", covered="true") == 1
    assert value(engine, "guardian_kernel_oom_kills_total", constraint="unknown", covered="false") == 1
    assert value(engine, "guardian_kernel_oom_kills_total", constraint="other", covered="false") == 1


def test_the_idle_fast_path_updates_what_it_read(tmp_path: Path) -> None:
    root = build_root(tmp_path, services=1)
    text = POLICY.replace('psi = { kind = "full", stall_pct = 90, duration_s = 600 }\n', "")
    text = text.replace('psi = { kind = "some", stall_pct = 90, duration_s = 600 }\n', "")
    engine, clock, _ = engine_for(root, text)
    engine.tick()
    engine.use_wakeups(engine.wake_plan(Sample(engine.host, clock.monotonic_us())), Armed())
    clock.advance(1)
    engine.tick()
    assert engine.calm is not None
    set_meminfo_kb(root, "MemAvailable", 6 * GiB_KB)
    clock.advance(1)
    assert engine.quick(clock.monotonic_us()) is not None  # the fast path decided
    assert value(engine, "guardian_memory_available_bytes") == 6 * GiB_KB * 1024
    assert value(engine, "guardian_memory_read_age_seconds") == 0


# --- cardinality -----------------------------------------------------------------------------------


def test_cgroup_series_are_bounded_and_follow_the_watched_set(tmp_path: Path) -> None:
    root = build_root(tmp_path, services=12)
    engine, clock, _ = engine_for(root, max_cgroups=5)
    engine.tick()
    assert value(engine, "guardian_watched_cgroups") == 12
    registry = make_registry(engine.metrics, clock.monotonic_us)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    shown = {s.labels["cgroup"] for s in families["guardian_cgroup_memory_current_bytes"].samples}
    assert shown == {
        f"/system.slice/svc{i}.service" for i in (0, 1, 10, 11, 2)
    }  # the first five in path order
    # a group that goes is no longer watched, and its series goes with it
    gone = root / "sys" / "fs" / "cgroup" / "system.slice" / "svc0.service"
    for child in gone.iterdir():
        child.unlink()
    gone.rmdir()
    clock.advance(60)
    engine.tick()
    assert value(engine, "guardian_watched_cgroups") == 11
    assert value(engine, "guardian_cgroup_memory_current_bytes", cgroup="/system.slice/svc0.service") is None
    engine.metrics.configure(True, 0)
    clock.advance(1)
    engine.tick()
    assert value(engine, "guardian_cgroup_memory_max_bytes", cgroup="/system.slice/svc1.service") is None


def test_hostile_names_are_escaped_and_never_break_a_scrape() -> None:
    metrics = Metrics()
    metrics.configure(True, 64)
    hostile = '/system.slice/a"b\nc\\d\udcff} 1\n.service'  # not UTF-8, a newline, a quote, a brace
    memory = CgroupMemory(source="v2", current_bytes=5, max_bytes=10)
    metrics.full_look(1, None, (None, None), [hostile], {hostile: (memory, None, None)}, 0)
    metrics.plugin_failure("file:/etc/x\udcfe.py", "evil\nscorer.score")
    text = generate_latest(make_registry(metrics, lambda: 1)).decode("utf-8")
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "guardian_cgroup_memory_headroom_bytes"
    ]
    ((labels, number),) = [(s.labels, s.value) for s in family.samples]
    assert number == 5 and "\n" not in labels["cgroup"] and "\udcff" not in labels["cgroup"]
    assert 'guardian_plugin_failures_total{hook="evil\\\\nscorer.score"' in text


def test_latency_buckets_are_cumulative() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 7.0, 60.0, -1.0):
        metrics.latency(seconds)
    registry = make_registry(metrics, lambda: 0)
    assert (
        registry.get_sample_value("guardian_decision_seconds_bucket", {"le": "0.001"}) == 2
    )  # -1 counts as 0
    assert registry.get_sample_value("guardian_decision_seconds_bucket", {"le": "0.005"}) == 4
    assert registry.get_sample_value("guardian_decision_seconds_bucket", {"le": "10.0"}) == 5
    assert registry.get_sample_value("guardian_decision_seconds_bucket", {"le": "+Inf"}) == 6
    assert registry.get_sample_value("guardian_decision_seconds_count") == 6
    assert len(LATENCY_BUCKETS_S) == 13


# --- the endpoint and the text file ------------------------------------------------------------------


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def counter(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_the_endpoint_follows_the_policy(tmp_path: Path) -> None:
    metrics, sink = Metrics(), MemorySink()
    export = Export(metrics, Reporter(sink, metrics), FakeClock().monotonic_us)
    first = MetricsSettings(listen=Listen("127.0.0.1", 0))
    export.apply(export.prepare(first))
    assert metrics.on and export.endpoint is not None
    url = export.endpoint.url
    metrics.look(full=True)
    text = scrape(url)
    assert counter(text, "guardian_looks_total", kind="full") == 1
    assert counter(text, "process_resident_memory_bytes") is not None
    assert any(e.get("GUARDIAN_METRICS_URL") == url for e in sink.events)
    # the same address again: the same server goes on
    endpoint = export.endpoint
    export.apply(export.prepare(MetricsSettings(listen=Listen("127.0.0.1", endpoint.port), max_cgroups=3)))
    assert export.endpoint is endpoint and metrics.max_cgroups == 3
    # a taken address cannot be prepared, and the running endpoint stays
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(OSError):
            export.prepare(MetricsSettings(listen=Listen("127.0.0.1", holder.getsockname()[1])))
    assert export.endpoint is endpoint
    # moved: the new one serves, the old one closes
    stopping = export.apply(export.prepare(first))
    assert export.endpoint is not endpoint
    for thread in stopping:
        thread.join(5)
    with pytest.raises(OSError):
        scrape(url)
    assert counter(scrape(export.endpoint.url), "guardian_looks_total", kind="full") == 1
    # off: nothing listens, and the loop stops copying its readings
    new_url = export.endpoint.url
    for thread in export.apply(export.prepare(MetricsSettings())):
        thread.join(5)
    assert not serving(export)
    with pytest.raises(OSError):
        scrape(new_url)


def serving(export: Export) -> bool:
    """An endpoint serves and the loop copies its readings (a function: the test's asserts
    before a change must not narrow what it checks after)."""
    return export.endpoint is not None or export.metrics.on


def test_a_flood_of_idle_connections_is_bounded() -> None:
    metrics = Metrics()
    export = Export(metrics, Reporter(MemorySink(), metrics), lambda: 0)
    export.apply(export.prepare(MetricsSettings(listen=Listen("127.0.0.1", 0))))
    assert export.endpoint is not None
    idle = [socket.create_connection(("127.0.0.1", export.endpoint.port)) for _ in range(MAX_SCRAPES)]
    try:
        # every slot is taken by a client that sends nothing: the next one is closed at once
        extra = socket.create_connection(("127.0.0.1", export.endpoint.port))
        extra.settimeout(5)
        extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert extra.recv(100) == b""
        extra.close()
    finally:
        for sock in idle:
            sock.close()
        for thread in export.close():
            thread.join(5)


def test_the_text_file_is_written_and_removed(tmp_path: Path) -> None:
    metrics, sink = Metrics(), MemorySink()
    export = Export(metrics, Reporter(sink, metrics), lambda: 0)
    path = tmp_path / "guardian.prom"
    metrics.decision("kill", "killed", "cgroup[0]")
    export.apply(export.prepare(MetricsSettings(textfile=str(path), textfile_interval_s=1)))
    assert export.textfile is not None
    deadline = 50
    while not path.exists() and deadline:
        export.textfile._stop.wait(0.1)
        deadline -= 1
    text = path.read_text()
    assert counter(text, "guardian_kills_total", action="kill", outcome="killed", rule="cgroup[0]") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["guardian.prom"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter's user reads it, whatever the umask
    for thread in export.close():
        thread.join(5)
    assert not path.exists()


def test_the_shipped_units_refusals_are_explained() -> None:
    """Under the shipped unit an endpoint fails with EAFNOSUPPORT and a text file outside
    ReadWritePaths= with EROFS: the message says which drop-in fixes it."""
    hint = listen_error(MetricsSettings(listen=Listen("127.0.0.1", 9464)), OSError(errno.EAFNOSUPPORT, "x"))
    assert hint.startswith("cannot listen on 127.0.0.1:9464: Address family not supported by protocol (")
    assert "packaging/guardian-metrics.conf" in hint
    drop_in = (Path(__file__).parent.parent / "packaging" / "guardian-metrics.conf").read_text()
    assert "RestrictAddressFamilies=AF_INET AF_INET6\n" in drop_in and "ReadWritePaths=-/" in drop_in


def test_a_text_file_that_cannot_be_written_is_reported_once(tmp_path: Path) -> None:
    metrics, sink = Metrics(), MemorySink()
    export = Export(metrics, Reporter(sink, metrics), lambda: 0)
    gone = tmp_path / "gone"
    gone.mkdir()
    settings = MetricsSettings(textfile=str(gone / "guardian.prom"), textfile_interval_s=1)
    gone.rmdir()  # valid when the policy was read, gone since
    export.apply(export.prepare(settings))
    assert export.textfile is not None
    export.textfile._write()
    export.textfile._write()
    for thread in export.close():
        thread.join(5)
    warnings = [e for e in sink.events if "cannot write" in e["MESSAGE"]]
    assert len(warnings) == 1 and "No such file or directory" in warnings[0]["MESSAGE"]
