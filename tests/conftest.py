"""Shared test fixtures. ``arena`` is a confined cgroup pair for live tests (tests/support/arena.py)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.arena import Arena

from guardian.host import Host

FIXTURES = Path(__file__).parent / "fixtures"
README = Path(__file__).parent.parent / "README.md"


def write(root: Path, rel: str, text: str) -> None:
    """Write ``text`` to ``root/rel``, making the directories on the way."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def report_keys(value: object, prefix: str = "", maps: tuple[str, ...] = ()) -> set[str]:
    """Every key path of a JSON report in the README's notation: ``a.b``, ``list[].c``; a list of
    records counts as ``path[]``; keys in ``maps`` hold free-form maps, documented whole."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            if not (isinstance(item, list) and item and isinstance(item[0], dict)):
                keys.add(path)
            if key not in maps:
                keys |= report_keys(item, path, maps)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        keys.add(f"{prefix}[]")
        for item in value:
            keys |= report_keys(item, f"{prefix}[]", maps)
    return keys


def documented_keys() -> set[str]:
    """The keys the README's tables document (first column, in backticks)."""
    return set(re.findall(r"^\| `([^`]+)` \|", README.read_text(), flags=re.MULTILINE))


def fixture_root(name: str) -> Path:
    return FIXTURES / name


@pytest.fixture
def live_host() -> Host:
    host = Host("/")
    if not os.path.exists(host.proc + "/self/status"):
        pytest.skip("no /proc")
    return host


@pytest.fixture
def arena(live_host: Host) -> Iterator[Arena]:
    layout = live_host.cgroup_layout()
    if os.geteuid() != 0 or layout.mode == "none":
        pytest.skip("needs root and a cgroup hierarchy")
    if layout.memory_controller is None:
        pytest.skip("no memory controller to confine a test")
    created = Arena(live_host, limit_bytes=256 * 1024 * 1024, prefix="guardian-test")
    try:
        yield created
    finally:
        created.cleanup()
