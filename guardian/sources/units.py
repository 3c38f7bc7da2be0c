"""systemd unit files: which units hand their cgroup to systemd-oomd.

systemd-oomd kills only in the cgroups of units that set ``ManagedOOMSwap=kill`` or
``ManagedOOMMemoryPressure=kill`` (systemd.resource-control(5)). PID 1 tells systemd-oomd about
them over varlink (io.systemd.ManagedOOM) and nothing in the cgroup tree records the setting,
so the only way to know without D-Bus is the one PID 1 itself uses: the unit file and its
drop-ins, found in the directories ``Host.unit_dirs()`` names (set-property and transient units
included). Units are found from the cgroup tree (a unit's cgroup is named after it), so only the
files of units that exist are read.

Pure: ``parse_managed_oom`` (one file's text) and ``dropin_dir_names`` (systemd.unit(5)'s
drop-in hierarchy); the reader ``read_managed`` lists each unit directory once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Optional

from guardian.frozen import frozen

SETTINGS = ("ManagedOOMSwap", "ManagedOOMMemoryPressure")
UNIT_TYPES = ("slice", "service", "scope")  # the unit types that have a cgroup of their own
MAX_UNIT_FILE_BYTES = 1 << 20  # a unit file is a few KiB; anything larger is not read whole
_NOT_SETTINGS = ("Unit", "Install")  # sections that hold no resource-control setting


@frozen
class Managed:
    """A cgroup systemd-oomd acts on: its unit and which of its settings say ``kill``."""

    cgroup: str  # "/user.slice/user-1000.slice/user@1000.service"
    unit: str  # "user@1000.service"
    settings: tuple[str, ...]  # ("ManagedOOMMemoryPressure",)


def parse_managed_oom(text: str, into: dict[str, str]) -> None:
    """Apply one unit file's or drop-in's ManagedOOM* assignments to ``into`` (setting -> value),
    as systemd does: the last assignment wins, an empty one resets to the default ("auto")."""
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section in _NOT_SETTINGS or section.startswith("X-"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in SETTINGS:
            continue
        value = value.strip().lower()
        if value:
            into[key] = value
        else:
            into.pop(key, None)


def unit_of_cgroup(cgroup: str) -> Optional[str]:
    """The unit whose cgroup this is (its last component), None for a cgroup no unit names."""
    if cgroup.strip("/") == "":
        return "-.slice"  # the root slice's cgroup is the root
    name = cgroup.rstrip("/").rsplit("/", 1)[-1]
    stem, dot, kind = name.rpartition(".")
    return name if dot and stem and kind in UNIT_TYPES else None


def template_of(unit: str) -> Optional[str]:
    """``user@1000.service`` -> ``user@.service``; None for a unit that is no template's instance."""
    stem, _, kind = unit.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return f"{prefix}@.{kind}" if at and instance else None


def dropin_dir_names(unit: str) -> list[str]:
    """The drop-in directories systemd reads for ``unit``, least specific first (systemd.unit(5)):
    ``service.d``, then one per dash prefix (``a-.service.d``, ``a-b-.service.d``), the template's
    (``user@.service.d``), and the unit's own."""
    stem, _, kind = unit.rpartition(".")
    names = [f"{kind}.d"]
    prefix = stem.partition("@")[0]
    if stem != "-":
        parts = prefix.split("-")
        names += ["-".join(parts[:i]) + f"-.{kind}.d" for i in range(1, len(parts)) if parts[i - 1]]
    template = template_of(unit)
    if template is not None:
        names.append(f"{template}.d")
    names.append(f"{unit}.d")
    return list(dict.fromkeys(names))


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return os.fsdecode(f.read(MAX_UNIT_FILE_BYTES))
    except OSError:
        return ""  # vanished, unreadable, a dangling link (a masked unit is /dev/null: empty)


class UnitFiles:
    """The unit directories, each listed once; ``settings(unit)`` reads only that unit's files."""

    def __init__(self, directories: Iterable[str]) -> None:
        self.directories = list(directories)  # highest precedence first
        self._listed: dict[str, frozenset[str]] = {}

    def _names(self, directory: str) -> frozenset[str]:
        names = self._listed.get(directory)
        if names is None:
            try:
                names = frozenset(os.listdir(directory))
            except OSError:
                names = frozenset()
            self._listed[directory] = names
        return names

    def settings(self, unit: str) -> dict[str, str]:
        """The unit's ManagedOOM* settings as PID 1 would load them: its unit file (or its
        template's) from the first directory that has it, then its drop-ins ordered by file name
        (for one file name, the directory of highest precedence wins)."""
        found: dict[str, str] = {}
        for name in (unit, template_of(unit)):
            if name is None:
                continue
            directory = next((d for d in self.directories if name in self._names(d)), None)
            if directory is not None:
                parse_managed_oom(_read(os.path.join(directory, name)), found)
                break
        dropins: dict[str, str] = {}  # file name -> path; the dir names go least specific first
        for dir_name in dropin_dir_names(unit):
            for directory in reversed(self.directories):
                if dir_name not in self._names(directory):
                    continue
                sub = os.path.join(directory, dir_name)
                for conf in self._names(sub):
                    if conf.endswith(".conf"):
                        dropins[conf] = os.path.join(sub, conf)
        for conf in sorted(dropins):
            parse_managed_oom(_read(dropins[conf]), found)
        return found


def managed_of(cgroups: Iterable[str], settings: Mapping[str, Mapping[str, str]]) -> list[Managed]:
    """Pure: the cgroups whose unit's settings (unit -> setting -> value) hand them to
    systemd-oomd (a setting equal to ``kill``)."""
    out = []
    for cgroup in cgroups:
        unit = unit_of_cgroup(cgroup)
        if unit is None:
            continue
        kills = tuple(s for s in SETTINGS if settings.get(unit, {}).get(s) == "kill")
        if kills:
            out.append(Managed(cgroup if cgroup.startswith("/") else "/" + cgroup, unit, kills))
    return out


def read_managed(unit_dirs: Iterable[str], cgroups: Iterable[str]) -> list[Managed]:
    """The cgroups (of those given, with the root "/") systemd-oomd kills in, by their units'
    files in ``unit_dirs`` (``Host.unit_dirs()``)."""
    files = UnitFiles(unit_dirs)
    paths = ["/", *cgroups]
    units = {u for u in map(unit_of_cgroup, paths) if u is not None}
    return managed_of(paths, {unit: files.settings(unit) for unit in units})
