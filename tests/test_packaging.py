"""The shipped systemd unit and journald catalog: well-formed, complete, and accepted by systemd's tools.

``systemd-analyze verify`` and ``journalctl --update-catalog`` work offline (no systemd as pid 1
needed); the tests that call them are skipped where the tools are missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "packaging" / "guardian.service"
CATALOG = ROOT / "packaging" / "guardian.catalog"

# The message ids guardian sends (guardian/report.py), each with a catalog entry.
REQUIRED_IDS = {
    "7291c848aa2b4d64ad479ace240749f7": "kill",
    "4f7a8db32a734063a9e9ae210b8d3af0": "dry run",
    "aeb9eaa4743442df8537c476de4dc782": "not carried out",
    "2a84573cbba6498daaab9afdcc7d2dae": "policy loaded",
    "2f664e5f69b9416d8cda340495d0661a": "policy rejected",
    "8614d6fccaca40658d1eb8dcdae3a3e6": "started / stopped",
    "a061dd4cbf59429ba9362090877862e4": "kernel OOM kill seen",
}

ID_LINE = re.compile(r"^-- (\S+)(?: (\S+))?\s*$")  # "-- <id> [language]"


# --- catalog ------------------------------------------------------------------------------------


def parse_catalog(text: str) -> list[tuple[str, dict[str, str], str]]:
    """(id, headers, body) per entry, read the way systemd's catalog.c reads the file: lines
    starting with '#' are comments, '-- id' starts an entry, headers run to the first blank line."""
    entries: list[tuple[str, dict[str, str], list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = ID_LINE.match(line)
        if m:
            entries.append((m.group(1), {}, [], []))
            continue
        if not entries:
            assert line == "", f"text before the first entry: {line!r}"
            continue
        _, headers, header_lines, body = entries[-1]
        if body or (header_lines and line == ""):
            body.append(line)
        elif line:
            key, sep, value = line.partition(":")
            assert sep, f"header line without a colon: {line!r}"
            headers[key.strip()] = value.strip()
            header_lines.append(line)
    return [(i, h, "\n".join(b).strip()) for i, h, _, b in entries]


def test_catalog_entries_are_well_formed() -> None:
    entries = parse_catalog(CATALOG.read_text())
    ids = [i for i, _, _ in entries]
    assert set(REQUIRED_IDS) <= set(ids)  # the parser found the entries it then checks
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for message_id, headers, body in entries:
        assert re.fullmatch(r"[0-9a-f]{32}", message_id), f"{message_id}: not 32 lowercase hex digits"
        assert headers.get("Subject"), f"{message_id}: no Subject"
        assert headers.get("Defined-By") == "guardian", f"{message_id}: Defined-By must be guardian"
        assert "Documentation" in headers, f"{message_id}: no Documentation"
        assert body, f"{message_id}: empty body"
        for field in re.findall(r"@([A-Za-z0-9_]+)@", body + headers["Subject"]):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", field), f"{message_id}: @{field}@ is no journal field"


def test_catalog_covers_every_message_id() -> None:
    catalogued = {i for i, _, _ in parse_catalog(CATALOG.read_text())}
    missing = {i: what for i, what in REQUIRED_IDS.items() if i not in catalogued}
    assert not missing, f"no catalog entry for {missing}"
    # and every id the code defines (MSG_* = "<32 hex>" anywhere in the package)
    defined = set()
    for source in (ROOT / "guardian").rglob("*.py"):
        defined |= set(re.findall(r'^MSG_\w+\s*=\s*"([0-9a-f]{32})"', source.read_text(), re.MULTILINE))
    assert set(REQUIRED_IDS) <= defined, "the scan finds the ids guardian/report.py defines"
    assert defined <= catalogued, f"message ids without a catalog entry: {sorted(defined - catalogued)}"


def test_catalog_compiles_with_journalctl(tmp_path: Path) -> None:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        pytest.skip("journalctl is not installed")
    catalog_dir = tmp_path / "usr" / "lib" / "systemd" / "catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir / "guardian.catalog")
    subprocess.run([journalctl, f"--root={tmp_path}", "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(
        [journalctl, f"--root={tmp_path}", "--list-catalog"], check=True, capture_output=True, text=True
    ).stdout
    for message_id in REQUIRED_IDS:
        assert re.search(rf"^{message_id} guardian: ", listed, re.MULTILINE), listed


# --- unit ---------------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value assigned, in order (systemd settings may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        assert not line.endswith("\\"), "no continuation lines, please: keep each setting greppable"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= is not set"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "": 1}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert m and m.group(2) in units, f"not a simple time span: {value!r}"
    return float(m.group(1)) * units[m.group(2)]


def test_unit_runs_guardian_as_a_notify_service_with_a_watchdog(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert seconds(one(service, "WatchdogSec")) > 0
    assert one(service, "ExecStart") == "/usr/local/bin/guardian run --policy /etc/guardian.toml"
    assert one(service, "ExecReload").split()[-2:] == ["-HUP", "$MAINPID"]
    assert one(service, "Restart") == "always"
    assert seconds(one(service, "RestartSec")) > 0
    assert "78" in " ".join(service["RestartPreventExitStatus"]).split(), "EX_CONFIG must not restart"


def test_unit_protects_guardian_from_running_out_of_memory(service: dict[str, list[str]]) -> None:
    assert one(service, "OOMScoreAdjust") == "-1000"
    assert one(service, "MemoryMin")
    assert one(service, "MemoryMax")
    assert one(service, "TasksMax")


def test_unit_sandbox_keeps_what_guardian_needs(service: dict[str, list[str]]) -> None:
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "NoNewPrivileges") == "yes"
    caps = set(" ".join(service["CapabilityBoundingSet"]).split())
    assert caps == {
        "CAP_KILL",
        "CAP_IPC_LOCK",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_PTRACE",
        "CAP_DAC_OVERRIDE",
        "CAP_SYSLOG",  # /dev/kmsg under kernel.dmesg_restrict=1
    }
    # the kernel log, read-only, inside the private /dev: the kernel's own OOM kills
    assert one(service, "ProtectKernelLogs") == "no"
    assert "-/dev/kmsg" in " ".join(service["BindReadOnlyPaths"]).split()
    assert "/dev/kmsg r" in service["DeviceAllow"]
    # /sys/fs/cgroup must stay writable: cgroup.kill, PSI triggers on memory.pressure (O_RDWR)
    assert service.get("ProtectControlGroups", ["no"]) == ["no"]
    # every process and /proc/meminfo, /proc/pressure must stay visible
    assert service.get("ProtectProc", ["default"]) == ["default"]
    assert service.get("ProcSubset", ["all"]) == ["all"]
    assert "PrivateUsers" not in service, "capabilities in a user namespace do not reach host processes"
    allowed = service["SystemCallFilter"][0].split()
    assert allowed[0] == "@system-service"
    for syscall in ("pidfd_open", "pidfd_send_signal", "process_mrelease", "mlockall"):
        assert syscall in allowed, f"{syscall} is not allowed"
    for denied in service["SystemCallFilter"][1:]:
        assert denied.startswith("~"), "only the first SystemCallFilter= may allow"
        assert not {"pidfd_open", "pidfd_send_signal", "process_mrelease", "mlockall", "@process"} & set(
            denied[1:].split()
        )
    assert one(service, "RestrictAddressFamilies") == "AF_UNIX"  # journald and sd_notify


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit exactly as shipped, except ExecStart: verify insists that the binary exists, and
    /usr/local/bin/guardian exists only on an installed host. So a copy in tmp_path runs this
    venv's guardian console script instead (the one next to sys.executable)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    venv_guardian = Path(sys.executable).parent / "guardian"
    if not venv_guardian.exists():
        pytest.skip(f"no guardian console script at {venv_guardian}")
    text = UNIT.read_text()
    assert text.count("ExecStart=/usr/local/bin/guardian ") == 1
    copy = tmp_path / "guardian.service"
    copy.write_text(text.replace("ExecStart=/usr/local/bin/guardian ", f"ExecStart={venv_guardian} "))
    # --recursive-errors=no: exit non-zero on any warning about this unit (unknown key, bad
    # value, unknown system call, missing binary), but not about the host's other units
    result = subprocess.run(
        [analyze, "verify", "--man=no", "--recursive-errors=no", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "guardian" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert not ours, "\n".join(ours)
