"""The plugin manager: built-ins, entry points, the plugin directory and its security checks.

Trees that must be accepted are built in a root-only directory (tests/support/secure.py);
each refusal test makes exactly one component unsafe there and checks that the refusal names it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import re
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.secure import root_only_dir, secure_base

from guardian import hookspecs
from guardian.cli import EXIT_CONFIG, main
from guardian.config import Policy, PolicyError, parse_policy
from guardian.host import Host
from guardian.plugins import (
    DEFAULT_PLUGINS,
    InsecurePath,
    insecure_reason,
    make_plugin_manager,
    module_name,
    secure_realpath,
)

DOCS = Path(__file__).parent.parent / "docs" / "plugin_hooks.md"

PLUGIN = """
from guardian.api import Scorer, hookimpl

class Constant(Scorer):
    name = "constant"
    def score(self, candidate, context):
        return 7.0

@hookimpl
def guardian_scorers():
    return [Constant()]
"""


def put(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def mkdir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir()
    path.chmod(mode)  # mkdir's mode is filtered by the umask
    return path


@pytest.fixture
def secure() -> Iterator[Path]:
    if secure_base() is None:
        pytest.skip("accepted plugin trees need root and a root-only base directory such as /run")
    with root_only_dir() as path:
        yield path


@pytest.fixture
def plugin_dir(secure: Path) -> Path:
    directory = mkdir(secure / "plugins.d")
    put(directory / "constant.py", PLUGIN)
    return directory


def constant_score(plugins_dir: Path) -> float:
    plugins = make_plugin_manager(str(plugins_dir), entry_points=False)
    assert plugins.errors == []
    scorer = plugins.scorers(Policy())["constant"].scorer
    return float(scorer.score(None, None))  # type: ignore[arg-type]


def test_builtins_are_registered_like_any_plugin() -> None:
    plugins = make_plugin_manager(None, entry_points=False)
    names = {plugins.manager.get_name(p) for p in plugins.manager.get_plugins()}
    assert {n.rsplit(".", 1)[1] for n in DEFAULT_PLUGINS} <= names
    assert set(plugins.scorers(Policy())) == {
        "cause",
        "kernel_badness",
        "cgroup_largest",
        "kubelet_qos",
        "rules",
    }
    assert plugins.errors == []


def test_plugin_directory_is_loaded(plugin_dir: Path) -> None:
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == []
    offered = plugins.scorers(Policy())["constant"]
    assert offered.plugin == f"file:{plugin_dir}/constant.py"
    assert constant_score(plugin_dir) == 7.0


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


# --- the whole chain, and through symlinks (hardening) -------------------------------------------


def test_plugin_directory_under_world_writable_tmp_is_refused(tmp_path: Path) -> None:
    """/tmp is mode 1777: anyone can rename what they own there, so nothing below it is safe."""
    if os.geteuid() != 0:
        pytest.skip("the directory itself must be root-owned for /tmp to be the reason")
    directory = tmp_path / "plugins.d"
    directory.mkdir()
    directory.chmod(0o755)
    put(directory / "constant.py", PLUGIN)
    plugins = make_plugin_manager(str(directory), entry_points=False)
    assert len(plugins.errors) == 1
    assert plugins.errors[0].startswith(f"refused plugin directory {directory}: ")
    assert plugins.errors[0].endswith("is writable by group or others (mode 1777)")
    assert "constant" not in plugins.scorers(Policy())


def test_good_directory_inside_a_world_writable_parent_is_refused(secure: Path) -> None:
    parent = mkdir(secure / "open", 0o777)
    directory = mkdir(parent / "plugins.d")
    put(directory / "constant.py", PLUGIN)
    plugins = make_plugin_manager(str(directory), entry_points=False)
    assert plugins.errors == [
        f"refused plugin directory {directory}: {parent} is writable by group or others (mode 0777)"
    ]
    assert "constant" not in plugins.scorers(Policy())


def test_directory_in_a_parent_owned_by_a_user_is_refused(secure: Path) -> None:
    parent = mkdir(secure / "home")
    os.chown(parent, 1000, 1000)
    directory = mkdir(parent / "plugins.d")
    put(directory / "constant.py", PLUGIN)
    plugins = make_plugin_manager(str(directory), entry_points=False)
    assert plugins.errors == [
        f"refused plugin directory {directory}: {parent} is owned by uid 1000, not root"
    ]


def test_symlink_to_a_root_owned_file_in_a_writable_directory_is_refused(
    plugin_dir: Path, secure: Path
) -> None:
    """The link is safe where it is, but its target can be swapped by anyone: refused."""
    parent = mkdir(secure / "open", 0o777)
    put(parent / "real.py", PLUGIN.replace('"constant"', '"linked"'))
    (plugin_dir / "linked.py").symlink_to(parent / "real.py")
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == [
        f"refused plugin {plugin_dir}/linked.py: {parent} is writable by group or others (mode 0777)"
    ]
    assert set(plugins.scorers(Policy())) >= {"constant"}
    assert "linked" not in plugins.scorers(Policy())


def test_symlinked_directory_is_checked_through_its_target(secure: Path) -> None:
    parent = mkdir(secure / "open", 0o777)
    target = mkdir(parent / "real.d")
    put(target / "constant.py", PLUGIN)
    (secure / "plugins.d").symlink_to(target)
    plugins = make_plugin_manager(str(secure / "plugins.d"), entry_points=False)
    assert plugins.errors == [
        f"refused plugin directory {secure}/plugins.d: {parent} is writable by group or others (mode 0777)"
    ]


def test_a_symlink_met_through_another_symlink_is_judged_by_the_directory_holding_it(secure: Path) -> None:
    """secure/a -> secure/b (writable), b/c -> a safe directory. The resolved path is all safe,
    but whoever can write b can point c anywhere: the walk checks b, where c lives."""
    safe = mkdir(secure / "safe")
    directory = mkdir(safe / "plugins.d")
    put(directory / "constant.py", PLUGIN)
    writable = mkdir(secure / "b", 0o777)
    (writable / "c").symlink_to(directory)
    (secure / "a").symlink_to(writable)
    reason = insecure_reason(str(secure / "a" / "c"))
    assert reason == f"{writable} is writable by group or others (mode 0777)"


def test_safe_symlinks_and_dot_dot_resolve_like_the_kernel(secure: Path) -> None:
    lib = mkdir(secure / "lib")
    put(lib / "constant.py", PLUGIN)
    directory = mkdir(secure / "plugins.d")
    (directory / "constant.py").symlink_to("../lib/constant.py")  # relative, within the safe tree
    (secure / "alias.d").symlink_to(directory)
    assert secure_realpath(str(secure / "alias.d" / "constant.py")) == str(lib / "constant.py")
    assert secure_realpath(str(secure / "alias.d" / ".." / "lib")) == str(secure / "lib")
    assert constant_score(secure / "alias.d") == 7.0


def test_symlink_loop_is_refused_not_followed_forever(secure: Path) -> None:
    (secure / "loop").symlink_to(secure / "loop")
    with pytest.raises(InsecurePath, match="more than 40 symbolic links"):
        secure_realpath(str(secure / "loop" / "x.py"))


def test_relative_path_is_checked_from_the_working_directory(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(plugin_dir.parent)
    assert secure_realpath("plugins.d/constant.py") == str(plugin_dir / "constant.py")


def _plant_pyc(source: Path, evil: str) -> Path:
    """A .pyc in __pycache__ that Python's own loader would take for ``source``: compiled from
    ``evil`` padded to the same size, stamped with the source's mtime, owned by uid 1000."""
    good = source.read_bytes() + b"#" + b"x" * 60 + b"\n"  # room for the decoy's padding
    source.write_bytes(good)
    padded = evil.encode() + b"#" + b"x" * (len(good) - len(evil.encode()) - 2) + b"\n"
    assert len(padded) == len(good)
    st = source.stat()
    decoy = source.parent.parent / "decoy.py"
    decoy.write_bytes(padded)
    os.utime(decoy, ns=(st.st_atime_ns, st.st_mtime_ns))
    cache = Path(importlib.util.cache_from_source(str(source)))
    cache.parent.mkdir()
    # timestamp-checked, as Python writes it unless SOURCE_DATE_EPOCH is set (then it would be
    # hash-checked, and no loader would take the decoy's hash for the source's)
    py_compile.compile(
        str(decoy), cfile=str(cache), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
    )
    decoy.unlink()
    os.chown(cache.parent, 1000, 1000)
    os.chown(cache, 1000, 1000)
    return cache


def test_a_planted_pyc_never_runs(plugin_dir: Path) -> None:
    """A local user's .pyc beside a root-owned plugin must not run as root: only the source
    guardian checked and read is compiled."""
    _plant_pyc(plugin_dir / "constant.py", PLUGIN.replace("return 7.0", "return 666.0"))
    assert constant_score(plugin_dir) == 7.0
    # the plant works: Python's own loader, given the same file, runs the planted bytecode
    spec = importlib.util.spec_from_file_location("guardian_test_planted", plugin_dir / "constant.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.Constant().score(None, None) == 666.0


def test_loading_writes_no_bytecode(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # whatever the environment asks
    constant_score(plugin_dir)
    assert not (plugin_dir / "__pycache__").exists()


def test_a_fifo_named_like_a_plugin_is_refused_without_hanging(secure: Path) -> None:
    """Opening a FIFO for reading waits for a writer: the open must not block guardian."""
    directory = mkdir(secure / "plugins.d")
    os.mkfifo(directory / "pipe.py", 0o644)
    put(directory / "constant.py", PLUGIN)
    code = textwrap.dedent(f"""
        import json
        from guardian.plugins import make_plugin_manager
        from guardian.config import Policy
        plugins = make_plugin_manager({str(directory)!r}, entry_points=False)
        print(json.dumps([plugins.errors, sorted(plugins.scorers(Policy()))]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    errors, scorers = json.loads(out.stdout)
    assert errors == [f"refused plugin {directory}/pipe.py: not a regular file"]
    assert "constant" in scorers


def test_dot_files_are_not_plugins(plugin_dir: Path) -> None:
    (plugin_dir / ".#constant.py").symlink_to("root@host.1234:1700000000")  # an editor's lock
    assert make_plugin_manager(str(plugin_dir), entry_points=False).errors == []


# --- import failures of any kind are refusals (hardening) ----------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("raise RuntimeError('half-written plugin')", "RuntimeError: half-written plugin"),
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("class Odd(BaseException):\n    pass\nraise Odd('odd')", "Odd: odd"),
        ("def broken(:\n", "SyntaxError: "),
    ],
)
def test_a_plugin_that_fails_at_import_is_refused_and_others_load(
    plugin_dir: Path, body: str, reason: str
) -> None:
    put(plugin_dir / "broken.py", body + "\n")
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert len(plugins.errors) == 1
    assert plugins.errors[0].startswith(f"refused plugin {plugin_dir}/broken.py: import failed: {reason}")
    assert "constant" in plugins.scorers(Policy())
    assert module_name(str(plugin_dir / "broken.py")) not in sys.modules


def test_guardian_check_reports_a_plugin_that_exits_at_import(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(plugin_dir / "exits.py", "raise SystemExit(1)\n")
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[plugins]\ndirectory = {str(plugin_dir)!r}\nentry_points = false\n")
    # the policy is not what would run (and a reload of it would be rejected): 78, with the reason
    assert main(["check", "--policy", str(policy), "--root", str(tmp_path)]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{policy}: refused plugin {plugin_dir}/exits.py: import failed: SystemExit: 1" in captured.err


def test_a_reload_survives_plugins_that_exit_at_import_and_when_asked_for_scorers(
    plugin_dir: Path, tmp_path: Path
) -> None:
    """daemon.load() is what a SIGHUP reload runs: a plugin's SystemExit used to end the daemon."""
    from guardian.loaded import load

    put(plugin_dir / "exits.py", "raise SystemExit(1)\n")
    put(
        plugin_dir / "offers.py",
        "from guardian.api import hookimpl\n@hookimpl\ndef guardian_scorers():\n    raise SystemExit(2)\n",
    )
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[plugins]\ndirectory = {str(plugin_dir)!r}\nentry_points = false\n")
    loaded = load(Host(str(tmp_path)), str(policy), dry_run=True)
    assert loaded.plugins.errors == [
        f"refused plugin {plugin_dir}/exits.py: import failed: SystemExit: 1",
        f"plugin file:{plugin_dir}/offers.py, guardian_scorers: raised SystemExit: 2; its scorers are not offered",
    ]
    assert loaded.selector.ranker.scorers


def test_a_plugin_that_hangs_at_import_is_refused_at_the_bound(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    monkeypatch.setitem(sys.modules, "guardian_test_gate", types.SimpleNamespace(gate=gate))
    put(plugin_dir / "hangs.py", "import sys\nsys.modules['guardian_test_gate'].gate.wait(60)\n")
    try:
        plugins = make_plugin_manager(str(plugin_dir), entry_points=False, import_budget_s=0.2)
    finally:
        gate.set()
    assert plugins.errors == [
        f"refused plugin {plugin_dir}/hangs.py: did not finish within its budget of 200 ms"
    ]
    assert "constant" in plugins.scorers(Policy())


def test_plugin_code_run_by_hook_discovery_is_isolated_too(plugin_dir: Path) -> None:
    """pluggy lists a module's attributes with dir(), which a module's __dir__ answers."""
    put(plugin_dir / "lister.py", "def __dir__():\n    raise SystemExit(2)\n")
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == [f"refused plugin {plugin_dir}/lister.py: raised SystemExit: 2"]
    assert "constant" in plugins.scorers(Policy())


def test_hook_wrappers_are_refused(plugin_dir: Path) -> None:
    put(
        plugin_dir / "wrapper.py",
        "from guardian.api import hookimpl\n"
        "@hookimpl(wrapper=True)\n"
        "def guardian_exclude(candidate, context):\n"
        "    return (yield)\n",
    )
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert plugins.errors == [
        f"refused plugin {plugin_dir}/wrapper.py: guardian_exclude is a hook wrapper; guardian calls "
        "each plugin's implementation on its own, so wrappers are not supported"
    ]


def test_broken_and_misspelt_plugins_are_refused_and_others_load(plugin_dir: Path) -> None:
    put(plugin_dir / "broken.py", "raise RuntimeError('half-written plugin')\n")
    put(
        plugin_dir / "typo.py",
        "from guardian.api import hookimpl\n@hookimpl\ndef guardian_scorer():\n    return []\n",
    )
    plugins = make_plugin_manager(str(plugin_dir), entry_points=False)
    assert len(plugins.errors) == 2
    assert plugins.errors[0] == (
        f"refused plugin {plugin_dir}/broken.py: import failed: RuntimeError: half-written plugin"
    )
    assert plugins.errors[1].startswith(
        f"refused plugin {plugin_dir}/typo.py: cannot register: PluginValidationError: unknown hook 'guardian_scorer'"
    )
    assert "constant" in plugins.scorers(Policy())


# --- scorers offered --------------------------------------------------------------------------


def test_unknown_scorer_in_policy_is_a_policy_error() -> None:
    plugins = make_plugin_manager(None, entry_points=False)
    policy = parse_policy("[scorers]\nkernel_badnes = 1.0\n", "/etc/guardian.toml")
    with pytest.raises(PolicyError) as info:
        plugins.resolve(policy)
    assert str(info.value) == (
        "/etc/guardian.toml: scorers.kernel_badnes: no scorer named 'kernel_badnes' "
        "(available: cause, cgroup_largest, kernel_badness, kubelet_qos, rules)"
    )


def test_a_scorer_of_a_refused_plugin_is_rejected_with_the_refusal(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check, rank, the daemon's start and its reload all say why the scorer is missing."""
    from guardian.loaded import load

    os.chown(plugin_dir / "constant.py", 1000, 1000)
    put(plugin_dir / "raises.py", "raise RuntimeError('half-written plugin')\n")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f"[scorers]\nconstant = 1.0\n[plugins]\ndirectory = {str(plugin_dir)!r}\nentry_points = false\n"
    )
    expected = (
        f"{policy}: scorers.constant: no scorer named 'constant' "
        "(available: cause, cgroup_largest, kernel_badness, kubelet_qos, rules); "
        f"plugin problems that may explain it: refused plugin {plugin_dir}/constant.py: owned by "
        f"uid 1000, not root; refused plugin {plugin_dir}/raises.py: import failed: RuntimeError: "
        "half-written plugin"
    )
    for command in ("check", "rank", "run"):
        assert main([command, "--policy", str(policy), "--root", str(tmp_path)]) == EXIT_CONFIG
        assert capsys.readouterr().err == f"guardian {command}: {expected}\n"
    with pytest.raises(PolicyError) as info:  # what a SIGHUP reload runs
        load(Host(str(tmp_path)), str(policy))
    assert str(info.value) == expected


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
    assert available["example_swap"].plugin == "entrypoint:example_swap"


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
    monkeypatch.delenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    assert "example_swap" in make_plugin_manager(None).scorers(Policy())  # autoloaded...
    monkeypatch.setenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "example_swap" not in make_plugin_manager(None).scorers(Policy())  # ...until switched off


def test_every_hook_has_a_documentation_section() -> None:
    hooks = sorted(name for name in dir(hookspecs) if name.startswith("guardian_"))
    assert hooks, "no hookspecs found"
    sections = set(re.findall(r"^## (guardian_\w+)$", DOCS.read_text(), flags=re.MULTILINE))
    assert sorted(set(hooks) - sections) == []
    assert sorted(sections - set(hooks)) == []  # no docs for hooks that do not exist


# --- per-plugin settings: [plugins.settings.NAME] ---------------------------------------------

READS_SETTINGS = """
from guardian.api import Scorer, hookimpl

class Setting(Scorer):
    name = "setting"
    def __init__(self, points):
        self.points = points
    def score(self, candidate, context):
        table = context.policy.plugins.settings["reader"]
        return float(self.points + len(table["names"]) + table["nested"]["bonus"])

@hookimpl
def guardian_scorers(policy):
    table = policy.plugins.settings["reader"]
    return [Setting(table["points"])]
"""


def settings_policy(tmp_path: Path, plugin_dir: Path, settings: str) -> Path:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f"[scorers]\nsetting = 1.0\n[plugins]\ndirectory = {str(plugin_dir)!r}\nentry_points = false\n"
        + settings
    )
    return policy


def test_a_plugins_settings_reach_it_read_only(plugin_dir: Path, tmp_path: Path) -> None:
    from guardian.loaded import load

    put(plugin_dir / "reader.py", READS_SETTINGS)
    policy = settings_policy(
        tmp_path,
        plugin_dir,
        "[plugins.settings.reader]\npoints = 10\nnames = ['a', 'b']\nnested = { bonus = 0.5 }\n",
    )
    loaded = load(Host(str(tmp_path)), str(policy))
    assert loaded.plugins.errors == []
    [(offered, _weight)] = loaded.selector.ranker.scorers
    assert offered.scorer.score(None, types.SimpleNamespace(policy=loaded.policy)) == 12.5  # type: ignore[arg-type]
    table = loaded.policy.plugins.settings["reader"]
    assert table["names"] == ("a", "b")
    with pytest.raises(TypeError):
        table["points"] = 11  # type: ignore[index]
    with pytest.raises(TypeError):
        table["nested"]["bonus"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        loaded.policy.plugins.settings["other"] = {}  # type: ignore[index]


def test_settings_for_a_plugin_that_is_not_loaded_are_rejected(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(plugin_dir / "reader.py", READS_SETTINGS)
    policy = settings_policy(
        tmp_path,
        plugin_dir,
        "[plugins.settings.reader]\npoints = 1\nnames = []\nnested = { bonus = 0 }\n"
        "[plugins.settings.raeder]\npoints = 2\n",
    )
    assert main(["check", "--policy", str(policy), "--root", str(tmp_path)]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        f"guardian check: {policy}: plugins.settings.raeder: no plugin named 'raeder' is loaded "
        "(loaded: cause, cgroup_largest, constant, kernel_badness, kubelet_qos, reader, rules)\n"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "[plugins.reader]\npoints = 1\n",
            "plugins.reader: unknown key; a plugin's own settings go in a [plugins.settings.reader] table",
        ),
        (
            "[plugins.settings]\nreader = 1\n",
            "plugins.settings.reader: expected a table of that plugin's settings "
            "([plugins.settings.reader]), got a number",
        ),
        ("[plugins]\nsettings = []\n", "plugins.settings: expected a table, got an array"),
    ],
)
def test_plugin_settings_are_tables_under_plugins_settings(text: str, error: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.toml")
    assert str(info.value) == f"policy.toml: {error}"


# --- exclude hooks are listed: an installed package can change who may be killed ----------------

SPARES_NGINX = """
from guardian.api import hookimpl

@hookimpl
def guardian_exclude(candidate, context):
    if candidate.process is not None and candidate.process.comm == "nginx":
        return "the site keeps nginx"
    return None
"""

ENTRY_POINT_MODULE = "guardian_test_entry_point_plugin"


class EntryPointPlugin:
    """An object an entry point's ``module:attribute`` value names."""

    @hookspecs.hookimpl
    def guardian_exclude(self, candidate: object, context: object) -> None:
        return None


@pytest.fixture
def entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """One installed entry point, ``spare = "guardian_test_entry_point_plugin:PLUGIN"``."""
    from importlib import metadata

    from guardian import plugins

    monkeypatch.setitem(sys.modules, ENTRY_POINT_MODULE, types.SimpleNamespace(PLUGIN=EntryPointPlugin()))
    found = [metadata.EntryPoint("spare", f"{ENTRY_POINT_MODULE}:PLUGIN", "guardian")]
    monkeypatch.setattr(plugins, "_entry_points", lambda: found)
    monkeypatch.delenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", raising=False)


@pytest.fixture
def spares_policy(plugin_dir: Path, tmp_path: Path, entry_point: None) -> Path:
    """A policy whose plugins include two exclude hooks: a file's and an entry point's."""
    put(plugin_dir / "spares.py", SPARES_NGINX)
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[plugins]\ndirectory = {str(plugin_dir)!r}\n")
    return policy


def test_check_lists_every_plugin_that_can_exclude(
    spares_policy: Path, plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = spares_policy
    assert main(["check", "--policy", str(policy), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        f"{policy}: plugins that can keep candidates from being killed (guardian_exclude): "
        f"spares (file {plugin_dir}/spares.py), "
        f'spare (entry point spare = "{ENTRY_POINT_MODULE}:PLUGIN"), '
        "cgroup_largest (built-in guardian.scorers.cgroup_largest)"
    )


def test_rank_explain_names_the_exclude_hooks_asked(
    spares_policy: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = spares_policy
    root = Path(__file__).parent / "fixtures" / "v2-systemd"
    argv = ["rank", "--explain", "--interval", "0", "--policy", str(policy), "--root", str(root)]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "plugins asked to exclude candidates (guardian_exclude): "
        f"file:{plugin_dir}/spares.py, entrypoint:spare, cgroup_largest"
    ) in out
    spared = [line for line in out if "the site keeps nginx" in line]
    assert spared and all(line.endswith(f"[file:{plugin_dir}/spares.py]") for line in spared)


def test_an_entry_point_that_names_no_hooks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value naming the hook function itself (or a class, a typo'd attribute holding
    something else) would load, do nothing and say nothing."""
    from importlib import metadata

    from guardian import plugins

    module = types.SimpleNamespace(PLUGIN=EntryPointPlugin(), hook=EntryPointPlugin.guardian_exclude)
    monkeypatch.setitem(sys.modules, ENTRY_POINT_MODULE, module)
    found = [
        metadata.EntryPoint("object", f"{ENTRY_POINT_MODULE}:PLUGIN", "guardian"),
        metadata.EntryPoint("function", f"{ENTRY_POINT_MODULE}:hook", "guardian"),
    ]
    monkeypatch.setattr(plugins, "_entry_points", lambda: found)
    monkeypatch.delenv("GUARDIAN_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    loaded = make_plugin_manager(None)
    assert [info.name for info in loaded.exclude_hooks()] == ["object", "cgroup_largest"]
    assert loaded.errors == [
        f"refused plugin function ({ENTRY_POINT_MODULE}:hook): implements no guardian hook: a plugin "
        "is a module, or an object, whose attributes include @hookimpl functions named after a hook "
        "(guardian_after_kill, guardian_before_kill, guardian_exclude, guardian_scorers)"
    ]


def test_the_worked_example_of_the_docs_runs_as_written(
    secure: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The docs' worked example, the plugin file and the policy as printed, on a recorded host."""
    text = DOCS.read_text()
    section = text[text.index("## A worked example") : text.index("## What a plugin can read")]
    plugin, policy_text = re.findall(r"```(?:python|toml)\n(.*?)```", section, flags=re.DOTALL)
    directory = mkdir(secure / "plugins.d")
    put(directory / "site.py", plugin)
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text + f"\n[plugins]\ndirectory = {str(directory)!r}\n")
    root = Path(__file__).parent / "fixtures" / "v2-systemd"
    assert main(["check", "--policy", str(policy), "--root", str(root)]) == 0
    assert f"site (file {directory}/site.py)" in capsys.readouterr().out
    argv = ["rank", "--json", "--explain", "--interval", "0", "--policy", str(policy), "--root", str(root)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plugin_errors"] == [] and report["failures"] == []
    assert report["weights"]["site_private"] == 0.5
    scores = {c["comm"]: c["scores"]["site_private"] for c in report["candidates"]}
    assert 0 < scores["bash"] < scores["firefox"] < 1000
    assert all(c["uid"] != 114 for c in report["candidates"])
    spared = [e for e in report["excluded"] if e["by"] == f"file:{directory}/site.py"]
    assert {e["comm"] for e in spared} == {"postgres"}
    assert spared[0]["reason"].startswith("uid 114 is spared by the site policy")
    assert any(line.startswith("  site_private: ") and "alone" in line for line in report["explanation"])
