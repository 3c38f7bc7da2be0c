"""TOML policy -> typed Policy. Every mistake is an error naming file, key and reason.

    /etc/guardian.toml: prefer[1].comm: bad regular expression: missing ), unterminated subpattern

Unknown keys are errors (a misspelt key would otherwise silently do nothing), and so are wrong
types, out-of-range numbers and bad regular expressions. ``load_policy`` never returns a
half-valid policy: either the whole file is good or PolicyError says what is wrong.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from guardian.errors import GuardianError
from guardian.rules import FIELDS, Rule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

DEFAULT_SCORERS: Mapping[str, float] = {"kernel_badness": 1.0, "rules": 1.0}
DEFAULT_PREFER_POINTS = 300.0  # earlyoom's --prefer / --avoid adjustment, in oom_score units
DEFAULT_SCORER_BUDGET_MS = 250.0


class PolicyError(GuardianError):
    """The policy file is invalid. ``str()`` is the sentence for the operator."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class PluginSettings:
    entry_points: bool = True  # load plugins from the "guardian" entry-point group
    directory: Optional[str] = None  # plugin directory; None: the default under the Host root
    budget_ms: float = DEFAULT_SCORER_BUDGET_MS  # per scorer, per ranking


@dataclass(frozen=True)
class Policy:
    source: str = "<defaults>"
    scorers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SCORERS))
    protect: tuple[Rule, ...] = ()
    ignore: tuple[Rule, ...] = ()
    prefer: tuple[Rule, ...] = ()
    avoid: tuple[Rule, ...] = ()
    plugins: PluginSettings = field(default_factory=PluginSettings)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


class Table:
    """A TOML table being validated; tracks which keys were used so leftovers are errors."""

    def __init__(self, source: str, path: str, data: Mapping[str, Any]) -> None:
        self.source = source
        self.path = path
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> PolicyError:
        return PolicyError(self.source, self.key(name), reason)

    def has(self, name: str) -> bool:
        self.used.add(name)  # asked about, so a known key here
        return name in self.data

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        if name not in self.data:
            self.used.add(name)
            return default
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise self.error(name, f"expected a number from {lo:g} to {hi:g}, got {_show(value)}")
        if not lo <= value <= hi:
            raise self.error(name, f"expected a number from {lo:g} to {hi:g}, got {value:g}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self.data:
            self.used.add(name)
            return default
        value = self.raw(name)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_show(value)}")
        return value

    def string(self, name: str, default: Optional[str]) -> Optional[str]:
        if name not in self.data:
            self.used.add(name)
            return default
        value = self.raw(name)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_type_name(value)}")
        return value

    def table(self, name: str) -> Table:
        value = self.raw(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table, got {_type_name(value)}")
        return Table(self.source, self.key(name), value)

    def tables(self, name: str) -> list[Table]:
        """An array of tables (``[[name]]``)."""
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(name, f"expected an array of tables ([[{name}]]), got {_type_name(value)}")
        return [Table(self.source, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def finish(self, allowed_hint: str = "") -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = allowed_hint or ", ".join(sorted(self.used))
            raise self.error(unknown[0], f"unknown key (known here: {known})")


def compile_regex(table: Table, name: str) -> re.Pattern[str]:
    value = table.raw(name)
    if isinstance(value, int) and not isinstance(value, bool) and name == "uid":
        return re.compile(f"^{value}$")
    if not isinstance(value, str):
        raise table.error(name, f"expected a regular expression (a string), got {_type_name(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise table.error(name, f"bad regular expression: {exc}") from None


def parse_rule(table: Table, kind: str) -> Rule:
    patterns = {name: compile_regex(table, name) for name in FIELDS if table.has(name)}
    points = 0.0
    if kind in ("prefer", "avoid"):
        points = table.number("points", DEFAULT_PREFER_POINTS, 0, 100_000)
    table.finish(", ".join(FIELDS) + (", points" if kind in ("prefer", "avoid") else ""))
    if not patterns:
        raise PolicyError(
            table.source, table.path, f"a {kind} rule needs at least one of: {', '.join(FIELDS)}"
        )
    return Rule(kind=kind, patterns=patterns, points=points, label=table.path)


def parse_scorers(table: Table) -> dict[str, float]:
    weights: dict[str, float] = {}
    for name in list(table.data):
        weights[name] = table.number(name, 1.0, -1000, 1000)
    if not weights:
        raise PolicyError(table.source, table.path, "name at least one scorer, e.g. kernel_badness = 1.0")
    return weights


def policy_from_dict(data: Mapping[str, Any], source: str) -> Policy:
    top = Table(source, "", data)
    scorers = parse_scorers(top.table("scorers")) if top.has("scorers") else dict(DEFAULT_SCORERS)
    rules = {
        kind: tuple(parse_rule(t, kind) for t in top.tables(kind))
        for kind in ("protect", "ignore", "prefer", "avoid")
    }
    plugins_table = top.table("plugins")
    plugins = PluginSettings(
        entry_points=plugins_table.boolean("entry_points", True),
        directory=plugins_table.string("directory", None),
        budget_ms=plugins_table.number("budget_ms", DEFAULT_SCORER_BUDGET_MS, 1, 60_000),
    )
    plugins_table.finish()
    top.finish()
    return Policy(
        source=source,
        scorers=scorers,
        protect=rules["protect"],
        ignore=rules["ignore"],
        prefer=rules["prefer"],
        avoid=rules["avoid"],
        plugins=plugins,
    )


def parse_policy(text: str, source: str) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, "", f"not valid TOML: {exc}") from None
    return policy_from_dict(data, source)


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise PolicyError(path, "", "no such file") from None
    except PermissionError:
        raise PolicyError(path, "", "permission denied") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(path, "", f"not UTF-8 text: {exc.reason}") from None
    except IsADirectoryError:
        raise PolicyError(path, "", "is a directory, not a policy file") from None
    return parse_policy(text, path)
