#!/usr/bin/env bash
# The peer benchmark (on demand, not in CI): every e2e scenario with guardian, earlyoom, nohang,
# systemd-oomd and no daemon; prints one table (see tests/e2e/bench.py). As root, after
# scripts/setup.sh. About 70 minutes for everything on 2 cores.
#   bash tests/e2e/bench.sh [--daemons LIST] [--scenarios LIST] [--markdown docs/benchmark.md] ...
#   bash tests/e2e/bench.sh --repeat 3 --reuse     # N runs of each cell (the stall column's noise)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/e2e/build_image.sh
exec .venv/bin/python tests/e2e/bench.py "$@"
