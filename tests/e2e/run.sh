#!/usr/bin/env bash
# The slow suite: build the e2e guest image if it is not cached yet (as root), then boot it once
# per scenario under tests/e2e/scenarios/ and check each (see tests/e2e/README.md).
#   bash tests/e2e/run.sh [PYTEST ARGS...]      e.g. -k smoke
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/e2e/build_image.sh
GUARDIAN_E2E=1 .venv/bin/pytest tests/e2e -q "$@"
