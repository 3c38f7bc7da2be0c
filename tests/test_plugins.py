"""The plugin manager: built-ins, entry points, the plugin directory and its security checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from guardian import hookspecs
from guardian.config import Policy, PolicyError, parse_policy
from guardian.plugins import DEFAULT_PLUGINS, insecure_reason, make_plugin_manager

DOCS = Path(__file__).parent.parent / "docs" / "plugin_hooks.md"

PLUGIN = """
from guardian.hookspecs import Scorer, hookimpl

class Constant(Scorer):
    name = "constant"
    def score(self, candidate, context):
        return 7.0

@hookimpl
def guardian_scorers():
    return [Constant()]
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("ownership checks need files owned by root")
    directory = tmp_path / "plugins.d"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    path = directory / "constant.py"
    path.write_text(PLUGIN)
    path.chmod(0o644)
    return directory


def test_builtins_are_registered_like_any_plugin() -> None:
    plugins = make_plugin_manager(None, entry_points=False)
    names = {plugins.manager.get_name(p) for p in plugins.manager.get_plugins()}
    assert {n.rsplit(".", 1)[1] for n in DEFAULT_PLUGINS} <= names
    assert set(plugins.scorers(Policy())) == {"kernel_badness", "cgroup_largest", "kubelet_qos", "rules"}
    assert plugins.errors == []


def test_plugin_directory_is_loaded(plugin_dir: Path) -> None:
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == []
    assert "constant" in plugins.scorers(Policy())


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_group_or_world_writable_plugin_is_refused(plugin_dir: Path, mode: int) -> None:
    (plugin_dir / "constant.py").chmod(mode)
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == [
        f"refused plugin {plugin_dir}/constant.py: writable by group or others (mode {mode:04o})"
    ]
    assert "constant" not in plugins.scorers(Policy())


def test_plugin_not_owned_by_root_is_refused(plugin_dir: Path) -> None:
    os.chown(plugin_dir / "constant.py", 1000, 1000)
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == [f"refused plugin {plugin_dir}/constant.py: owned by uid 1000, not root"]


def test_writable_plugin_directory_is_refused(plugin_dir: Path) -> None:
    plugin_dir.chmod(0o777)
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == [
        f"refused plugin directory {plugin_dir}: writable by group or others (mode 0777)"
    ]
    assert insecure_reason(str(plugin_dir)) is not None


def test_broken_and_misspelt_plugins_are_refused_and_others_load(plugin_dir: Path) -> None:
    (plugin_dir / "broken.py").write_text("raise RuntimeError('half-written plugin')\n")
    (plugin_dir / "broken.py").chmod(0o644)
    (plugin_dir / "typo.py").write_text(
        "from guardian.hookspecs import hookimpl\n@hookimpl\ndef guardian_scorer():\n    return []\n"
    )
    (plugin_dir / "typo.py").chmod(0o644)
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert len(plugins.errors) == 2
    assert plugins.errors[0] == (
        f"refused plugin {plugin_dir}/broken.py: import failed: RuntimeError: half-written plugin"
    )
    assert plugins.errors[1].startswith(f"refused plugin file:{plugin_dir}/typo.py:")
    assert "guardian_scorer" in plugins.errors[1]
    assert "constant" in plugins.scorers(Policy())


def test_unknown_scorer_in_policy_is_a_policy_error() -> None:
    plugins = make_plugin_manager(None, entry_points=False)
    policy = parse_policy("[scorers]\nkernel_badnes = 1.0\n", "/etc/guardian.toml")
    with pytest.raises(PolicyError) as info:
        plugins.resolve(policy)
    assert str(info.value) == (
        "/etc/guardian.toml: scorers.kernel_badnes: no scorer named 'kernel_badnes' "
        "(available: cgroup_largest, kernel_badness, kubelet_qos, rules)"
    )


def test_duplicate_scorer_name_is_reported() -> None:
    class Dup:
        @hookspecs.hookimpl
        def guardian_scorers(self) -> list[hookspecs.Scorer]:
            from guardian.scorers.kernel_badness import KernelBadness

            return [KernelBadness()]

    plugins = make_plugin_manager(None, entry_points=False, extra=[Dup()])
    assert "kernel_badness" in plugins.scorers(Policy())
    assert any("already taken by plugin kernel_badness" in e for e in plugins.errors)


def test_example_plugin_is_discovered_through_its_entry_point() -> None:
    plugins = make_plugin_manager(None, entry_points=True)
    available = plugins.scorers(Policy())
    if "example_swap" not in available:
        pytest.fail("plugins/guardian-example-scorer is not installed: run scripts/setup.sh")
    assert available["example_swap"][1] == "entrypoint:example_swap"


def test_example_plugin_scores_in_guardian_rank(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[scorers]\nkernel_badness = 1.0\nexample_swap = 2.0\n")
    out = subprocess.run(
        [sys.executable, "-m", "guardian.cli", "rank", "--json", "--policy", str(policy)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(out.stdout)
    assert report["weights"] == {"kernel_badness": 1.0, "example_swap": 2.0}
    assert report["candidates"]
    for entry in report["candidates"]:
        assert set(entry["scores"]) == {"kernel_badness", "example_swap"}
        assert entry["total"] == pytest.approx(
            entry["scores"]["kernel_badness"] + 2.0 * entry["scores"]["example_swap"]
        )


def test_autoload_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "example_swap" not in make_plugin_manager(None).scorers(Policy())


def test_every_hook_has_a_documentation_section() -> None:
    hooks = sorted(name for name in dir(hookspecs) if name.startswith("guardian_"))
    assert hooks, "no hookspecs found"
    sections = set(re.findall(r"^## (guardian_\w+)$", DOCS.read_text(), flags=re.MULTILINE))
    assert sorted(set(hooks) - sections) == []
    assert sorted(sections - set(hooks)) == []  # no docs for hooks that do not exist
