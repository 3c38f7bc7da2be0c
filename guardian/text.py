"""Text that came from the kernel or from a process, made safe to show.

cgroup names and process names are any bytes a user chose: guardian keeps undecodable bytes as
surrogate escapes (``os.fsdecode``), so a path read from /proc/PID/cgroup still names the real
directory. Such text must not reach a terminal, a log line or journald as it is: a newline in a
comm would start a forged line, and a lone surrogate cannot even be encoded as UTF-8.
``shown()`` is the one way to turn it into printable text. ``human_bytes()`` is the one way
sizes are printed, ``middle()`` the one way a long name is shortened for a table, ``cut()`` the
one way a line is fitted to a terminal's width, ``counted()`` the one way a count is said.
"""

from __future__ import annotations

import re
from typing import Optional

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` with control characters, line separators and undecodable bytes written as
    ``\\n``, ``\\xNN``, ``\\uNNNN``: one printable line, valid UTF-8."""
    return _UNSAFE.sub(_escape, text)


def human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


ELLIPSIS = "\u2026"


def middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: the middle cut out and marked, so that both
    ends stay (a cgroup path's slice and its unit, a pod's QoS class and its container)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = (width - 1) // 3
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def cells(char: str) -> int:
    """How many terminal columns ``char`` takes: 2 for East Asian wide and fullwidth characters,
    0 for combining marks and format characters, 1 for the rest (wcwidth(3), for the characters
    shown() lets through)."""
    import unicodedata  # noqa: PLC0415  (only a terminal view needs it, not the daemon)

    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cut(line: str, width: int) -> str:
    """``line`` in at most ``width`` terminal columns: its end cut off and marked, so that a
    line never wraps (a wrapped line would push an in-place view down the screen). ``line`` is
    one line of shown() text: no control character, so every character has a width."""
    if width < 1:
        return ""
    if line.isascii():  # one column each
        return line if len(line) <= width else line[: width - 1] + ELLIPSIS
    used = 0
    keep = len(line)  # the characters that fit with a column left for the mark
    for i, char in enumerate(line):
        used += cells(char)
        if used > width - 1 and keep == len(line):
            keep = i
        if used > width:  # does not fit: stop counting here
            return line[:keep] + ELLIPSIS
    return line


def counted(n: int, singular: str, plural: Optional[str] = None) -> str:
    """``1 process``, ``2 processes``, ``0 cgroup rules``."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
