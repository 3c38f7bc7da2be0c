"""Match rules: which processes or cgroups a protect / ignore / prefer / avoid rule names.

A rule matches when every field it gives matches (AND); each field is a regular expression
searched (unanchored, as ``re.search``) in one fact of the candidate:

    comm       the 15-character kernel name (/proc/PID/comm)
    cmdline    the arguments joined by spaces
    exe        the executable's path (the /proc/PID/exe link)
    cgroup     the cgroup path (``/system.slice/nginx.service``)
    unit       the system manager's unit the cgroup belongs to (``nginx.service``,
               ``session-2.scope``, ``user@1000.service``): see ``unit_of``
    user_unit  the unit of a user's own systemd manager (``app-firefox-1.scope``), below
               ``user@UID.service``: see ``user_unit_of``
    uid        the real uid, as a decimal string (``"^0$"``; an integer is taken as exact)

Peers' users ask for all of these (earlyoom#196/#333, nohang's @BADNESS_ADJ_RE_*); earlyoom's
comm-only matching is its most repeated complaint. Pure: facts come in as a Facts record whose
expensive parts (cmdline, exe) are asked for only when a rule uses them.

The expressions run on text a process chose (its comm, its argv, names of cgroups delegated to
it), in the middle of a memory emergency, so they run on RE2 (guardian/regex_engine.py), whose matching
time is linear in the text: Python's ``re`` backtracks, and ``(a+)+$`` against 32 ``a`` and a
``!`` takes longer than the whole emergency, holding the GIL, so no budget can stop it. RE2's
bound is (text length) x (compiled pattern size), so both are capped: ``MAX_MATCH_BYTES`` and
``MAX_PROGRAM_SIZE``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal, Optional

from guardian import regex_engine
from guardian.frozen import frozen

# which RE2 binding compiles the patterns (guardian/regex_engine.py), and its compile
ENGINE, _compile = regex_engine.load()

RuleKind = Literal["protect", "ignore", "prefer", "avoid"]  # which [[table]] a rule comes from

FIELDS = ("comm", "cmdline", "exe", "cgroup", "unit", "user_unit", "uid")

_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap")

RE2_SYNTAX = "https://github.com/google/re2/wiki/Syntax"

# Only the first 64 KiB of a fact is matched. comm (15 bytes), exe and cgroup paths (the kernel
# prints at most PATH_MAX = 4096 bytes of either) always fit; a command line can be ~2 MB
# (ARG_MAX is a quarter of the stack limit), and RE2's cost grows with it: a DFA-hostile
# pattern like ``(?s).*a.{100}c`` took 70 ms on 128 KiB of random a/b text on the development
# machine, and a 2 MB argv would make every ranking pay 16 times that per process. The head of
# a command line (interpreter, script, flags) is what rules look at; a process controls its
# whole argv, so leaving its tail unread hides nothing from a rule that the process could not
# hide anyway.
MAX_MATCH_BYTES = 64 << 10

# The compiled size (RE2 instructions) of one rule pattern. When RE2's DFA runs out of its
# state budget it falls back to an NFA whose cost is (text bytes) x (instructions):
# ``(?s).*a.{1000}c`` (7013 instructions) took 99 ms on 16 KiB, 548 ms on 128 KiB. Real rule
# patterns are far below the cap: the shipped protect rule compiles to 55, a 13-name
# case-insensitive alternation to 99; ``\pL+`` (every Unicode letter) to 1201.
MAX_PROGRAM_SIZE = 2000

_SURROGATES = re.compile("[\ud800-\udfff]")


class PatternError(ValueError):
    """A pattern RE2 cannot compile, or one too complex for a rule. ``str()`` says why."""


def _utf8(text: str) -> bytes:
    """``text`` as the UTF-8 bytes RE2 reads, cut at ``MAX_MATCH_BYTES``."""
    text = text[:MAX_MATCH_BYTES]  # a character is at least one byte: never cuts what is kept
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # a name with bytes that are not UTF-8, kept as surrogate escapes (os.fsdecode): each
        # such byte is one character (U+FFFD) to the pattern, so ``.`` still steps over it
        data = _SURROGATES.sub("\ufffd", text).encode("utf-8")
    return data[:MAX_MATCH_BYTES]


FULLMATCH_KEPT = 4096  # answers a Pattern remembers (about a megabyte at most)


class Pattern:
    """A regular expression in RE2 syntax, compiled once; read-only.

    ``search`` and ``fullmatch`` answer True or False in time linear in the text (at most
    ``MAX_MATCH_BYTES`` of it are read).
    """

    __slots__ = ("_full", "_regexp", "pattern")
    pattern: str
    _regexp: regex_engine.Regexp
    # fullmatch answers by text: the daemon asks about the same cgroup paths on every look
    _full: dict[str, bool]

    def __init__(self, pattern: str) -> None:
        try:
            regexp = _compile(pattern)
        except regex_engine.PatternSyntax as exc:
            raise PatternError(_reason(str(exc))) from None
        except UnicodeEncodeError:
            raise PatternError("holds a lone surrogate, which is not text") from None
        oversized = _oversized_repeat(pattern)
        if oversized is not None:
            raise PatternError(f"bad repetition count {{{oversized}}}: RE2 counts up to 1000")
        if regexp.programsize > MAX_PROGRAM_SIZE:
            raise PatternError(
                f"too complex for a rule: it compiles to {regexp.programsize} RE2 instructions, "
                f"at most {MAX_PROGRAM_SIZE} (the cost of a match grows with them)"
            )
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "_regexp", regexp)
        object.__setattr__(self, "_full", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Pattern is read-only; cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Pattern is read-only; cannot delete {name}")

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text``."""
        return self._regexp.search(_utf8(text))

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches the whole of ``text`` (remembered for the last
        FULLMATCH_KEPT texts asked about)."""
        known = self._full.get(text)
        if known is None:
            if len(self._full) >= FULLMATCH_KEPT:
                self._full.clear()
            known = self._full[text] = self._regexp.fullmatch(_utf8(text))
        return known

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"


_REPEAT = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")


def _oversized_repeat(pattern: str) -> Optional[str]:
    """A ``{n}``/``{n,m}`` count too large for RE2's parser to read, if any: RE2 refuses counts
    from 1001 up, but takes one that overflows its integer (``a{99999999999}``) as literal
    text, which is not what the operator meant."""
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("Q", i + 1):  # \Q...\E: literal text
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
            else:
                i += 2
            continue
        if in_class:
            if pattern.startswith("[:", i):  # [:alpha:] inside a class
                end = pattern.find(":]", i + 2)
                i = n if end < 0 else end + 2
                continue
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1
            if pattern.startswith("^", i):
                i += 1
            if pattern.startswith("]", i):
                i += 1  # a leading "]" is a literal
            continue
        elif c == "{":
            m = _REPEAT.match(pattern, i)
            if m is not None and any(_above_1000(g) for g in m.groups() if g):
                count = m.group(0)[1:-1]
                return count if len(count) <= 24 else f"{count[:20]}..."
        i += 1
    return None


def _above_1000(digits: str) -> bool:
    digits = digits.lstrip("0")
    return len(digits) > 4 or int(digits or "0") > 1000  # no int() of thousands of digits


def _reason(reason: str) -> str:
    """RE2's message, at most 200 characters: RE2 quotes the rest of the pattern after the
    error, which may be the whole of a long one."""
    text = reason or "rejected by RE2"
    return text if len(text) <= 200 else f"{text[:200]}..."


def _is_slice(part: str) -> bool:
    return part.endswith(".slice")


def _first_unit(parts: list[str]) -> Optional[str]:
    """The first component that is not a slice, if it is a unit; the last slice when there are
    only slices; None otherwise."""
    for part in parts:
        if not _is_slice(part):
            return part if part.endswith(_UNIT_SUFFIXES) else None
    return parts[-1] if parts else None


def _parts(cgroup: Optional[str]) -> list[str]:
    return [p for p in (cgroup or "").split("/") if p]


def unit_of(cgroup: Optional[str]) -> Optional[str]:
    """The system manager's unit of a cgroup path: the first component that is not a slice.

    systemd's system manager nests only slices and puts each unit's cgroup directly in a slice;
    whatever lies below a unit's cgroup was named by the unit's owner (a ``Delegate=yes``
    service, a container, a user's own systemd manager under ``user@UID.service``). So the
    first non-slice component is the only unit name a local user cannot choose:

        /system.slice/nginx.service                                     -> nginx.service
        /system.slice/foo.service/x/sshd.service                        -> foo.service
        /user.slice/user-1000.slice/user@1000.service/app.slice/a.scope -> user@1000.service
        /user.slice/user-1000.slice/session-2.scope                     -> session-2.scope
        /user.slice/user-1000.slice                                     -> user-1000.slice

    A slice when there are only slices; None when the first non-slice component is not a unit
    (outside systemd's tree: ``/kubepods/burstable/pod1/c1``).
    """
    return _first_unit(_parts(cgroup))


def _is_user_manager(part: str) -> bool:
    """``user@UID.service``: a user's own systemd manager (ASCII digits: ``str.isdigit`` also
    takes other scripts' digits)."""
    uid = part[len("user@") : -len(".service")]
    return (
        part.startswith("user@")
        and part.endswith(".service")
        and uid != ""
        and all("0" <= c <= "9" for c in uid)
    )


def user_unit_of(cgroup: Optional[str]) -> Optional[str]:
    """The unit of a user's own systemd manager: below ``user@UID.service``, the first component
    that is not a slice (``.../user@1000.service/app.slice/app-firefox-1.scope`` ->
    ``app-firefox-1.scope``). The user names these units (``systemd-run --user --unit=NAME``).
    None outside a user manager, and for the manager's own cgroup."""
    parts = _parts(cgroup)
    for i, part in enumerate(parts):
        if not _is_slice(part):
            return _first_unit(parts[i + 1 :]) if _is_user_manager(part) else None
    return None


@frozen
class Facts:
    """What rules can look at. ``cmdline`` and ``exe`` are read on demand through callables."""

    comm: Optional[str]  # None for a cgroup's own facts
    cgroup: Optional[str]
    uid: Optional[int]
    cmdline: Callable[[], Optional[str]]
    exe: Callable[[], Optional[str]]

    @classmethod
    def of_cgroup(cls, path: Optional[str]) -> Facts:
        """A cgroup's own facts: its path (and units); no process fields."""
        return cls(comm=None, cgroup=path, uid=None, cmdline=_nothing, exe=_nothing)


def _nothing() -> Optional[str]:
    return None


@frozen
class Rule:
    """One ``[[protect]]``/``[[ignore]]``/``[[prefer]]``/``[[avoid]]`` table of the policy.

    Read-only all the way down: ``patterns`` is a read-only mapping of read-only Patterns, since
    every plugin sees the policy (``RankContext.policy``) and a change would silently alter
    every later ranking."""

    kind: RuleKind
    patterns: Mapping[str, Pattern]
    points: float = 0.0
    label: str = ""  # where it came from, for explanations: "prefer[2]"

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", MappingProxyType(dict(self.patterns)))

    def matches(self, facts: Facts) -> bool:
        for name, pattern in self.patterns.items():
            value = self._fact(facts, name)
            if value is None or not pattern.search(value):
                return False
        return True

    @staticmethod
    def _fact(facts: Facts, name: str) -> Optional[str]:
        if name == "comm":
            return facts.comm
        if name == "cgroup":
            return facts.cgroup
        if name == "unit":
            return unit_of(facts.cgroup)
        if name == "user_unit":
            return user_unit_of(facts.cgroup)
        if name == "uid":
            return None if facts.uid is None else str(facts.uid)
        if name == "cmdline":
            return facts.cmdline()
        if name == "exe":
            return facts.exe()
        raise KeyError(name)

    def describe(self) -> str:
        fields = ", ".join(f"{k}~/{p.pattern}/" for k, p in self.patterns.items())
        return f"{self.label} ({fields})"

    @property
    def needs(self) -> frozenset[str]:
        return frozenset(self.patterns)
