"""make_plugin_manager(): built-in plugins, entry points and the plugin directory, in a function.

Built-in scorers are registered through the same manager as third-party plugins (as pytest's
default_plugins). Third-party plugins come from the ``guardian`` entry-point group (switch off
with GUARDIAN_DISABLE_PLUGIN_AUTOLOAD=1, as PYTEST_DISABLE_PLUGIN_AUTOLOAD does for pytest) and
from ``*.py`` files in the plugin directory (``/etc/guardian/plugins.d`` under the Host root).

guardian runs as root and executes what it finds in the plugin directory, so a local user who
can change what guardian reads there runs code as root. The rule, as sudo and OpenSSH apply it
to a secure path: every component of the path, from ``/`` down to the plugin file, is owned by
root and writable by nobody else (no group or other write bit, sticky or not). It is checked
on the path as given and, component by component, through every symlink met on the way (the
directory holding a symlink is what decides where it points, so it must be safe too). Then:

* the source is read through a file descriptor opened without following a last symlink and
  checked with fstat (owner root, no group/other write, a regular file), so what is compiled is
  what was checked, and a FIFO cannot make the open hang;
* it is compiled from that text and executed into a fresh module: ``__pycache__`` is never
  consulted (a ``.pyc`` whose recorded mtime and size match the source would otherwise run
  instead of it, whoever owns it) and never written;
* the plugin directory is not put on ``sys.path``.

Loading a plugin (import, and pluggy's discovery of its hooks) runs through ``Isolation`` like
every other call into plugin code: anything it raises, ``SystemExit`` included, or a hang past
``IMPORT_BUDGET_S``, refuses that plugin with a sentence naming it. Refusals do not stop the
others from loading; they are returned for the caller to report.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import os
import re
import stat
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Optional, Union

import pluggy

from guardian import hookspecs
from guardian.candidates import Candidate, Exclusion
from guardian.config import Policy, PolicyError
from guardian.decision import KillDecision
from guardian.frozen import frozen
from guardian.isolation import (
    Done,
    Isolation,
    PluginFailure,
    Refusal,
    call_impl,
    call_order,
    exception_text,
    printable,
    value_text,
)
from guardian.ranking import Offered, RankContext
from guardian.text import shown

if TYPE_CHECKING:
    from importlib import metadata

ENTRY_POINT_GROUP = "guardian"
DISABLE_AUTOLOAD_ENV = "GUARDIAN_DISABLE_PLUGIN_AUTOLOAD"

DEFAULT_PLUGINS = (
    "guardian.scorers.cause",
    "guardian.scorers.kernel_badness",
    "guardian.scorers.cgroup_largest",
    "guardian.scorers.kubelet_qos",
    "guardian.scorers.rules",
)

# Loading runs before any policy budget applies and may honestly import large libraries; on a
# host short of memory the page cache is thrashed and a cold import is many times slower than
# usual. The bound is there so that a plugin that never returns from its import cannot stop the
# daemon from starting or from taking a reloaded policy, not to judge speed.
IMPORT_BUDGET_S = 10.0
# A plugin source is a few kilobytes; reading an arbitrarily large regular file into the daemon
# that is supposed to relieve memory pressure would be the wrong way round.
MAX_SOURCE_BYTES = 16 << 20
MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS (include/linux/namei.h)


class InsecurePath(Refusal):
    """A plugin path a local user other than root could change; the message says which part."""


def _unsafe_owner_or_mode(st: os.stat_result) -> Optional[str]:
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def secure_realpath(path: str) -> str:
    """The real path of ``path`` after checking every component on the way, through symlinks;
    ``InsecurePath`` names the first component that root does not control alone.

    The walk is the kernel's: components left to right from ``/``; a symlink's target is
    spliced in where the link was (from ``/`` when absolute); ``..`` goes to the parent of the
    directory reached so far, which was checked on the way down. A symlink's own owner and mode
    mean nothing on Linux (the kernel ignores link permissions); what decides where it points is
    the directory holding it, and that directory was checked before the link was read.
    """
    given = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    pending = [part for part in reversed(given.split("/")) if part]
    current = "/"
    links = 0

    def check(where: str) -> os.stat_result:
        try:
            st = os.lstat(where)
        except OSError as exc:
            raise InsecurePath(f"cannot check {where}: {exc.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            reason = _unsafe_owner_or_mode(st)
            if reason is not None:
                raise InsecurePath(reason if where == given else f"{where} is {reason}")
        return st

    check("/")
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        where = os.path.join(current, part)
        st = check(where)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise InsecurePath(f"more than {MAX_SYMLINKS} symbolic links on the way to {given}")
            try:
                target = os.readlink(where)
            except OSError as exc:  # replaced since the lstat: only root can, but say so
                raise InsecurePath(f"cannot read the link {where}: {exc.strerror}") from None
            if target.startswith("/"):
                current = "/"
            pending.extend(part for part in reversed(target.split("/")) if part)
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            raise InsecurePath(f"{where} is not a directory")
        current = where
    return current


def insecure_reason(path: str) -> Optional[str]:
    """Why a plugin file or directory must not be trusted by a root daemon, or None."""
    try:
        secure_realpath(path)
    except InsecurePath as exc:
        return str(exc)
    return None


def _read_source(path: str) -> tuple[str, bytes]:
    """(real path, contents) of a plugin file, read through a checked file descriptor."""
    real = secure_realpath(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Refusal(f"cannot open {real}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refusal("not a regular file")
        reason = _unsafe_owner_or_mode(st)
        if reason is not None:  # the file opened is not the one checked: changed in between
            raise InsecurePath(reason)
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_SOURCE_BYTES:
                raise Refusal(f"larger than {MAX_SOURCE_BYTES >> 20} MiB: not a plugin source")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return real, b"".join(chunks)


def module_name(path: str) -> str:
    """The module name a plugin file runs under: ``guardian_plugin_<stem>``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return "guardian_plugin_" + re.sub(r"\W", "_", stem)


def _exec_file(path: str, name: str) -> types.ModuleType:
    """Read, compile and execute a plugin file into a fresh module (no bytecode cache)."""
    real, source = _read_source(path)
    module = types.ModuleType(name)
    module.__file__ = real
    # dataclasses (Python 3.9-3.11) look the defining module up in sys.modules
    sys.modules[name] = module
    try:
        code = compile(source, real, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException as exc:  # SystemExit at import is a broken plugin, not a request to exit
        if sys.modules.get(name) is module:
            del sys.modules[name]
        raise Refusal(f"import failed: {exception_text(exc)}") from None
    return module


def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _trial_register(plugin: object, name: str) -> None:
    """Register ``plugin`` on a throwaway manager, inside the worker: pluggy's discovery reads
    the plugin object (``dir()``, which a module's ``__dir__`` answers; attributes; signatures),
    so a plugin that raises or hangs there, or names a hook guardian does not define, is
    refused before the real manager sees it. Hook
    wrappers are refused: guardian calls each implementation alone, so a wrapper would wrap
    nothing (and return a generator where an answer is due)."""
    trial = _new_manager()
    try:
        trial.register(plugin, name=name)
        # a hook guardian does not define (a typo) is found here too; pluggy's message shows
        # the plugin's repr, which is plugin code
        trial.check_pending()
    except Exception as exc:  # pluggy's verdict: an unknown hook, arguments the hook lacks
        raise Refusal(f"cannot register: {exception_text(exc)}") from None
    callers = trial.get_hookcallers(plugin) or []
    if not callers:
        # an entry point that names a function, a class or a misspelt attribute: it would load,
        # do nothing and say nothing
        hooks = ", ".join(name for name in dir(hookspecs) if name.startswith("guardian_"))
        raise Refusal(
            f"implements no guardian hook: a plugin is a module, or an object, whose attributes "
            f"include @hookimpl functions named after a hook ({hooks})"
        )
    for caller in callers:
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                raise Refusal(
                    f"{caller.name} is a hook wrapper; guardian calls each plugin's "
                    "implementation on its own, so wrappers are not supported"
                )


def exclusion_reason(answer: object, candidate: Candidate) -> Optional[str]:
    """A ``guardian_exclude`` answer as a printable reason, None for no opinion; ``Refusal``
    for anything else. Runs inside the worker: it touches the plugin's object."""
    return _reason(answer, f" for {candidate.key}", "an exclusion")


def _reason(answer: object, about: str, what: str) -> Optional[str]:
    """A hook's reason (``what``: an exclusion, a veto) printable, or None; ``Refusal`` for an
    answer that is neither a non-empty ``str`` nor None."""
    if answer is None:
        return None
    if not isinstance(answer, str):
        raise Refusal(f"returned {value_text(answer)}{about}: a reason is a str, or None")
    text = str.__str__(answer)  # a plain str, whatever subclass the plugin used
    if not text.strip():
        raise Refusal(f"returned an empty reason{about}: {what} must say why")
    return printable(text)


def _offered(answer: object, plugin: str) -> list[Union[Offered, str]]:
    """A ``guardian_scorers`` answer, each element checked (a reason for the bad ones)."""
    if not isinstance(answer, (list, tuple)):
        raise Refusal(f"returned {value_text(answer)}, not a list of scorers")
    found: list[Union[Offered, str]] = []
    for item in list(answer):
        try:
            found.append(Offered.of(item, plugin))
        except Refusal as exc:
            found.append(str(exc))
        except BaseException as exc:  # its name or kinds is a property that raised: that one goes
            found.append(f"reading a scorer's name and kinds raised {exception_text(exc)}")
    return found


@frozen
class PluginInfo:
    """A loaded plugin: the ``name`` its ``[plugins.settings.NAME]`` table goes by (a built-in's
    module name, an entry point's name, a plugin file's name without ``.py``), the name pluggy
    registered it under (``entrypoint:NAME``, ``file:PATH``: what reports call it), and where
    it came from, for the operator."""

    name: str
    registered: str
    source: str

    def describe(self) -> str:
        return f"{shown(self.name)} ({shown(self.source)})"


class Exclusions(NamedTuple):
    """What the plugins' ``guardian_exclude`` hooks made of one ranking's candidates."""

    kept: list[Candidate]
    excluded: list[Exclusion]
    failures: list[PluginFailure]
    asked: list[str]  # the registered names of the plugins asked, in the order asked


@dataclass
class Plugins:
    """A plugin manager plus what could not be loaded, and why. Every call into plugin code
    goes through ``isolation``, which remembers the plugins whose runs are stuck."""

    manager: pluggy.PluginManager
    errors: list[str] = field(default_factory=list)
    isolation: Isolation = field(default_factory=Isolation)
    loaded: list[PluginInfo] = field(default_factory=list)  # in the order registered

    def check_settings(self, policy: Policy) -> None:
        """Every ``[plugins.settings.NAME]`` names a loaded plugin: settings for a plugin that
        is not there (misspelt, uninstalled, refused) would silently do nothing."""
        names = sorted({info.name for info in self.loaded})
        for name in policy.plugins.settings:
            if name not in names:
                raise PolicyError(
                    policy.source,
                    f"plugins.settings.{name}",
                    f"no plugin named {name!r} is loaded (loaded: {', '.join(names)})" + self.problems(),
                )

    def exclude_hooks(self) -> list[PluginInfo]:
        """The loaded plugins that implement ``guardian_exclude``, in the order they are asked:
        each of them can keep any candidate from being killed."""
        return self.implementing("guardian_exclude")

    def implementing(self, hook: str) -> list[PluginInfo]:
        """The loaded plugins that implement ``hook``, in the order they are called."""
        by_name = {info.registered: info for info in self.loaded}
        asked = [impl.plugin_name for impl in call_order(getattr(self.manager.hook, hook))]
        return [by_name.get(name, PluginInfo(name, name, "registered")) for name in asked]

    def scorers(self, policy: Policy) -> dict[str, Offered]:
        """Every scorer any plugin offers, by name. Each plugin's ``guardian_scorers`` is called
        in pluggy's order under the policy's budget; when two plugins offer one name, the plugin
        registered first keeps it (built-ins, then entry points, then the plugin directory), so
        a third-party plugin cannot take a built-in scorer's place."""
        budget_s = policy.plugins.budget_ms / 1000.0
        answers: list[tuple[str, list[Union[Offered, str]]]] = []
        for impl in call_order(self.manager.hook.guardian_scorers):
            plugin = impl.plugin_name

            def work(impl: pluggy.HookImpl = impl, plugin: str = plugin) -> list[Union[Offered, str]]:
                return _offered(call_impl(impl, {"policy": policy}), plugin)

            result = self.isolation.run(plugin, "guardian_scorers", budget_s, work)
            if isinstance(result, Done):
                answers.append((plugin, result.value))
            else:
                self.errors.append(result.describe())
        registered = {name: i for i, (name, _) in enumerate(self.manager.list_name_plugin())}
        answers.sort(key=lambda answer: registered.get(answer[0], len(registered)))
        found: dict[str, Offered] = {}
        for plugin, offers in answers:
            for offered in offers:
                if isinstance(offered, str):
                    self.errors.append(
                        f"plugin {shown(plugin)}, guardian_scorers: {offered}; that scorer is not offered"
                    )
                elif offered.name in found:
                    self.errors.append(
                        f"plugin {shown(plugin)}: scorer name {offered.name!r} is already taken by "
                        f"plugin {shown(found[offered.name].plugin)}; ignored"
                    )
                else:
                    found[offered.name] = offered
        return found

    def resolve(self, policy: Policy) -> list[tuple[Offered, float]]:
        """The policy's [scorers] as (scorer, weight); an unknown name is a policy error."""
        available = self.scorers(policy)
        chosen = []
        for name, weight in policy.scorers.items():
            if name not in available:
                known = ", ".join(sorted(available)) or "none"
                raise PolicyError(
                    policy.source,
                    f"scorers.{name}",
                    f"no scorer named {name!r} (available: {known})" + self.problems(),
                )
            chosen.append((available[name], weight))
        return chosen

    def problems(self) -> str:
        """The plugins refused or failing so far, as the tail of an error about a name that no
        plugin has: a refused plugin (insecure, raised at import) is often the one that would
        have had it, and "no scorer named X" alone sends the operator looking in the wrong
        place. Empty when every plugin loaded."""
        if not self.errors:
            return ""
        return "; plugin problems that may explain it: " + "; ".join(self.errors)

    def exclude(self, candidates: Sequence[Candidate], context: RankContext, budget_ms: float) -> Exclusions:
        """Ask every plugin's ``guardian_exclude`` about every candidate, in pluggy's order.

        Budget: each plugin gets ``budget_ms`` for its answers about all of one ranking's
        candidates. A plugin that fails (raises, overruns, answers something that is not a
        ``str`` or None) is reported and not asked about the rest; the answers it gave before
        stand, since an exclusion can only spare a candidate.
        """
        budget_s = budget_ms / 1000.0
        reasons: list[list[tuple[str, str]]] = [[] for _ in candidates]
        failures: list[PluginFailure] = []
        asked: list[str] = []
        for impl in call_order(self.manager.hook.guardian_exclude):
            asked.append(impl.plugin_name)
            answers: list[Optional[str]] = []

            def work(impl: pluggy.HookImpl = impl, answers: list[Optional[str]] = answers) -> None:
                for candidate in candidates:
                    answer = call_impl(impl, {"candidate": candidate, "context": context})
                    answers.append(exclusion_reason(answer, candidate))

            result = self.isolation.run(impl.plugin_name, "guardian_exclude", budget_s, work)
            if isinstance(result, PluginFailure):
                failures.append(result)
            # a copy: after an overrun the worker may still be appending
            for i, reason in enumerate(list(answers)):
                if reason is not None:
                    reasons[i].append((impl.plugin_name, reason))
        kept: list[Candidate] = []
        excluded: list[Exclusion] = []
        for candidate, given in zip(candidates, reasons):
            if given:
                excluded.append(Exclusion(candidate, "; ".join(r for _, r in given), given[0][0]))
            else:
                kept.append(candidate)
        return Exclusions(kept, excluded, failures, asked)

    def veto(self, decision: KillDecision, budget_ms: float) -> tuple[Optional[Veto], list[PluginFailure]]:
        """Ask every plugin's ``guardian_before_kill`` about ``decision``, in pluggy's order,
        each under ``budget_ms``, until one vetoes. A failure (a raise, an overrun, an answer
        that is neither None nor a non-empty ``str``) does not count as a veto: fail open."""
        failures: list[PluginFailure] = []
        for impl in call_order(self.manager.hook.guardian_before_kill):

            def work(impl: pluggy.HookImpl = impl) -> Optional[str]:
                return veto_reason(call_impl(impl, {"decision": decision}))

            result = self.isolation.run(impl.plugin_name, "guardian_before_kill", budget_ms / 1000.0, work)
            if isinstance(result, PluginFailure):
                failures.append(result)
            elif result.value is not None:
                return Veto(impl.plugin_name, result.value), failures
        return None, failures

    def tells_after_kill(self) -> bool:
        """Some plugin implements ``guardian_after_kill``."""
        return bool(self.manager.hook.guardian_after_kill.get_hookimpls())


@frozen
class Veto:
    """A plugin's ``guardian_before_kill`` vetoed a kill: which plugin, and why (printable)."""

    plugin: str
    reason: str


def veto_reason(answer: object) -> Optional[str]:
    """A ``guardian_before_kill`` answer as guardian keeps it: None, or the reason printable and
    bounded; ``Refusal`` for anything else. Runs inside the worker (``str`` subclasses run
    plugin code)."""
    return _reason(answer, "", "a veto")


def _register(
    plugins: Plugins, name: str, label: str, load: Callable[[], object], budget_s: float, info: PluginInfo
) -> None:
    """Load a plugin object and register it, or record why not."""

    def work() -> object:
        plugin = load()
        _trial_register(plugin, name)
        return plugin

    result = plugins.isolation.run(name, "import", budget_s, work)
    if not isinstance(result, Done):
        plugins.errors.append(f"refused plugin {label}: {result.reason}")
        return
    try:
        plugins.manager.register(result.value, name=name)
    except Exception as exc:  # a name already taken; the trial passed the rest of pluggy's checks
        plugins.errors.append(f"refused plugin {label}: {exception_text(exc)}")
        return
    plugins.loaded.append(info)


def _load_directory(plugins: Plugins, directory: str, budget_s: float) -> None:
    if not os.path.isdir(directory):
        return
    shown_dir = shown(directory)
    try:
        real = secure_realpath(directory)
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except InsecurePath as exc:
        plugins.errors.append(f"refused plugin directory {shown_dir}: {exc}")
        return
    except OSError as exc:
        plugins.errors.append(f"refused plugin directory {shown_dir}: cannot open: {exc.strerror}")
        return
    try:
        reason = _unsafe_owner_or_mode(os.fstat(fd))
        entries = sorted(os.listdir(fd)) if reason is None else []
    finally:
        os.close(fd)
    if reason is not None:  # replaced between the walk and the open
        plugins.errors.append(f"refused plugin directory {shown_dir}: {reason}")
        return
    for entry in entries:
        # *.py as a shell glob matches it: a dot file (an editor's lock or backup) is not a plugin
        if not entry.endswith(".py") or entry.startswith("."):
            continue
        path = os.path.join(directory, entry)
        label = shown(path)
        name = module_name(path)
        load = functools.partial(_exec_file, os.path.join(real, entry), name)
        info = PluginInfo(entry[: -len(".py")], f"file:{label}", f"file {label}")
        _register(plugins, f"file:{label}", label, load, budget_s, info)
        if plugins.manager.get_plugin(f"file:{label}") is None and sys.modules.get(name) is not None:
            # refused after its module was made (or still stuck importing): not a plugin
            sys.modules.pop(name, None)


def _itself(obj: object) -> object:
    return obj


def _declares_group(path: str) -> bool:
    """Whether the entry_points.txt at ``path`` may declare the guardian group: a line with a
    "[" and the group's name (a superset of the section header importlib.metadata reads, so the
    console script ``guardian = guardian.cli:main`` does not count). A file it cannot read as
    importlib.metadata would (not UTF-8; an error it would not pass over) counts: then
    importlib.metadata itself is asked."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return False  # what importlib.metadata's read_text passes over as "no entry points"
    except OSError:
        return True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any("[" in line and ENTRY_POINT_GROUP in line for line in text.splitlines())


def _may_have_entry_points() -> bool:
    """False only where importlib.metadata would find no entry point in the guardian group,
    decided without importing it: every directory on sys.path is listed as its finder lists
    it (``*.dist-info`` and ``*.egg-info`` children, and ``EGG-INFO`` in a ``*.egg``), and
    none has an entry_points.txt that declares the group. A sys.path entry that exists but is
    no directory it can list (a zip file), or another meta-path finder that finds
    distributions, answers True, and importlib.metadata looks itself."""
    for finder in sys.meta_path:
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_distributions"):
            return True
    entries: list[object] = list(sys.path)  # str by contract, but anyone may append anything
    for entry in entries:
        if not isinstance(entry, str):
            return True
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.exists(root):
                return True
            continue
        in_egg = os.path.basename(root).lower().endswith(".egg")
        for child in children:
            low = child.lower()
            if not (low.endswith((".dist-info", ".egg-info")) or (in_egg and low == "egg-info")):
                continue
            if _declares_group(os.path.join(root, child, "entry_points.txt")):
                return True
    return False


def _entry_points() -> list[metadata.EntryPoint]:
    # Most machines have no guardian plugin installed: then importlib.metadata (and the email,
    # zipfile and importlib.resources packages it imports) is not imported at all, about 14 ms
    # of a start's CPU and 2 MiB of its RSS (bench/startup.py).
    if not _may_have_entry_points():
        return []
    from importlib import metadata  # noqa: PLC0415

    if sys.version_info >= (3, 10):
        found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    else:  # Python 3.9: a dict of groups
        found = list(metadata.entry_points().get(ENTRY_POINT_GROUP, ()))
    return sorted(found, key=lambda ep: ep.name)


def _entry_point_source(ep: metadata.EntryPoint) -> str:
    """``entry point NAME = "VALUE" (package DIST VERSION)``: which installed package put it there."""
    source = f'entry point {ep.name} = "{ep.value}"'
    dist = getattr(ep, "dist", None)  # Python 3.10+
    if dist is not None:
        source += f" (package {dist.metadata['Name']} {dist.version})"
    return source


def _load_entry_points(plugins: Plugins, budget_s: float) -> None:
    for ep in _entry_points():
        info = PluginInfo(ep.name, f"entrypoint:{ep.name}", _entry_point_source(ep))
        _register(plugins, f"entrypoint:{ep.name}", f"{ep.name} ({ep.value})", ep.load, budget_s, info)


def make_plugin_manager(
    plugin_dir: Optional[str] = None,
    entry_points: bool = True,
    extra: Sequence[object] = (),
    import_budget_s: float = IMPORT_BUDGET_S,
) -> Plugins:
    """Build the plugin manager: built-ins, then entry points, then the plugin directory, then
    ``extra`` objects (tests register plugins this way). All but the built-ins are loaded
    through ``Isolation`` with ``import_budget_s`` each."""
    manager = _new_manager()
    plugins = Plugins(manager)
    for name in DEFAULT_PLUGINS:
        short = name.rsplit(".", 1)[1]
        manager.register(importlib.import_module(name), name=short)
        plugins.loaded.append(PluginInfo(short, short, f"built-in {name}"))
    if entry_points and not os.environ.get(DISABLE_AUTOLOAD_ENV):
        _load_entry_points(plugins, import_budget_s)
    if plugin_dir is not None:
        _load_directory(plugins, plugin_dir, import_budget_s)
    for i, obj in enumerate(extra):
        # a module's own name, else its type's: no attribute lookup that could run plugin code
        what = obj.__name__ if isinstance(obj, types.ModuleType) else type(obj).__name__
        name = f"extra:{i}:{what}"
        info = PluginInfo(what, name, "given to make_plugin_manager")
        _register(plugins, name, name, functools.partial(_itself, obj), import_budget_s, info)
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
            name = plugins.manager.get_name(exc.plugin) or type(exc.plugin).__name__
            plugins.manager.unregister(exc.plugin)
            plugins.loaded = [info for info in plugins.loaded if info.registered != name]
            plugins.errors.append(f"refused plugin {name}: {exc}")
