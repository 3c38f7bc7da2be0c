"""Every scenario under tests/e2e/scenarios/ in a fresh QEMU guest, checked by its expect.py.

Opt-in (see conftest.py): ``GUARDIAN_E2E=1 .venv/bin/pytest tests/e2e -q``, or tests/e2e/run.sh,
which builds the guest image first. Results stay in GUARDIAN_E2E_RESULTS (default
/tmp/guardian-e2e-results/SCENARIO) for a look after a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e import vm

pytestmark = pytest.mark.e2e

RESULTS_ROOT = Path(os.environ.get("GUARDIAN_E2E_RESULTS", "/tmp/guardian-e2e-results"))


@pytest.fixture(scope="session")
def image() -> vm.Image:
    problem = vm.qemu_problem()
    if problem:
        pytest.skip(problem)
    try:
        return vm.find_image()
    except vm.ImageUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("scenario_dir", vm.scenario_dirs(), ids=lambda p: p.name)
def test_scenario(scenario_dir: Path, image: vm.Image) -> None:
    scenario = vm.load_scenario(scenario_dir)
    result = scenario.run(RESULTS_ROOT / scenario.name, image=image)
    failures = scenario.check(result)
    assert not failures, "\n".join([*failures, "", result.describe()])
