#!/usr/bin/env bash
# Set up guardian on a fresh Debian machine, as root: system packages, a venv in .venv with the
# package (editable), its journald binding and the test tools, and the example plugin. man-db
# (with groff) and zsh are for the tests of the man pages and the shell completion; debhelper,
# dh-python, pybuild-plugin-pyproject, python3-all-dev, python3-setuptools, python3-wheel,
# libre2-dev, g++ and lintian for the Debian package's build (scripts/build_deb.sh,
# tests/test_debian.py) and its RE2 binding (tests/test_regex_engine.py); dbus-daemon
# and python3-jeepney for the test of the notification plugin (a private session bus, and a
# Python with jeepney that an unprivileged user can run).
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in python3-venv python3-dev gcc g++ pkg-config libsystemd-dev libre2-dev man-db zsh \
    dbus-daemon python3-jeepney debhelper dh-python pybuild-plugin-pyproject python3-all-dev \
    python3-setuptools python3-wheel lintian; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,journal]'
# the example third-party plugin, so the tests can prove entry-point discovery
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e plugins/guardian-example-scorer
# the notification plugin's one dependency, for its tests; the plugin itself is loaded from its
# file by them (installed, its entry point would load in every guardian the suite starts)
.venv/bin/python -m pip install -q --disable-pip-version-check 'jeepney>=0.8'
echo "setup: guardian $(.venv/bin/guardian --version | cut -d' ' -f2) ready in .venv" >&2
