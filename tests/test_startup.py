"""What ``guardian run`` has imported by the time it says READY=1, and how it decides that no
installed package offers a plugin. Structural, never timed: bench/startup.py measures the CPU
time and the memory a start costs.

A start pays for every module it imports, in CPU and, since the daemon locks its memory, in
RSS. So ``run`` must not import what only another command (``status``, ``rank --explain``), a
report it has not written yet (json), or a policy file it was not given (importlib.resources)
needs; nor importlib.metadata, with the email and zipfile packages behind it, unless the policy
says ``[plugins] entry_points = true`` and an installed package may declare one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from guardian import plugins

FIXTURE = Path(__file__).parent / "fixtures" / "v2-systemd"
POLICY = Path(__file__).parent.parent / "etc" / "guardian.toml"

# Runs ``guardian run`` and, instead of sending READY=1, prints every module imported so far
# and leaves. With ``--no-site-packages``, site-packages is taken off sys.path once guardian's
# own dependencies are imported: no installed package (the example plugin included) can then
# declare an entry point, as on a machine without guardian plugins.
CHILD = """
import os, sys
args = sys.argv[1:]
if args[0] == "--no-site-packages":
    args = args[1:]
    import guardian, pluggy, re2
    sys.path[:] = [p for p in sys.path if not p.endswith(("site-packages", "dist-packages"))]
import guardian.notify

def send(self, **state):
    if state.get("READY") == "1":
        sys.stdout.write("\\n".join(sorted(sys.modules)) + "\\n")
        sys.stdout.flush()
        os._exit(0)
    return True

guardian.notify.Notifier.send = send
from guardian.cli import main
sys.exit(main(args))
"""

# Only other commands, later events or other policies need these.
NOT_AT_START = (
    "guardian.explain",
    "guardian.status",
    "guardian.top",
    "importlib.metadata",
    "importlib.resources",
    "email",
    "zipfile",
    "json",
    "psutil",
    "systemd",
    # a policy without [metrics] serves none: neither the exporter nor its library is loaded
    "guardian.daemon.exporter",
    "prometheus_client",
    # a tick that failed needs it for its traceback
    "traceback",
    # sd_notify's datagram goes through _socket (guardian/notify.py)
    "socket",
)


def modules_at_ready(tmp_path: Path, policy: Path, *first: str) -> set[str]:
    return set(run_child(tmp_path, CHILD, policy, *first).split())


def run_child(tmp_path: Path, child: str, policy: Path, *first: str) -> str:
    """``guardian run --dry-run`` on the fixture tree under a child script; what it printed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "GUARDIAN_LOG_FORMAT", "GUARDIAN_DISABLE_PLUGIN_AUTOLOAD")
    }
    argv = [*first, "run", "--dry-run", "--root", str(FIXTURE), "--policy", str(policy)]
    out = subprocess.run(
        [sys.executable, "-c", child, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_run_without_entry_points_imports_only_what_it_needs(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[plugins]\nentry_points = false\n")
    modules = modules_at_ready(tmp_path, policy)
    assert "guardian.daemon.service" in modules  # the child did get to READY=1
    assert sorted(modules.intersection(NOT_AT_START)) == []
    assert "decimal" not in modules


def test_sizes_and_no_hook_commands_need_neither_decimal_nor_subprocess(tmp_path: Path) -> None:
    """Sizes are read with integers; subprocess comes with a policy's [[hook]] commands."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[plugins]\nentry_points = false\n[machine]\nmem_available = { term = '1.5G', kill = '512M' }\n"
        "[poll]\nfill_rate = '256M'\n"
    )
    modules = modules_at_ready(tmp_path, policy)
    assert "guardian.daemon.service" in modules
    assert not {"decimal", "subprocess"} & modules
    policy.write_text(policy.read_text() + "[[hook]]\ncommand = ['/bin/true']\n")
    assert "subprocess" in modules_at_ready(tmp_path, policy)


def test_run_with_the_shipped_policy_and_no_plugin_installed(tmp_path: Path) -> None:
    """entry_points = true, as shipped, on a machine where no package declares a guardian entry
    point: importlib.metadata is not imported either."""
    modules = modules_at_ready(tmp_path, POLICY, "--no-site-packages")
    assert "guardian.daemon.service" in modules
    assert sorted(modules.intersection(NOT_AT_START)) == []


def test_run_with_metrics_loads_prometheus_client(tmp_path: Path) -> None:
    """[metrics] on: the exporter and prometheus_client are loaded, with what they stand on
    (http.server parses headers with the email package and serves through socket;
    prometheus_client imports json), and nothing else that another command needs."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[plugins]\nentry_points = false\n[metrics]\nlisten = "127.0.0.1:0"\n')
    modules = modules_at_ready(tmp_path, policy)
    assert {"guardian.daemon.exporter", "prometheus_client"} <= modules
    theirs = {"guardian.daemon.exporter", "prometheus_client", "email", "json", "socket"}
    assert sorted(modules.intersection(NOT_AT_START) - theirs) == []


def test_run_with_the_example_plugin_installed_loads_it(tmp_path: Path) -> None:
    """Where a package does declare one (this venv has the example plugin), the full scan runs."""
    if not any(ep.name == "example_swap" for ep in metadata.entry_points(group="guardian")):
        pytest.skip("the example plugin is not installed (scripts/setup.sh installs it)")
    modules = modules_at_ready(tmp_path, POLICY)
    assert {"importlib.metadata", "guardian_example_scorer"} <= modules


# --- deciding, without importlib.metadata, that no package declares a guardian entry point -------


def dist(site: Path, name: str, entry_points: str, directory: str = "") -> None:
    """An installed distribution's metadata directory (``NAME-1.0.dist-info`` by default)."""
    info = site / (directory or f"{name}-1.0.dist-info")
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


CONSOLE_SCRIPT = "[console_scripts]\nguardian = guardian.cli:main\n"


def found_by_importlib_metadata() -> bool:
    return any(True for _ in metadata.entry_points(group="guardian"))


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("nothing", False),
        ("console script only", False),
        ("a guardian entry point", True),
        ("a guardian entry point in an egg", True),
        ("an upper-case DIST-INFO", True),
        ("an egg-info directory", True),
        ("an empty group header", True),
    ],
)
def test_no_plugin_is_decided_as_importlib_metadata_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, expected: bool
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    path = [str(site), str(tmp_path / "missing")]
    dist(site, "guardian", CONSOLE_SCRIPT)
    if layout == "console script only":
        dist(site, "other", "[console_scripts]\nguardian-top = other.cli:main\n")
    elif layout == "a guardian entry point":
        dist(site, "plugin", "[console_scripts]\np = p:main\n\n[guardian]\nmine = plugin_module\n")
    elif layout == "a guardian entry point in an egg":
        egg = tmp_path / "plugin-1.0-py3.11.egg"
        dist(egg, "plugin", "[guardian]\nmine = plugin_module\n", "EGG-INFO")
        path.append(str(egg))
    elif layout == "an upper-case DIST-INFO":
        dist(site, "plugin", "[guardian]\nmine = plugin_module\n", "Plugin-1.0.DIST-INFO")
    elif layout == "an egg-info directory":
        dist(site, "plugin", "[guardian]\r\nmine = plugin_module\r\n", "plugin.egg-info")
    elif layout == "an empty group header":
        dist(site, "plugin", "[guardian]\n")
    monkeypatch.setattr(sys, "path", path)
    assert plugins._may_have_entry_points() is expected
    # never False where importlib.metadata finds one (an empty header declares none: True is
    # only a scan the long way)
    assert found_by_importlib_metadata() <= plugins._may_have_entry_points()


def test_what_it_cannot_read_itself_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("plugin-1.0.dist-info/entry_points.txt", "[guardian]\nmine = plugin_module\n")
        z.writestr("plugin-1.0.dist-info/METADATA", "Name: plugin\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert found_by_importlib_metadata()
    assert plugins._may_have_entry_points()

    site = tmp_path / "site"
    dist(site, "odd", "")
    (site / "odd-1.0.dist-info" / "entry_points.txt").write_bytes(b"[\xff]\n")  # not UTF-8
    monkeypatch.setattr(sys, "path", [str(site)])
    assert plugins._may_have_entry_points()


def test_another_finder_of_distributions_is_left_to_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Finder:
        @staticmethod
        def find_spec(*args: object) -> None:
            return None

        @staticmethod
        def find_distributions(*args: object) -> list[object]:
            return []

    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert not plugins._may_have_entry_points()
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert plugins._may_have_entry_points()


# Prints whether the cyclic collector was on when READY=1 was sent, and whether it is on at the
# loop's first look after it; then leaves.
GC_CHILD = """
import gc, os, sys
import guardian.notify
from guardian.daemon.engine import Engine
seen = []

def send(self, **state):
    if state.get("READY") == "1":
        seen.append(gc.isenabled())
    return True

real_quick = Engine.quick

def quick(self, *args, **kwargs):
    print(f"ready={seen[0]} loop={gc.isenabled()} frozen={gc.get_freeze_count() > 0}", flush=True)
    os._exit(0)

guardian.notify.Notifier.send = send
Engine.quick = quick
from guardian.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_holds_the_cyclic_collector_off_until_ready(tmp_path: Path) -> None:
    """Nothing a start makes is garbage: the collector is off until READY=1, then everything made
    is frozen out of its sight and it runs as usual."""
    assert run_child(tmp_path, GC_CHILD, POLICY).split() == ["ready=False", "loop=True", "frozen=True"]


def test_a_run_that_fails_at_start_turns_the_collector_back_on(tmp_path: Path) -> None:
    import gc

    from guardian.cli import EXIT_CONFIG, main

    policy = tmp_path / "policy.toml"
    policy.write_bytes(b'[machine]\nmem_available = { term = "\xff" }\n')
    assert gc.isenabled()
    assert main(["run", "--dry-run", "--root", str(FIXTURE), "--policy", str(policy)]) == EXIT_CONFIG
    assert gc.isenabled()


def test_every_dataclass_a_run_defines_has_a_docstring(tmp_path: Path) -> None:
    """dataclasses writes a missing class docstring from ``inspect.signature`` (a tokenizer pass
    over a builtin's text signature for a class without fields), about half a millisecond a class
    before READY=1: each record a run defines says what it is instead."""
    import dataclasses
    import importlib
    import inspect

    modules = modules_at_ready(tmp_path, POLICY)
    undocumented = []
    for name in sorted(m for m in modules if m == "guardian" or m.startswith("guardian.")):
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value):
                generated = value.__name__ + str(inspect.signature(value)).replace(" -> None", "")
                if value.__doc__ == generated:
                    undocumented.append(f"{name}.{value.__qualname__}")
    assert undocumented == []
