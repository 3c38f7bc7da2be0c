"""Fuzz targets: property tests (hypothesis) that feed hostile input to guardian's parsers and its
policy loader and check that each answers with a result or its own documented error, never a
crash, a hang or a traceback.

Every target is marked ``fuzz``. In the fast suite (``bash scripts/test.sh``) they run the "ci"
profile: a bounded number of examples per target, together well under two minutes. A longer
run, for a review or after touching a parser:

    GUARDIAN_FUZZ_PROFILE=long .venv/bin/pytest tests/fuzz -m fuzz

(``GUARDIAN_FUZZ_EXAMPLES=N`` overrides the number of examples per target in either profile.)
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_EXAMPLES = os.environ.get("GUARDIAN_FUZZ_EXAMPLES")

settings.register_profile(
    "ci",
    max_examples=int(_EXAMPLES or 300),
    deadline=None,  # a slow machine is not a bug; hangs are caught by the targets' own bounds
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=int(_EXAMPLES or 200_000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("GUARDIAN_FUZZ_PROFILE", "ci"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fuzz/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.fuzz)
