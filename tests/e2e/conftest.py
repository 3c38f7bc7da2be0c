"""The end-to-end suite: opt-in (GUARDIAN_E2E=1, or ``-m e2e``), so the fast suite stays fast."""

from __future__ import annotations

import os

import pytest

E2E_MARKER = (
    "e2e: boots a QEMU guest with full systemd (tests/e2e, minutes); runs only with GUARDIAN_E2E=1 or -m e2e"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", E2E_MARKER)


def e2e_enabled(config: pytest.Config) -> bool:
    return os.environ.get("GUARDIAN_E2E") == "1" or config.getoption("markexpr", "") == "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if e2e_enabled(config):
        return
    skip = pytest.mark.skip(
        reason="end-to-end VM test: opt in with GUARDIAN_E2E=1 (or -m e2e); see tests/e2e/README.md"
    )
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)
