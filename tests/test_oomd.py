"""systemd-oomd beside guardian: its managed cgroups read from unit files, and the start-up
warning where guardian's rules act on the same cgroups.

The fake roots hold unit files where a Debian host has them: the defaults Debian's (bookworm)
systemd-oomd package ships (``-.slice.d`` ManagedOOMSwap=kill, ``user@.service.d``
ManagedOOMMemoryPressure=kill), and what ``systemctl set-property`` writes
(``/etc/systemd/system.control/NAME.d/50-ManagedOOM*.conf``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.builder import FakeRoot
from support.clock import FakeClock
from support.machine import small_machine
from support.sinks import MemorySink

from guardian.config import parse_policy
from guardian.daemon.engine import Engine
from guardian.daemon.service import Service
from guardian.host import Host
from guardian.loaded import Loaded
from guardian.notify import Notifier
from guardian.oomd import oomd_warnings, overlaps
from guardian.plugins import make_plugin_manager
from guardian.report import Reporter
from guardian.selection import Selector
from guardian.sources.units import (
    Managed,
    UnitFiles,
    dropin_dir_names,
    managed_of,
    parse_managed_oom,
    read_managed,
    unit_of_cgroup,
)

USER = "/user.slice/user-1000.slice/user@1000.service"
OOMD = "/system.slice/systemd-oomd.service"
MACHINE_OFF = "[machine]\nenabled = false\n"


def test_parse_takes_the_last_assignment_and_an_empty_one_resets() -> None:
    found: dict[str, str] = {}
    parse_managed_oom(
        "# ManagedOOMSwap=kill\n[Unit]\nManagedOOMSwap=kill\n"  # not a [Unit] setting
        "[Service]\nManagedOOMMemoryPressure=kill\n; ManagedOOMSwap=kill\n"
        "ManagedOOMMemoryPressureLimit=50%\nManagedOOMSwap = KILL \n[Install]\nManagedOOMSwap=auto\n",
        found,
    )
    assert found == {"ManagedOOMMemoryPressure": "kill", "ManagedOOMSwap": "kill"}
    parse_managed_oom("[Service]\nManagedOOMMemoryPressure=\nManagedOOMSwap=auto\n", found)
    assert found == {"ManagedOOMSwap": "auto"}
    parse_managed_oom("\udcff garbage = \x00\n[Slice\n=kill\n", found)  # hostile text: ignored
    assert found == {"ManagedOOMSwap": "auto"}


@pytest.mark.parametrize(
    ("unit", "names"),
    [
        ("web.service", ["service.d", "web.service.d"]),
        ("a-b-c.service", ["service.d", "a-.service.d", "a-b-.service.d", "a-b-c.service.d"]),
        ("user@1000.service", ["service.d", "user@.service.d", "user@1000.service.d"]),
        ("user-1000.slice", ["slice.d", "user-.slice.d", "user-1000.slice.d"]),
        ("-.slice", ["slice.d", "-.slice.d"]),
    ],
)
def test_dropin_directories_follow_systemd_unit_5(unit: str, names: list[str]) -> None:
    assert dropin_dir_names(unit) == names


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        ("/", "-.slice"),
        (USER, "user@1000.service"),
        ("/system.slice", "system.slice"),
        ("/kubepods.slice/pod/cri-containerd-aa.scope", "cri-containerd-aa.scope"),
        ("/system.slice/web.service/worker", None),  # a cgroup a service made itself
        ("/system.slice/.service", None),
        ("/x.socket", None),
    ],
)
def test_unit_of_cgroup(cgroup: str, unit: str) -> None:
    assert unit_of_cgroup(cgroup) == unit


def host_with_units(tmp_path: Path, oomd_running: bool = True) -> FakeRoot:
    root = small_machine(tmp_path / "root")
    root.cgroup_v2("/user.slice/user-1000.slice")
    root.cgroup_v2(USER)
    root.cgroup_v2("/system.slice")
    root.cgroup_v2(OOMD)
    if oomd_running:
        root.write(f"sys/fs/cgroup{OOMD}/cgroup.procs", "600\n")
    lib = "usr/lib/systemd/system"
    root.write(f"{lib}/user@.service", "[Unit]\nDescription=User Manager\n[Service]\nDelegate=yes\n")
    root.write(
        f"{lib}/user@.service.d/10-oomd-user-service-defaults.conf",
        "[Service]\nManagedOOMMemoryPressure=kill\n",
    )
    root.write(f"{lib}/-.slice.d/10-oomd-root-slice-defaults.conf", "[Slice]\nManagedOOMSwap=kill\n")
    root.write(f"{lib}/web.service", "[Service]\nExecStart=/usr/bin/web\nManagedOOMSwap=kill\n")
    # the admin takes web.service back from systemd-oomd with a drop-in in /etc
    root.write("etc/systemd/system/web.service.d/override.conf", "[Service]\nManagedOOMSwap=\n")
    # systemctl set-property system.slice ManagedOOMMemoryPressure=kill
    root.write(
        "etc/systemd/system.control/system.slice.d/50-ManagedOOMMemoryPressure.conf",
        '# This is a drop-in unit file extension, created via "systemctl set-property"\n'
        "[Slice]\nManagedOOMMemoryPressure=kill\n",
    )
    return root


def test_read_managed_finds_the_units_that_hand_their_cgroup_to_oomd(tmp_path: Path) -> None:
    host_with_units(tmp_path)
    host = Host(tmp_path / "root")
    managed = read_managed(host.unit_dirs(), host.v2_cgroups())
    assert managed == [
        Managed("/", "-.slice", ("ManagedOOMSwap",)),
        Managed("/system.slice", "system.slice", ("ManagedOOMMemoryPressure",)),
        Managed(USER, "user@1000.service", ("ManagedOOMMemoryPressure",)),
    ]


def test_a_dropin_of_higher_precedence_with_the_same_name_wins(tmp_path: Path) -> None:
    root = host_with_units(tmp_path)
    root.write("etc/systemd/system/user@.service.d/10-oomd-user-service-defaults.conf", "")  # masked
    host = Host(tmp_path / "root")
    assert UnitFiles(host.unit_dirs()).settings("user@1000.service") == {}
    # a file of the same name under /run would lose to /etc too
    root.write(
        "run/systemd/system/user@.service.d/10-oomd-user-service-defaults.conf",
        "[Service]\nManagedOOMMemoryPressure=kill\n",
    )
    assert UnitFiles(host.unit_dirs()).settings("user@1000.service") == {}


def test_managed_of_keeps_only_kill() -> None:
    settings = {
        "a.slice": {"ManagedOOMSwap": "auto"},
        "b.slice": {"ManagedOOMSwap": "kill", "ManagedOOMMemoryPressure": "kill"},
    }
    assert managed_of(["/a.slice", "/b.slice", "/c.slice"], settings) == [
        Managed("/b.slice", "b.slice", ("ManagedOOMSwap", "ManagedOOMMemoryPressure"))
    ]


MANAGED = [Managed(USER, "user@1000.service", ("ManagedOOMMemoryPressure",))]


def test_the_machine_rule_overlaps_every_managed_cgroup() -> None:
    policy = parse_policy("", "test.toml")
    (warning,) = overlaps(MANAGED, policy, [])
    assert warning.startswith(
        f"systemd-oomd is running and kills in {USER} (user@1000.service: ManagedOOMMemoryPressure=kill), "
        "where guardian acts too by the machine rule: "
    )


def test_a_cgroup_rule_overlaps_when_a_match_is_the_managed_cgroup_or_above_or_below_it() -> None:
    policy = parse_policy(
        MACHINE_OFF
        + '[[cgroup]]\nmatch = "system.slice/*.service"\nmin_headroom = { kill = "5%" }\n'
        + '[[cgroup]]\nmatch = "user.slice/*"\nmin_headroom = { kill = "5%" }\n'
        + '[[cgroup]]\nmatch = "user.slice/user-1000.slice/user@1000.service/app.slice/*"\nmin_headroom = { kill = "5%" }\n',
        "test.toml",
    )
    watched = ["/system.slice/web.service", "/user.slice/user-1000.slice"]
    (warning,) = overlaps(MANAGED, policy, watched)
    assert 'acts too by cgroup[1] (match = "user.slice/*", here /user.slice/user-1000.slice): ' in warning
    assert "cgroup[0]" not in warning
    below = [*watched, f"{USER}/app.slice/firefox.scope"]
    (warning,) = overlaps(MANAGED, policy, below)
    assert "cgroup[1]" in warning and "cgroup[2]" in warning
    # the same rules, systemd-oomd elsewhere: no overlap
    assert overlaps([Managed("/kubepods.slice", "kubepods.slice", ("ManagedOOMSwap",))], policy, below) == []
    # a sibling whose name merely starts the same is not below
    assert overlaps([Managed("/system.slice/web", "web.slice", ("ManagedOOMSwap",))], policy, watched) == []


def test_no_warning_and_no_unit_file_read_when_oomd_is_not_running(tmp_path: Path) -> None:
    root = host_with_units(tmp_path, oomd_running=False)
    root.write(f"sys/fs/cgroup{OOMD}/cgroup.procs", "")
    host = Host(tmp_path / "root")
    assert not host.oomd_running()
    assert oomd_warnings(host, parse_policy("", "test.toml"), []) == []
    assert not Host(tmp_path / "nowhere").oomd_running()  # no cgroup tree at all


def engine_on(root: Path, sink: MemorySink) -> Engine:
    """The daemon's engine on a fake root, with the built-in policy but for a quick loop."""
    policy = parse_policy("[poll]\nmin_interval_s = 0.01\nmax_interval_s = 0.01\n", "test.toml")
    plugins = make_plugin_manager(None, entry_points=False)
    return Engine(Host(root), Loaded(policy, plugins, Selector(policy, plugins)), Reporter(sink), FakeClock())


def test_guardian_warns_once_at_start_when_it_overlaps_oomd(tmp_path: Path) -> None:
    host_with_units(tmp_path)
    sink = MemorySink()
    engine = engine_on(tmp_path / "root", sink)
    assert Service(engine, None, False, Notifier({})).run(ticks=3) == 0
    warnings = [e for e in sink.events if e["MESSAGE"].startswith("systemd-oomd is running")]
    assert [w["PRIORITY"] for w in warnings] == ["4", "4", "4"]  # /, system.slice, user@1000.service
    assert {w["MESSAGE"].split(" (")[0] for w in warnings} == {
        "systemd-oomd is running and kills in /",
        "systemd-oomd is running and kills in /system.slice",
        f"systemd-oomd is running and kills in {USER}",
    }


def test_a_failing_check_is_a_warning_and_guardian_starts_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_with_units(tmp_path)
    sink = MemorySink()
    engine = engine_on(tmp_path / "root", sink)

    def broken(*args: object) -> list[str]:
        raise ValueError("a bug")

    monkeypatch.setattr("guardian.daemon.service.oomd_warnings", broken)
    assert Service(engine, None, False, Notifier({})).run(ticks=2) == 0
    messages = [e["MESSAGE"] for e in sink.events]
    assert "could not check whether systemd-oomd acts where guardian does: ValueError('a bug')" in messages
    assert any(m.startswith("started: ") for m in messages)
