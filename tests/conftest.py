"""Shared test fixtures. ``arena`` is a confined cgroup pair for live tests (guardian/arena.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from guardian.arena import Arena
from guardian.host import Host

FIXTURES = Path(__file__).parent / "fixtures"


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
