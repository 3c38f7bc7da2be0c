#!/usr/bin/env bash
# Install guardian as a systemd service on this host, as root, from this checkout:
#   /opt/guardian           a venv with guardian and its journald binding
#   /usr/local/bin/guardian the command (the unit's ExecStart)
#   /etc/guardian.toml      the shipped default policy (kept if one is already there)
#   /etc/systemd/system/guardian.service, and the journal catalog
# then enables and starts the service. Re-running upgrades the package and keeps the policy.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${GUARDIAN_PREFIX:-/opt/guardian}

if ! python3 -c 'import venv, ensurepip' 2>/dev/null || ! pkg-config --exists libsystemd 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev gcc pkg-config libsystemd-dev >/dev/null
fi
[ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check ".[journal]"
ln -sf "$PREFIX/bin/guardian" /usr/local/bin/guardian

if [ ! -e /etc/guardian.toml ]; then
    install -m 0644 etc/guardian.toml /etc/guardian.toml
fi
guardian check --policy /etc/guardian.toml

install -m 0644 packaging/guardian.service /etc/systemd/system/guardian.service
install -d /usr/local/lib/systemd/catalog
install -m 0644 packaging/guardian.catalog /usr/local/lib/systemd/catalog/guardian.catalog
journalctl --update-catalog 2>/dev/null || true
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now guardian.service
    systemctl --no-pager --lines=5 status guardian.service || true
else
    echo "install: systemd is not running here; start guardian with: systemctl enable --now guardian" >&2
fi
