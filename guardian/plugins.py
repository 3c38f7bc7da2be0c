"""make_plugin_manager(): built-in plugins, entry points and the plugin directory, in a function.

Built-in scorers are registered through the same manager as third-party plugins (as pytest's
default_plugins). Third-party plugins come from the ``guardian`` entry-point group (switch off
with GUARDIAN_DISABLE_PLUGIN_AUTOLOAD=1, as PYTEST_DISABLE_PLUGIN_AUTOLOAD does for pytest) and
from ``*.py`` files in the plugin directory (``/etc/guardian/plugins.d`` under the Host root).

guardian runs as root, so a plugin file anyone else can change is a privilege escalation: a
plugin file, or the directory holding it, that is not owned by root or is writable by group or
others is refused with an error naming it. A plugin that fails to import is refused the same
way. Refusals do not stop the others from loading; they are returned for the caller to report.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Optional

import pluggy

from guardian import hookspecs
from guardian.config import Policy, PolicyError
from guardian.hookspecs import Scorer

ENTRY_POINT_GROUP = "guardian"
DISABLE_AUTOLOAD_ENV = "GUARDIAN_DISABLE_PLUGIN_AUTOLOAD"

DEFAULT_PLUGINS = (
    "guardian.scorers.kernel_badness",
    "guardian.scorers.cgroup_largest",
    "guardian.scorers.kubelet_qos",
    "guardian.scorers.rules",
)


@dataclass
class Plugins:
    """A plugin manager plus what could not be loaded, and why."""

    manager: pluggy.PluginManager
    errors: list[str] = field(default_factory=list)

    def scorers(self, policy: Policy) -> dict[str, tuple[Scorer, str]]:
        """Every scorer any plugin offers, by name, with the plugin that offered it."""
        found: dict[str, tuple[Scorer, str]] = {}
        for impl in self.manager.hook.guardian_scorers.get_hookimpls():
            try:
                offered: object = impl.function(**dict.fromkeys(impl.argnames, policy))
                if not isinstance(offered, (list, tuple)):
                    raise TypeError(f"returned {offered!r}, not a list of scorers")
            except Exception as exc:
                self.errors.append(
                    f"plugin {impl.plugin_name}: guardian_scorers raised {type(exc).__name__}: {exc}"
                )
                continue
            for scorer in list(offered or []):
                if not isinstance(scorer, Scorer) or not scorer.name:
                    self.errors.append(
                        f"plugin {impl.plugin_name}: guardian_scorers returned {scorer!r}, not a named Scorer"
                    )
                    continue
                if scorer.name in found:
                    self.errors.append(
                        f"plugin {impl.plugin_name}: scorer name {scorer.name!r} is already taken by "
                        f"plugin {found[scorer.name][1]}; ignored"
                    )
                    continue
                found[scorer.name] = (scorer, impl.plugin_name)
        return found

    def resolve(self, policy: Policy) -> list[tuple[Scorer, float]]:
        """The policy's [scorers] as (scorer, weight); an unknown name is a policy error."""
        available = self.scorers(policy)
        chosen = []
        for name, weight in policy.scorers.items():
            if name not in available:
                known = ", ".join(sorted(available)) or "none"
                raise PolicyError(
                    policy.source, f"scorers.{name}", f"no scorer named {name!r} (available: {known})"
                )
            chosen.append((available[name][0], weight))
        return chosen


def insecure_reason(path: str) -> Optional[str]:
    """Why a plugin file or directory must not be trusted by a root daemon, or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _load_file(path: str) -> ModuleType:
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"guardian_plugin_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load_directory(plugins: Plugins, directory: str) -> None:
    if not os.path.isdir(directory):
        return
    reason = insecure_reason(directory)
    if reason is not None:
        plugins.errors.append(f"refused plugin directory {directory}: {reason}")
        return
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".py"):
            continue
        path = os.path.join(directory, entry)
        reason = insecure_reason(path)
        if reason is not None:
            plugins.errors.append(f"refused plugin {path}: {reason}")
            continue
        try:
            module = _load_file(path)
            plugins.manager.register(module, name=f"file:{path}")
        except Exception as exc:
            plugins.errors.append(f"refused plugin {path}: import failed: {type(exc).__name__}: {exc}")


def _load_entry_points(plugins: Plugins) -> None:
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            plugins.manager.register(ep.load(), name=f"entrypoint:{ep.name}")
        except Exception as exc:
            plugins.errors.append(f"refused plugin {ep.name} ({ep.value}): {type(exc).__name__}: {exc}")


def make_plugin_manager(
    plugin_dir: Optional[str] = None,
    entry_points: bool = True,
    extra: Sequence[object] = (),
) -> Plugins:
    """Build the plugin manager: built-ins, then entry points, then the plugin directory, then
    ``extra`` objects (tests register plugins this way)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager)
    for name in DEFAULT_PLUGINS:
        manager.register(importlib.import_module(name), name=name.rsplit(".", 1)[1])
    if entry_points and not os.environ.get(DISABLE_AUTOLOAD_ENV):
        _load_entry_points(plugins)
    if plugin_dir is not None:
        _load_directory(plugins, plugin_dir)
    for i, obj in enumerate(extra):
        manager.register(obj, name=f"extra:{i}:{getattr(obj, '__name__', type(obj).__name__)}")
    _check_pending(plugins)
    return plugins


def _check_pending(plugins: Plugins) -> None:
    """A hook implementation whose name matches no hookspec (a typo) fails loudly, as in pytest;
    the offending plugin is unregistered and named instead of taking the daemon down."""
    while True:
        try:
            plugins.manager.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = plugins.manager.get_name(exc.plugin) or repr(exc.plugin)
            plugins.manager.unregister(exc.plugin)
            plugins.errors.append(f"refused plugin {name}: {exc}")
