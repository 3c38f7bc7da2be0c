"""TOML policy -> typed Policy. Every mistake is an error naming file, key and reason.

    /etc/guardian.toml: prefer[1].comm: bad regular expression: missing ): (unclosed (...)

Unknown keys are errors (a misspelt key would otherwise silently do nothing), and so are wrong
types, out-of-range numbers and bad regular expressions. ``load_policy`` never returns a
half-valid policy: either the whole file is good or PolicyError says what is wrong.

``parse_policy`` and ``load_policy`` raise nothing but PolicyError, whatever the text: the daemon
reloads on SIGHUP and must keep its old policy on any bad file, and ``guardian check`` must
answer with exit 78, not a traceback. Each known cause is checked where it arises (huge numbers,
sizes beyond any machine, deep nesting, patterns RE2 refuses, files that are not regular files);
a last-resort guard at the two entry points turns anything else into a PolicyError too.

Defaults are written once, as the dataclass field defaults below; the parser reads them from
there. The Policy is read-only all the way down (mappings are ``MappingProxyType``, sequences
tuples), because every plugin sees it and a change would silently alter every later ranking.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import functools
import math
import os
import re
import stat
import sys
import warnings
from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Any, Callable, Optional, TypeVar, Union, cast, get_args

from guardian.errors import GuardianError
from guardian.frozen import frozen
from guardian.kinds import HookWhen, PsiKind, RuleAction
from guardian.records import frozen_value
from guardian.rules import FIELDS, RE2_SYNTAX, Pattern, PatternError, Rule, RuleKind
from guardian.text import shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

DEFAULT_SCORERS: Mapping[str, float] = MappingProxyType({"cause": 1.0, "rules": 1.0})
DEFAULT_PREFER_POINTS = 300.0  # earlyoom's --prefer / --avoid adjustment, in oom_score units

# The largest size a policy may name: 2^52 bytes (4 PiB), the most physical memory any Linux
# machine can address (MAX_PHYSMEM_BITS is 52 on x86-64 with 5-level paging and on arm64 with
# 52-bit physical addresses). A level above it is always crossed: a typo that kills at once.
MAX_BYTES = 1 << 52

# The slowest fill rate worth planning for: 1 MiB/s. Polling waits at most headroom / fill_rate, capped
# at poll.max_interval_s, so below this any headroom over a few MiB waits the cap anyway, and 0
# (or "0.0001K", which rounds to 0 bytes) would divide by zero.
MIN_FILL_RATE = 1 << 20

# A policy is a few KB (the shipped one, every key commented, is 7 KB). 1 MiB leaves room for a
# generated policy with thousands of rules, while a mistaken path (a log, a disk image) is
# refused instead of read whole into the daemon; tomllib parses 1 MiB of rules in ~0.2 s here.
MAX_POLICY_BYTES = 1 << 20

# How deep arrays and inline tables may nest, and how many parts a dotted key (``a.b.c``) may
# have. A real policy needs 2 of either. tomllib recurses once per level (3000 levels raise
# RecursionError) and spends time quadratic in the parts of one dotted key (10 000 parts:
# 0.7 s; 50 000: 39 s), so both are bounded before tomllib sees the text.
MAX_NESTING = 32
MAX_KEY_PARTS = 32

_UID_MAX = (1 << 32) - 2  # uid_t is 32 bits and (uid_t)-1 means "no uid"
_SHOW_CHARS = 80  # how much of a value an error message quotes


class PolicyError(GuardianError):
    """The policy file is invalid. ``str()`` is the sentence for the operator.

    Every part is made printable (``shown``): key names and values come from the file and may
    hold control characters that would forge log lines.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        source, key, reason = shown(source), _clip(shown(key), 200), shown(reason)
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@frozen
class PluginSettings:
    """[plugins]: where plugins come from, their time budget and their own settings."""

    entry_points: bool = True  # load plugins from the "guardian" entry-point group
    directory: Optional[str] = None  # plugin directory; None: the default under the Host root
    budget_ms: float = 250.0  # per scorer, per ranking
    # [plugins.settings.NAME]: plugin name -> its own table, as TOML gave it and read-only
    # (tables are read-only mappings, arrays tuples): every plugin sees every plugin's settings
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", frozen_value(self.settings))


@frozen
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


@frozen
class Levels:
    """A TERM level and a KILL level for one quantity that runs low (kill <= term)."""

    term: Optional[Amount] = None
    kill: Optional[Amount] = None

    @property
    def enabled(self) -> bool:
        return self.term is not None or self.kill is not None


@frozen
class PsiRule:
    """Live ``kind`` stall rate at or above ``stall_pct`` for ``duration_s`` seconds."""

    kind: PsiKind = "full"
    stall_pct: float = 40.0
    duration_s: float = 5.0


@frozen
class EventsRule:
    """memory.events counters growing faster than these rates (events per second)."""

    high_per_s: Optional[float] = None
    max_per_s: Optional[float] = None
    oom_per_s: Optional[float] = None

    def limits(self) -> dict[str, float]:
        out = {"high": self.high_per_s, "max": self.max_per_s, "oom": self.oom_per_s}
        return {k: v for k, v in out.items() if v is not None}


@frozen
class MachineRule:
    """[machine]: the whole machine's lines (available memory, free swap, PSI)."""

    enabled: bool = True
    mem_available: Levels = field(default_factory=lambda: Levels(Amount(pct=10.0), Amount(pct=5.0)))
    swap_free: Levels = field(default_factory=lambda: Levels(Amount(pct=10.0), Amount(pct=5.0)))
    psi: Optional[PsiRule] = None
    reclaim_window_s: Optional[float] = 30.0  # a PSI condition counts only with reclaim this recent


@frozen
class CgroupRule:
    """One [[cgroup]] rule: the groups it watches, their lines and what a kill takes."""

    label: str  # "cgroup[0]"
    match: str  # the glob as written
    pattern: Pattern  # the glob as an RE2 expression over paths without the leading "/"
    headroom: Levels = field(default_factory=Levels)
    psi: Optional[PsiRule] = None
    events: Optional[EventsRule] = None
    action: RuleAction = "process"  # "process": the worst process inside; "group": the whole cgroup

    def matches(self, cgroup: str) -> bool:
        return self.pattern.fullmatch(cgroup.strip("/"))

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


@frozen
class PollSettings:
    """[poll]: how often memory is looked at when no kernel event comes first."""

    min_interval_s: float = 0.02
    max_interval_s: float = 5.0
    # the least growth planned for, whatever was measured (pace.py: measured speeds x2 above it)
    fill_rate_bytes_per_s: int = 256 << 20


# A [[hook]] command's timeout: how long it may run before its process group is killed. A hook
# is a notification, not a job: a minute is plenty, and a bound keeps hooks that hang from
# piling up (guardian/hooks.py runs at most MAX_RUNNING at once).
HOOK_TIMEOUT_MAX_S = 60.0
HOOK_ARGS_MAX = 64  # arguments of one command
HOOK_ARG_MAX_CHARS = 4096  # characters of one argument


@frozen
class HookCommand:
    """A ``[[hook]]``: a command run after a kill, with the decision in its environment."""

    command: tuple[str, ...] = ()  # argv; command[0] an absolute path (no shell, no PATH lookup)
    when: HookWhen = "after"
    timeout_s: float = 10.0  # then its process group is sent SIGKILL
    label: str = ""  # hook[N], for reports


@frozen
class Listen:
    """Where the metrics endpoint listens: an IP address (no name, so that nothing is resolved)
    and a TCP port; port 0 lets the kernel choose a free one (reported when it is bound)."""

    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@frozen
class MetricsSettings:
    """[metrics]: Prometheus metrics, off unless ``listen`` or ``textfile`` is given."""

    listen: Optional[Listen] = None  # serve /metrics over HTTP here
    allow_remote: bool = False  # a ``listen`` address that is not loopback is refused without it
    textfile: Optional[str] = None  # or write the metrics to this file (node_exporter's collector)
    textfile_interval_s: float = 15.0  # at most this often
    max_cgroups: int = 64  # watched cgroups with series of their own, in path order

    @property
    def enabled(self) -> bool:
        return self.listen is not None or self.textfile is not None


@frozen
class Policy:
    """A whole policy, as loaded and checked from one TOML file (or the built-in one)."""

    source: str = "<defaults>"
    scorers: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SCORERS)
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
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    hooks: tuple[HookCommand, ...] = ()

    def __post_init__(self) -> None:
        # read-only however it was built (tests and dataclasses.replace pass plain dicts/lists)
        object.__setattr__(self, "scorers", MappingProxyType(dict(self.scorers)))
        for name in ("protect", "ignore", "prefer", "avoid", "cgroups", "hooks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


def _clip(text: str, limit: int = _SHOW_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, datetime.datetime):
        return "a date-time"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, datetime.time):
        return "a time"
    return type(value).__name__


def _show_number(value: float) -> str:
    """A number as the operator wrote it, short: ``1111111111... (400 digits)``."""
    if isinstance(value, int):
        if value.bit_length() > 13_000:  # str() refuses ints of over 4300 digits (Python 3.11+)
            return "a number of thousands of digits"
        digits = str(value)
        return digits if len(digits) <= 24 else f"{digits[:12]}... ({len(digits.lstrip('-'))} digits)"
    return f"{value:g}"


def _show(value: Any) -> str:
    """A value for an error message: short, printable, never a repr of a whole table (which
    could be nested thousands deep, or be megabytes long)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _show_number(value)
    if isinstance(value, str):
        return f'"{_clip(value)}"'
    return _type_name(value)


_T = TypeVar("_T")


def default_of(cls: Any, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``: the one place a default is written."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


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
        if not self.has(name):
            return default
        value = self.raw(name)
        expected = f"expected a number from {lo:g} to {hi:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, f"{expected}, got {_show(value)}")
        # compare before any float(): exact for ints of any size (float() of a 400-digit int
        # raises OverflowError), and False for nan
        if not lo <= value <= hi:
            raise self.error(name, f"{expected}, got {_show(value)}")
        return float(value)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        if not self.has(name):
            return default
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(name, f"expected an integer from {lo} to {hi}, got {_show(value)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        if not self.has(name):
            return default
        value = self.raw(name)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_show(value)}")
        return value

    def string(self, name: str, default: Optional[str]) -> Optional[str]:
        if not self.has(name):
            return default
        value = self.raw(name)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_type_name(value)}")
        return value

    def choice(self, name: str, default: _T, choices: tuple[_T, ...]) -> _T:
        """One of ``choices`` (the args of a Literal type in guardian.kinds)."""
        if not self.has(name):
            return default
        value = self.raw(name)
        if value not in choices:
            spelled = " or ".join(f'"{c}"' for c in choices)
            raise self.error(name, f"expected {spelled}, got {_show(value)}")
        return cast(_T, value)

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


def compile_pattern(table: Table, name: str) -> Pattern:
    value = table.raw(name)
    if isinstance(value, int) and not isinstance(value, bool) and name == "uid":
        if not 0 <= value <= _UID_MAX:
            raise table.error(name, f"expected a uid from 0 to {_UID_MAX}, got {_show(value)}")
        return Pattern(f"^{value}$")
    if not isinstance(value, str):
        raise table.error(name, f"expected a regular expression (a string), got {_type_name(value)}")
    try:
        return Pattern(value)
    except PatternError as exc:
        raise table.error(
            name, f"bad regular expression: {exc} (RE2 syntax, no backreferences or lookaround: {RE2_SYNTAX})"
        ) from None


def parse_rule(table: Table, kind: RuleKind) -> Rule:
    patterns = {name: compile_pattern(table, name) for name in FIELDS if table.has(name)}
    points: float = default_of(Rule, "points")
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


# ASCII digits only: Python's \d and float() also take other scripts' digits ("\u0665%", an
# Arabic-Indic five, would be 5%), and IGNORECASE without ASCII lets "K" match the Kelvin sign.
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
# A size carries its unit: "512M" / "512MiB" (powers of 1024) or "4096B". A bare number would be
# ambiguous (earlyoom's -m 10 means 10 %), and so would "4GB" (10^9 or 2^30?): both are refused
# with the spellings that say what was meant.
_SIZE = re.compile(rf"\s*{_NUMBER}\s*(?:([KMGT])(iB)?|(B))\s*", re.IGNORECASE | re.ASCII)
_SI_SIZE = re.compile(rf"\s*{_NUMBER}\s*([KMGT])B\s*", re.IGNORECASE | re.ASCII)
_BARE = re.compile(rf"\s*{_NUMBER}\s*", re.ASCII)
UNITS_TEXT = (
    'a percentage ("10%") or a size with its unit: K, M, G, T (powers of 1024; "512M" and '
    '"512MiB" are the same) or B for bytes ("4096B")'
)
_PCT = re.compile(rf"\s*{_NUMBER}\s*%\s*", re.ASCII)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
FRACTION_DIGITS = 64  # of a size's fraction, read exactly (_size_bytes)


def _size_bytes(number: str, unit: str) -> int:
    """``number`` (ASCII digits, maybe a fraction) times ``unit``, exactly, rounded down;
    MAX_BYTES + 1 for anything above MAX_BYTES (a float would turn 400 digits into inf).
    Integers only: a unit is a power of two up to 2^40, so the product's fraction ends within 40
    decimal places and digits past FRACTION_DIGITS cannot move it across a whole byte."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0")
    fraction = fraction[:FRACTION_DIGITS]
    if len(whole) > len(str(MAX_BYTES)):  # (and int() of thousands of digits is refused)
        return MAX_BYTES + 1
    amount = int(whole + fraction or "0") * _UNITS[unit.upper()] // 10 ** len(fraction)
    return amount if amount <= MAX_BYTES else MAX_BYTES + 1


def parse_amount(table: Table, name: str) -> Optional[Amount]:
    """``"10%"``, ``"512M"``/``"512MiB"``/``"1.5G"`` (powers of 1024), or ``"4096B"``."""
    if not table.has(name):
        return None
    value = table.raw(name)
    expected = f"expected {UNITS_TEXT}"
    size: Optional[int] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise table.error(name, f"{expected}, got {_show(value)}: a size cannot be negative")
        raise table.error(name, _bare(value))
    if isinstance(value, str):
        m = _PCT.fullmatch(value)
        if m:
            pct = float(m.group(1))  # ASCII digits: a float at worst inf, which fails below
            if pct > 100:
                raise table.error(name, f"expected a percentage from 0 to 100, got {_show(value)}")
            return Amount(pct=pct)
        m = _SIZE.fullmatch(value)
        if m:
            size = _size_bytes(m.group(1), m.group(2) or "")
        elif (si := _SI_SIZE.fullmatch(value)) is not None:
            n, unit = si.group(1), si.group(2).upper()
            raise table.error(
                name,
                f"{_show(value)} is ambiguous ({unit}B is 1000^n bytes to some tools, 1024^n to "
                f"others): write '{n}{unit}' or '{n}{unit}iB' (powers of 1024)",
            )
        elif _BARE.fullmatch(value):
            raise table.error(name, _bare(value.strip()))
    if size is None:
        raise table.error(name, f"{expected}, got {_show(value)}")
    if size > MAX_BYTES:
        raise table.error(
            name, f"{_show(value)} is more memory than any machine has (at most 4T x 1024 = 2^52 bytes)"
        )
    return Amount(bytes=size)


def _bare(value: object) -> str:
    """Why a number without a unit is refused, with the spellings it could have meant."""
    n = value if isinstance(value, str) else _show(value)
    if len(n) > 40:
        n = n[:40] + "..."
    return (
        f"{n} has no unit, so it is ambiguous: write '{n}%' for a percentage, '{n}M' for {n} MiB, "
        f"or '{n}B' for bytes"
    )


def parse_levels(table: Table) -> Levels:
    term, kill = parse_amount(table, "term"), parse_amount(table, "kill")
    table.finish()
    if term is not None and kill is not None and (term.pct is None) != (kill.pct is None):
        raise table.error("kill", "give term and kill in the same unit (both % or both sizes)")
    if term is not None and kill is not None and kill.resolve(1 << 40) > term.resolve(1 << 40):
        raise table.error("kill", f"the KILL level ({kill}) must not be above the TERM level ({term})")
    return Levels(term, kill)


def parse_psi_rule(table: Table) -> PsiRule:
    default = PsiRule()
    rule = PsiRule(
        kind=table.choice("kind", default.kind, get_args(PsiKind)),
        stall_pct=table.number("stall_pct", default.stall_pct, 0.1, 100),
        duration_s=table.number("duration_s", default.duration_s, 0, 3600),
    )
    table.finish()
    return rule


def parse_events_rule(table: Table) -> EventsRule:
    def rate(name: str) -> Optional[float]:
        return table.number(name, math.nan, 0, 1e9) if table.has(name) else None

    rule = EventsRule(high_per_s=rate("high_per_s"), max_per_s=rate("max_per_s"), oom_per_s=rate("oom_per_s"))
    table.finish()
    if not rule.limits():
        raise PolicyError(table.source, table.path, "give at least one of high_per_s, max_per_s, oom_per_s")
    return rule


def _literal(c: str) -> str:
    """One character as a literal in an RE2 expression (in or out of a class)."""
    if c.isascii() and c.isalnum():
        return c
    if c.isascii() and c.isprintable() and c != " ":
        return "\\" + c  # RE2 takes any escaped ASCII punctuation as itself
    if c.isprintable() and not c.isspace():
        return c  # a literal character of another script
    return f"\\x{{{ord(c):x}}}"  # space, controls and other invisible characters, by number


def _glob_class(body: str, negated: bool) -> str:
    out = []
    for i, c in enumerate(body):
        is_range = c == "-" and 0 < i < len(body) - 1
        out.append("-" if is_range else _literal(c))
    # a negated class must not step over a "/" either: globs match within path components
    return "[" + ("^/" if negated else "") + "".join(out) + "]"


def glob_to_regex(glob: str) -> str:
    """``*`` matches within one path component, ``**`` across components, ``?`` one character,
    ``[...]`` a class (``[!...]`` negated), as in shells. Paths are matched without their
    leading ``/``. The result is an RE2 expression, matched whole (``fullmatch``)."""
    out = ["(?s)"]  # cgroup names may hold newlines: ** must cross them like any character
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**", i):
            i += 2
            if glob.startswith("/", i):
                out.append("(?:.*/)?")  # "a/**/b" also matches "a/b"
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            negated = j < n and glob[j] in "!^"
            if negated:
                j += 1
            start = j
            if j < n and glob[j] == "]":
                j += 1  # a "]" first in the class is a literal "]"
            end = glob.find("]", j)
            if end < 0:
                raise ValueError("unclosed [ in glob")
            out.append(_glob_class(glob[start:end], negated))
            i = end
        else:
            out.append(_literal(c))
        i += 1
    return "".join(out)


def parse_cgroup_rule(table: Table) -> CgroupRule:
    glob = table.string("match", None)
    if not glob or not glob.strip("/"):
        raise table.error("match", 'expected a glob over cgroup paths, e.g. "system.slice/*.service"')
    try:
        pattern = Pattern(glob_to_regex(glob.strip("/")))
    except (ValueError, PatternError) as exc:
        raise table.error("match", f"bad glob {_show(glob)}: {exc}") from None
    headroom = parse_levels(table.table("min_headroom")) if table.has("min_headroom") else Levels()
    psi = parse_psi_rule(table.table("psi")) if table.has("psi") else None
    events = parse_events_rule(table.table("events")) if table.has("events") else None
    action = table.choice("action", default_of(CgroupRule, "action"), get_args(RuleAction))
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
        action=action,
    )


def parse_machine(table: Table) -> MachineRule:
    default = MachineRule()
    rule = MachineRule(
        enabled=table.boolean("enabled", default.enabled),
        mem_available=parse_levels(table.table("mem_available"))
        if table.has("mem_available")
        else default.mem_available,
        swap_free=parse_levels(table.table("swap_free")) if table.has("swap_free") else default.swap_free,
        psi=parse_psi_rule(table.table("psi")) if table.has("psi") else default.psi,
        reclaim_window_s=parse_reclaim_window(table, default.reclaim_window_s),
    )
    table.finish()
    return rule


def parse_reclaim_window(table: Table, default: Optional[float]) -> Optional[float]:
    """Seconds, or false: no reclaim requirement (None)."""
    if not table.has("reclaim_window_s"):
        return default
    if table.raw("reclaim_window_s") is False:
        return None
    return table.number("reclaim_window_s", math.nan, 0, 3600)


def parse_poll(table: Table) -> PollSettings:
    default = PollSettings()
    fill = parse_amount(table, "fill_rate")
    if fill is not None and fill.pct is not None:
        raise table.error("fill_rate", 'expected a size per second ("4G"), not a percentage')
    if fill is not None and (fill.bytes or 0) < MIN_FILL_RATE:
        got = _show(table.raw("fill_rate"))
        raise table.error("fill_rate", f"expected at least 1M ({MIN_FILL_RATE} bytes) per second, got {got}")
    settings = PollSettings(
        min_interval_s=table.number("min_interval_s", default.min_interval_s, 0.001, 60),
        max_interval_s=table.number("max_interval_s", default.max_interval_s, 0.01, 3600),
        fill_rate_bytes_per_s=default.fill_rate_bytes_per_s if fill is None else (fill.bytes or 0),
    )
    table.finish()
    if settings.min_interval_s > settings.max_interval_s:
        raise table.error("min_interval_s", "must not be above max_interval_s")
    return settings


def parse_listen(table: Table, allow_remote: bool) -> Optional[Listen]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``"localhost:9464"``: an IP address (or
    localhost, which is 127.0.0.1 without asking a resolver) and a port from 0 to 65535. An
    address that is not loopback needs ``allow_remote = true``."""
    text = table.string("listen", None)
    if text is None:
        return None
    import ipaddress  # noqa: PLC0415 - only for a policy with an endpoint

    expected = 'expected "ADDRESS:PORT" with an IP address ("127.0.0.1:9464", "[::1]:9464")'
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise table.error("listen", f"{expected}, got {_show(text)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise table.error("listen", f"{expected}; an IPv6 address goes in brackets, got {_show(text)}")
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
        raise table.error("listen", f"expected a port from 0 to 65535 after the colon, got {_show(text)}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise table.error(
            "listen", f"{expected}: {_show(host)} is not an IP address (names are not resolved)"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise table.error("listen", f"{expected}, without a zone (%), got {_show(text)}")
    if not address.is_loopback and not allow_remote:
        raise table.error(
            "listen",
            f"{_show(text)} is not a loopback address: the endpoint tells whoever reaches it what "
            "runs here and what guardian killed; set allow_remote = true to serve it there",
        )
    return Listen(address.compressed, int(port_text))


def _textfile_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be the metrics text file, or None. Used as written (not under
    ``--root``): an absolute path ending in .prom (node_exporter's textfile collector reads
    nothing else) in an existing directory (the file is written next to it, then renamed)."""
    if not path.startswith("/"):
        return "expected an absolute path"
    if "\0" in path:
        return "a path cannot hold a NUL character"
    if not path.endswith(".prom") or path.endswith("/.prom"):
        return "expected a file name ending in .prom (node_exporter's textfile collector reads no other)"
    directory = os.path.dirname(path)
    reason = _directory_problem(directory)
    return None if reason is None else f"its directory {_show(directory)}: {reason}"


def parse_metrics(table: Table) -> MetricsSettings:
    default = MetricsSettings()
    allow_remote = table.boolean("allow_remote", default.allow_remote)
    listen = parse_listen(table, allow_remote)
    if allow_remote and listen is None:
        raise table.error("allow_remote", "only means something with listen")
    textfile = table.string("textfile", default.textfile)
    if textfile is not None:
        reason = _textfile_problem(textfile)
        if reason is not None:
            raise table.error("textfile", f"{_show(textfile)}: {reason}")
    settings = MetricsSettings(
        listen=listen,
        allow_remote=allow_remote,
        textfile=textfile,
        textfile_interval_s=table.number("textfile_interval_s", default.textfile_interval_s, 1, 3600),
        max_cgroups=table.integer("max_cgroups", default.max_cgroups, 0, 10_000),
    )
    table.finish()
    return settings


def parse_plugins(table: Table) -> PluginSettings:
    default = PluginSettings()
    directory = table.string("directory", default.directory)
    if directory is not None:
        reason = _directory_problem(directory)
        if reason is not None:
            raise table.error("directory", f"{_show(directory)}: {reason}")
    settings = PluginSettings(
        entry_points=table.boolean("entry_points", default.entry_points),
        directory=directory,
        budget_ms=table.number("budget_ms", default.budget_ms, 1, 60_000),
        settings=parse_plugin_settings(table.table("settings")),
    )
    for name in sorted(set(table.data) - table.used):
        if isinstance(table.data[name], dict):  # [plugins.NAME]: meant as a plugin's settings
            raise table.error(
                name, f"unknown key; a plugin's own settings go in a [plugins.settings.{name}] table"
            )
    table.finish()
    return settings


def parse_plugin_settings(table: Table) -> dict[str, Mapping[str, Any]]:
    """``[plugins.settings.NAME]`` tables, one per plugin, passed on as they are: what a plugin
    accepts is the plugin's to check. Whether NAME is a loaded plugin is known only once the
    plugins are loaded (guardian/plugins.py: Plugins.check_settings)."""
    found: dict[str, Mapping[str, Any]] = {}
    for name in list(table.data):
        value = table.raw(name)
        if not isinstance(value, dict):
            expected = f"expected a table of that plugin's settings ([{table.key(name)}])"
            raise table.error(name, f"{expected}, got {_type_name(value)}")
        found[name] = value
    return found


def parse_hook(table: Table) -> HookCommand:
    """A ``[[hook]]``. The command is checked where it can be at load time (an absolute path to
    an executable regular file), so that a typo is an error of ``guardian check`` and of a
    reload, not a failure found after the first kill; who controls the file is checked when the
    policy is loaded with its plugins (guardian/loaded.py), by the rule plugin files follow."""
    default = HookCommand()
    command = table.raw("command")
    example = 'e.g. ["/usr/local/bin/notify-oom", "--urgent"]'
    if not isinstance(command, list) or not command:
        raise table.error("command", f"expected a non-empty array of strings (the argv, no shell), {example}")
    if len(command) > HOOK_ARGS_MAX:
        raise table.error("command", f"expected at most {HOOK_ARGS_MAX} arguments, got {len(command)}")
    for i, arg in enumerate(command):
        if not isinstance(arg, str):
            raise table.error(f"command[{i}]", f"expected a string, got {_type_name(arg)}")
        if "\0" in arg:
            raise table.error(f"command[{i}]", "an argument cannot hold a NUL character")
        if len(arg) > HOOK_ARG_MAX_CHARS:
            raise table.error(f"command[{i}]", f"longer than {HOOK_ARG_MAX_CHARS} characters")
    problem = _executable_problem(command[0])
    if problem is not None:
        raise table.error("command[0]", f"{_show(command[0])}: {problem}")
    hook = HookCommand(
        command=tuple(command),
        when=table.choice("when", default.when, get_args(HookWhen)),
        timeout_s=table.number("timeout_s", default.timeout_s, 0.1, HOOK_TIMEOUT_MAX_S),
        label=table.path,
    )
    table.finish()
    return hook


def _stat_problem(path: str) -> Union[os.stat_result, str]:
    """``os.stat(path)``, or why it cannot be had, as a sentence."""
    if "\0" in path:
        return "a path cannot hold a NUL character"
    try:
        return os.stat(path)
    except OSError as exc:
        return f"cannot use it: {os.strerror(exc.errno or errno.EIO)}"
    except ValueError as exc:  # a path the OS cannot take (e.g. not encodable)
        return f"cannot use it: {exc}"


def _executable_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a hook's program, or None: guardian runs it as root, by its
    absolute path (no search of PATH, which would run whatever comes first there)."""
    if not path.startswith("/"):
        return "expected an absolute path to an executable (no search of PATH)"
    st = _stat_problem(path)
    if isinstance(st, str):
        return st
    if stat.S_ISDIR(st.st_mode):
        return "a directory, not a program"
    if not stat.S_ISREG(st.st_mode):
        return f"{_file_kind(st.st_mode)}, not a program"
    if not st.st_mode & 0o111:
        return "not executable"
    return None


def _directory_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be the plugin directory, or None. It is used as written (not under
    ``--root``), so it must be absolute; and it must be a directory: a plugin directory that is
    missing or a file would silently load no plugins."""
    if not path.startswith("/"):
        return "expected an absolute path to a directory"
    st = _stat_problem(path)
    if isinstance(st, str):
        return st
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    return None


def policy_from_dict(data: Mapping[str, Any], source: str) -> Policy:
    default = Policy()
    top = Table(source, "", data)
    scorers = parse_scorers(top.table("scorers")) if top.has("scorers") else default.scorers
    rules: dict[RuleKind, tuple[Rule, ...]] = {
        kind: tuple(parse_rule(t, kind) for t in top.tables(kind)) for kind in get_args(RuleKind)
    }
    plugins = parse_plugins(top.table("plugins"))
    machine = parse_machine(top.table("machine"))
    cgroups = tuple(parse_cgroup_rule(t) for t in top.tables("cgroup"))
    poll = parse_poll(top.table("poll"))
    metrics = parse_metrics(top.table("metrics"))
    hooks = tuple(parse_hook(t) for t in top.tables("hook"))
    policy = Policy(
        source=source,
        scorers=scorers,
        protect=rules["protect"],
        ignore=rules["ignore"],
        prefer=rules["prefer"],
        avoid=rules["avoid"],
        plugins=plugins,
        dry_run=top.boolean("dry_run", default.dry_run),
        grace_s=top.number("grace_s", default.grace_s, 0, 600),
        cooldown_s=top.number("cooldown_s", default.cooldown_s, 0, 3600),
        hysteresis_pct=top.number("hysteresis_pct", default.hysteresis_pct, 0, 50),
        # above 0 would make guardian the kernel's preferred victim, the one process that must
        # survive an OOM; -1000 exempts it (OOM_SCORE_ADJ_MIN)
        self_oom_score_adj=top.integer("self_oom_score_adj", default.self_oom_score_adj, -1000, 0),
        machine=machine,
        cgroups=cgroups,
        poll=poll,
        metrics=metrics,
        hooks=hooks,
    )
    top.finish()
    return policy


# The characters that matter for nesting and dotted keys, outside strings and comments.
_SHAPE = re.compile(r"[\[\]{}.=,\n#\"']")
_BASIC_BODY = re.compile(r'(?:[^"\\\n]|\\.)*')  # a one-line "..." string: disjoint, linear
_LITERAL_BODY = re.compile(r"[^'\n]*")


def _check_shape(text: str, source: str) -> None:
    """Refuse text nested deeper than MAX_NESTING or with a dotted key of more than
    MAX_KEY_PARTS parts, before tomllib recurses or goes quadratic on it.

    A small scanner over what matters: brackets and braces, dots, and where strings and
    comments start and end. Wherever the text is not valid TOML it stops and leaves the error
    to tomllib; it only ever refuses what would be too deep in any reading."""
    depth = dots = 0
    pos, n = 0, len(text)

    def refuse(at: int, what: str) -> PolicyError:
        return PolicyError(source, "", f"line {text.count(chr(10), 0, at) + 1}: {what}")

    while True:
        m = _SHAPE.search(text, pos)
        if m is None:
            return
        c, i = m.group(), m.start()
        pos = i + 1
        if c in "[{":
            depth, dots = depth + 1, 0
            if depth > MAX_NESTING:
                raise refuse(i, f"arrays, tables and inline tables nested more than {MAX_NESTING} deep")
        elif c in "]}":
            depth, dots = max(depth - 1, 0), 0
        elif c == ".":
            dots += 1
            if dots >= MAX_KEY_PARTS:
                raise refuse(i, f"a dotted key of more than {MAX_KEY_PARTS} parts")
        elif c in "=,\n":
            dots = 0
        elif c == "#":
            end = text.find("\n", pos)
            if end < 0:
                return
            pos = end
        elif text.startswith(c * 3, i):  # a multi-line string
            pos = _multiline_end(text, i + 3, c)
            if pos < 0:
                return
        else:
            body = (_BASIC_BODY if c == '"' else _LITERAL_BODY).match(text, pos)
            assert body is not None  # both bodies match the empty string
            pos = body.end()
            if pos >= n or text[pos] != c:
                return  # unterminated: tomllib says so
            pos += 1


def _multiline_end(text: str, start: int, quote: str) -> int:
    """Where a multi-line string opened just before ``start`` ends (-1: it does not)."""
    pos = start
    while True:
        end = text.find(quote * 3, pos)
        if end < 0:
            return -1
        if quote == '"':
            backslashes = len(text[pos:end]) - len(text[pos:end].rstrip("\\"))
            if backslashes % 2:  # \""" : an escaped quote, then two more
                pos = end + 1
                continue
        end += 3
        extra = 0
        while extra < 2 and end < len(text) and text[end] == quote:  # """a"""" ends a" + """
            end, extra = end + 1, extra + 1
        return end


def policy_from_text(text: str, source: str) -> Policy:
    """The policy in ``text``; PolicyError for each cause guardian knows. ``parse_policy`` adds
    the last-resort guard."""
    _check_shape(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, "", f"not valid TOML: {exc}") from None
    except ValueError as exc:  # int() refuses over 4300 digits (Python 3.11+ int_max_str_digits)
        # "Exceeds the limit (4300 digits) for integer string conversion: value has ...; use
        # sys.set_int_max_str_digits()": the part before the colon is the operator's business
        raise PolicyError(source, "", f"not valid TOML: {_clip(str(exc).split(':')[0])}") from None
    return policy_from_dict(data, source)


def _guarded(source: str, build: Callable[[], Policy]) -> Policy:
    """``build()``, with anything but a PolicyError turned into one (the last resort: a cause
    guardian does not know yet). Warnings are caught too: none may reach the output, and one
    raised while reading the policy is as much a refusal as an error."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            policy = build()
    except PolicyError:
        raise
    except Exception as exc:
        what = f"{type(exc).__name__}: {_clip(_safe_str(exc))}"
        raise PolicyError(source, "", f"cannot be read ({what}); this is a bug in guardian") from exc
    if caught:
        raise PolicyError(source, "", f"refused on a warning: {_clip(_safe_str(caught[0].message))}")
    return policy


def _safe_str(thing: object) -> str:
    try:
        return str(thing)
    except Exception:
        return type(thing).__name__


def parse_policy(text: str, source: str) -> Policy:
    """The policy in ``text``; raises nothing but PolicyError, for any text."""
    return _guarded(source, lambda: policy_from_text(text, source))


def read_policy_text(path: str) -> str:
    """The text of the policy file at ``path``: a regular file of at most MAX_POLICY_BYTES,
    UTF-8. Opened without blocking (a FIFO would wait for a writer forever) and checked with
    fstat before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PolicyError(path, "", "no such file") from None
    except PermissionError:
        raise PolicyError(path, "", "permission denied") from None
    except OSError as exc:
        raise PolicyError(path, "", f"cannot open: {os.strerror(exc.errno or errno.EIO)}") from None
    except ValueError:  # a NUL byte in the path
        raise PolicyError(path, "", "not a path (it holds a NUL character)") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PolicyError(path, "", "is a directory, not a policy file")
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError(path, "", f"is {_file_kind(st.st_mode)}, not a regular file")
        chunks, size = [], 0
        while size <= MAX_POLICY_BYTES:
            chunk = os.read(fd, MAX_POLICY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise PolicyError(path, "", f"cannot read: {os.strerror(exc.errno or errno.EIO)}") from None
    finally:
        os.close(fd)
    if size > MAX_POLICY_BYTES:
        raise PolicyError(path, "", f"larger than {MAX_POLICY_BYTES >> 20} MiB: not a policy file")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(path, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def load_policy(path: str) -> Policy:
    """The policy in the file at ``path``; raises nothing but PolicyError."""
    return _guarded(path, lambda: policy_from_text(read_policy_text(path), path))


BUILT_IN = "built-in defaults"


@functools.lru_cache(maxsize=1)
def builtin_policy() -> Policy:
    """The policy guardian runs without a policy file: the shipped one, read from the package
    (guardian/default_policy.toml, which etc/guardian.toml links to), so that the two cannot
    differ."""
    # importlib.resources (with tempfile, shutil and random behind it) only when there is no
    # policy file: not at import, which every start pays (bench/startup.py)
    import importlib.resources  # noqa: PLC0415

    text = importlib.resources.files("guardian").joinpath("default_policy.toml").read_text("utf-8")
    return policy_from_text(text, BUILT_IN)
