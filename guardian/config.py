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
from guardian.kinds import PsiKind, RuleAction
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
class Amount:
    """A threshold given as a percentage of some total ("10%") or in bytes ("512M", 1048576)."""

    pct: Optional[float] = None
    bytes: Optional[int] = None

    def resolve(self, total: int) -> int:
        if self.pct is not None:
            return int(total * self.pct / 100)
        return self.bytes or 0

    def __str__(self) -> str:
        return f"{self.pct:g}%" if self.pct is not None else f"{self.bytes} bytes"


@dataclass(frozen=True)
class Levels:
    """A TERM level and a KILL level for one quantity that runs low (kill <= term)."""

    term: Optional[Amount] = None
    kill: Optional[Amount] = None

    @property
    def enabled(self) -> bool:
        return self.term is not None or self.kill is not None


@dataclass(frozen=True)
class PsiRule:
    """Live ``kind`` stall rate at or above ``stall_pct`` for ``duration_s`` seconds."""

    kind: PsiKind = "full"
    stall_pct: float = 40.0
    duration_s: float = 5.0


@dataclass(frozen=True)
class EventsRule:
    """memory.events counters growing faster than these rates (events per second)."""

    high_per_s: Optional[float] = None
    max_per_s: Optional[float] = None
    oom_per_s: Optional[float] = None

    def limits(self) -> dict[str, float]:
        out = {"high": self.high_per_s, "max": self.max_per_s, "oom": self.oom_per_s}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class MachineRule:
    enabled: bool = True
    mem_available: Levels = field(default_factory=lambda: Levels(Amount(pct=10.0), Amount(pct=5.0)))
    swap_free: Levels = field(default_factory=lambda: Levels(Amount(pct=10.0), Amount(pct=5.0)))
    psi: Optional[PsiRule] = None
    reclaim_window_s: Optional[float] = 30.0  # a PSI condition counts only with reclaim this recent


@dataclass(frozen=True)
class CgroupRule:
    label: str  # "cgroup[0]"
    match: str  # the glob as written
    pattern: re.Pattern[str]
    headroom: Levels = field(default_factory=Levels)
    psi: Optional[PsiRule] = None
    events: Optional[EventsRule] = None
    action: RuleAction = "process"  # "process": the worst process inside; "group": the whole cgroup

    def matches(self, cgroup: str) -> bool:
        return bool(self.pattern.fullmatch(cgroup.strip("/")))

    def walk(self) -> tuple[str, Optional[int]]:
        """Where cgroups this glob can match live: the literal leading components as a path, and
        how many levels below it (None with ``**``). ``system.slice/*.service`` -> ("/system.slice", 1)."""
        parts = self.match.strip("/").split("/")
        literal = []
        for part in parts:
            if any(c in part for c in "*?["):
                break
            literal.append(part)
        rest = parts[len(literal) :]
        depth = None if any("**" in p for p in rest) else len(rest)
        return "/" + "/".join(literal), depth


@dataclass(frozen=True)
class PollSettings:
    min_interval_s: float = 0.02
    max_interval_s: float = 5.0
    fill_rate_bytes_per_s: int = 4 << 30  # the fastest growth to plan for (earlyoom: 6000 MiB/s)


@dataclass(frozen=True)
class Policy:
    source: str = "<defaults>"
    scorers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SCORERS))
    protect: tuple[Rule, ...] = ()
    ignore: tuple[Rule, ...] = ()
    prefer: tuple[Rule, ...] = ()
    avoid: tuple[Rule, ...] = ()
    plugins: PluginSettings = field(default_factory=PluginSettings)
    dry_run: bool = False
    grace_s: float = 5.0  # SIGTERM, then SIGKILL if still alive after this
    cooldown_s: float = 10.0  # after a kill, at most this long for memory to recover
    hysteresis_pct: float = 2.0  # a low quantity is recovered at its TERM level + this % of its total
    self_oom_score_adj: int = -1000
    machine: MachineRule = field(default_factory=MachineRule)
    cgroups: tuple[CgroupRule, ...] = ()
    poll: PollSettings = field(default_factory=PollSettings)


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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_amount(table: Table, name: str) -> Optional[Amount]:
    """``"10%"``, ``"512M"``/``"512MiB"``/``"1.5G"`` (powers of 1024), or an integer of bytes."""
    if name not in table.data:
        table.used.add(name)
        return None
    value = table.raw(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Amount(bytes=value)
    if isinstance(value, str):
        m = _PCT.match(value)
        if m:
            pct = float(m.group(1))
            if pct > 100:
                raise table.error(name, f"expected a percentage from 0 to 100, got {_show(value)}")
            return Amount(pct=pct)
        m = _SIZE.match(value)
        if m:
            return Amount(bytes=int(float(m.group(1)) * _UNITS[m.group(2).upper()]))
    raise table.error(name, f'expected a percentage ("10%") or a size ("512M", or bytes), got {_show(value)}')


def parse_levels(table: Table) -> Levels:
    term, kill = parse_amount(table, "term"), parse_amount(table, "kill")
    table.finish()
    if term is not None and kill is not None and (term.pct is None) != (kill.pct is None):
        raise table.error("kill", "give term and kill in the same unit (both % or both sizes)")
    if term is not None and kill is not None and kill.resolve(1 << 40) > term.resolve(1 << 40):
        raise table.error("kill", f"the KILL level ({kill}) must not be above the TERM level ({term})")
    return Levels(term, kill)


def parse_psi_rule(table: Table) -> PsiRule:
    kind = table.string("kind", "full")
    if kind not in ("some", "full"):
        raise table.error("kind", f'expected "some" or "full", got {_show(kind)}')
    rule = PsiRule(
        kind="some" if kind == "some" else "full",
        stall_pct=table.number("stall_pct", 40.0, 0.1, 100),
        duration_s=table.number("duration_s", 5.0, 0, 3600),
    )
    table.finish()
    return rule


def parse_events_rule(table: Table) -> EventsRule:
    rule = EventsRule(
        high_per_s=table.number("high_per_s", -1, 0, 1e9) if table.has("high_per_s") else None,
        max_per_s=table.number("max_per_s", -1, 0, 1e9) if table.has("max_per_s") else None,
        oom_per_s=table.number("oom_per_s", -1, 0, 1e9) if table.has("oom_per_s") else None,
    )
    table.finish()
    if not rule.limits():
        raise PolicyError(table.source, table.path, "give at least one of high_per_s, max_per_s, oom_per_s")
    return rule


def glob_to_regex(glob: str) -> str:
    """``*`` matches within one path component, ``**`` across components, ``?`` one character,
    ``[...]`` a class, as in shells. Paths are matched without their leading ``/``."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            if glob.startswith("/", i) and out[-1] == ".*":
                out[-1] = "(?:.*/)?"  # "a/**/b" also matches "a/b"
                i += 1
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 2 if glob.startswith("[!", i) or glob.startswith("[]", i) else i + 1)
            if end < 0:
                raise ValueError("unclosed [ in glob")
            body = glob[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_cgroup_rule(table: Table) -> CgroupRule:
    glob = table.string("match", None)
    if not glob or not glob.strip("/"):
        raise table.error("match", 'expected a glob over cgroup paths, e.g. "system.slice/*.service"')
    try:
        pattern = re.compile(glob_to_regex(glob.strip("/")))
    except (ValueError, re.error) as exc:
        raise table.error("match", f"bad glob {_show(glob)}: {exc}") from None
    headroom = parse_levels(table.table("min_headroom")) if table.has("min_headroom") else Levels()
    psi = parse_psi_rule(table.table("psi")) if table.has("psi") else None
    events = parse_events_rule(table.table("events")) if table.has("events") else None
    action = table.string("action", "process")
    if action not in ("process", "group"):
        raise table.error("action", f'expected "process" or "group", got {_show(action)}')
    table.finish()
    if not headroom.enabled and psi is None and events is None:
        raise PolicyError(
            table.source, table.path, "a cgroup rule needs at least one of min_headroom, psi, events"
        )
    return CgroupRule(
        label=table.path,
        match=glob,
        pattern=pattern,
        headroom=headroom,
        psi=psi,
        events=events,
        action="group" if action == "group" else "process",
    )


def parse_machine(table: Table) -> MachineRule:
    default = MachineRule()
    rule = MachineRule(
        enabled=table.boolean("enabled", True),
        mem_available=parse_levels(table.table("mem_available"))
        if table.has("mem_available")
        else default.mem_available,
        swap_free=parse_levels(table.table("swap_free")) if table.has("swap_free") else default.swap_free,
        psi=parse_psi_rule(table.table("psi")) if table.has("psi") else None,
        reclaim_window_s=table.number("reclaim_window_s", 30.0, 0, 3600)
        if table.raw("reclaim_window_s") is not False
        else None,
    )
    table.finish()
    return rule


def parse_poll(table: Table) -> PollSettings:
    fill = parse_amount(table, "fill_rate")
    settings = PollSettings(
        min_interval_s=table.number("min_interval_s", 0.02, 0.001, 60),
        max_interval_s=table.number("max_interval_s", 5.0, 0.01, 3600),
        fill_rate_bytes_per_s=fill.bytes if fill is not None and fill.bytes else 4 << 30,
    )
    if fill is not None and fill.pct is not None:
        raise table.error("fill_rate", 'expected a size per second ("4G"), not a percentage')
    table.finish()
    if settings.min_interval_s > settings.max_interval_s:
        raise table.error("min_interval_s", "must not be above max_interval_s")
    return settings


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
    machine = parse_machine(top.table("machine"))
    cgroups = tuple(parse_cgroup_rule(t) for t in top.tables("cgroup"))
    poll = parse_poll(top.table("poll"))
    policy = Policy(
        source=source,
        scorers=scorers,
        protect=rules["protect"],
        ignore=rules["ignore"],
        prefer=rules["prefer"],
        avoid=rules["avoid"],
        plugins=plugins,
        dry_run=top.boolean("dry_run", False),
        grace_s=top.number("grace_s", 5.0, 0, 600),
        cooldown_s=top.number("cooldown_s", 10.0, 0, 3600),
        hysteresis_pct=top.number("hysteresis_pct", 2.0, 0, 50),
        self_oom_score_adj=int(top.number("self_oom_score_adj", -1000, -1000, 1000)),
        machine=machine,
        cgroups=cgroups,
        poll=poll,
    )
    top.finish()
    return policy


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
