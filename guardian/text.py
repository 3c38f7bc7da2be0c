"""Text that came from the kernel or from a process, made safe to show.

cgroup names and process names are any bytes a user chose: guardian keeps undecodable bytes as
surrogate escapes (``os.fsdecode``), so a path read from /proc/PID/cgroup still names the real
directory. Such text must not reach a terminal, a log line or journald as it is: a newline in a
comm would start a forged line, and a lone surrogate cannot even be encoded as UTF-8.
``shown()`` is the one way to turn it into printable text. ``human_bytes()`` is the one way
sizes are printed.
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
