"""Kernel log fixtures as guardian reads them: dmesg text turned into /dev/kmsg records."""

from __future__ import annotations

import os
import re
from pathlib import Path

from guardian.records import KmsgRecord

KMSG_FIXTURES = Path(__file__).parent.parent / "fixtures" / "kmsg"
_DMESG = re.compile(r"\[\s*(\d+)\.(\d{6})\] (.*)")


def dmesg_records(text: str, first_seq: int = 1) -> list[KmsgRecord]:
    """``[  SSS.UUUUUU] message`` lines as kernel records (facility 0, level 6, numbered from
    ``first_seq``); lines of another shape (block headers of constructed.dmesg) are skipped."""
    records = []
    seq = first_seq
    for line in text.split("\n"):
        match = _DMESG.fullmatch(line)
        if match is None:
            continue
        time_us = int(match.group(1)) * 1_000_000 + int(match.group(2))
        records.append(KmsgRecord(0, 6, seq, time_us, "-", match.group(3)))
        seq += 1
    return records


def kmsg_line(record: KmsgRecord) -> bytes:
    """A record as /dev/kmsg prints it (escapes as the kernel writes them)."""
    raw = os.fsencode(record.text)
    text = b"".join(bytes((c,)) if 0x20 <= c < 0x7F and c != 0x5C else b"\\x%02x" % c for c in raw)
    head = f"{record.facility << 3 | record.level},{record.seq},{record.time_us},{record.flags};"
    return head.encode() + text + b"\n"


def dmesg_blocks(text: str) -> dict[str, list[KmsgRecord]]:
    """constructed.dmesg: its ``## label: ...`` blocks, by label."""
    blocks: dict[str, list[KmsgRecord]] = {}
    label = ""
    lines: list[str] = []
    for line in [*text.split("\n"), "## end:"]:
        if line.startswith("## "):
            if lines:
                blocks[label] = dmesg_records("\n".join(lines))
            label, lines = line[3:].split(":", 1)[0], []
        else:
            lines.append(line)
    return blocks
