#!/usr/bin/env bash
# Install guardian as a systemd service on this host, as root, from this checkout:
#   /opt/guardian           a venv with guardian and its journald binding
#   /usr/local/bin/guardian the command (the unit's ExecStart)
#   /etc/guardian.toml      the shipped default policy (kept if one is already there)
#   /etc/systemd/system/guardian.service, and the journal catalog
#   /usr/local/share/man/man8/guardian.8 and man5/guardian.toml.5, the bash completion
#   (/usr/local/share/bash-completion/completions/guardian) and the zsh completion
#   (/usr/local/share/zsh/site-functions/_guardian)
# then enables and starts the service. Re-running upgrades the package and keeps the policy.
# GUARDIAN_OFFLINE=1: fetch nothing (no apt-get, no package index); see the offline branch below.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${GUARDIAN_PREFIX:-/opt/guardian}

if [ "${GUARDIAN_OFFLINE:-0}" = 1 ]; then
    # Offline mode, for machines that reach no package index: the end-to-end test guest
    # (tests/e2e) has no network at all, and air-gapped hosts are the same. Nothing is fetched:
    # the dependencies come from Debian's packages (python3-venv python3-pip python3-setuptools
    # python3-wheel python3-pluggy python3-systemd python3-prometheus-client, plus python3-tomli
    # before Python 3.11) and
    # google-re2, which Debian does not package (its wheel, installed into the system's
    # site-packages: pip install --no-index --break-system-packages google_re2-*.whl), seen
    # through a venv with --system-site-packages; only guardian itself is built from this
    # checkout. --without-pip: the venv uses Debian's pip through the system
    # site-packages; bootstrapping a private pip (ensurepip) would install nothing that is not
    # already there, and costs ~40 s in the slow e2e guest.
    ready=1
    # setuptools first: once Debian's pip has imported the stdlib's distutils, importing
    # setuptools fails (its distutils shim asserts that it came first)
    python3 -c 'import setuptools, venv, pip, wheel, pluggy, re2, systemd.journal, prometheus_client' 2>/dev/null || ready=0
    python3 -c 'import tomllib' 2>/dev/null || python3 -c 'import tomli' 2>/dev/null || ready=0
    if [ "$ready" = 0 ]; then
        echo "install: GUARDIAN_OFFLINE=1 needs these Debian packages installed: python3-venv python3-pip" \
            "python3-setuptools python3-wheel python3-pluggy python3-systemd python3-prometheus-client" \
            "(and python3-tomli before Python 3.11), and google-re2 from its wheel" >&2
        exit 1
    fi
    [ -x "$PREFIX/bin/python" ] || python3 -m venv --system-site-packages --without-pip "$PREFIX"
    "$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --no-index .
    if ! "$PREFIX/bin/python" -c 'import guardian.cli, pluggy, re2, systemd.journal, prometheus_client' 2>/dev/null; then
        echo "install: $PREFIX does not see the system's packages; remove it and run again" >&2
        exit 1
    fi
else
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null || ! pkg-config --exists libsystemd 2>/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev gcc pkg-config libsystemd-dev >/dev/null
    fi
    [ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
    "$PREFIX/bin/python" -m pip install -q --disable-pip-version-check ".[journal]"
fi
ln -sf "$PREFIX/bin/guardian" /usr/local/bin/guardian

if [ ! -e /etc/guardian.toml ]; then
    install -m 0644 etc/guardian.toml /etc/guardian.toml
fi
guardian check --policy /etc/guardian.toml

install -m 0644 packaging/guardian.service /etc/systemd/system/guardian.service
install -d /usr/local/lib/systemd/catalog
install -m 0644 packaging/guardian.catalog /usr/local/lib/systemd/catalog/guardian.catalog
journalctl --update-catalog 2>/dev/null || true
# generated from the parser and the shipped policy (scripts/gen_packaging.py); man, bash-completion
# and zsh look in these directories without being told
install -D -m 0644 packaging/man/guardian.8 /usr/local/share/man/man8/guardian.8
install -D -m 0644 packaging/man/guardian.toml.5 /usr/local/share/man/man5/guardian.toml.5
install -D -m 0644 packaging/completion/guardian.bash /usr/local/share/bash-completion/completions/guardian
install -D -m 0644 packaging/completion/_guardian /usr/local/share/zsh/site-functions/_guardian
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now guardian.service
    systemctl --no-pager --lines=5 status guardian.service || true
else
    echo "install: systemd is not running here; start guardian with: systemctl enable --now guardian" >&2
fi
