#!/usr/bin/env bash
# The whole fast suite: lint, types, tests (live tests included where this machine allows).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check guardian tests bench plugins scripts
.venv/bin/ruff format --check guardian tests bench plugins scripts
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
