#!/usr/bin/env bash
# Set up a Debian 12 machine for haos: system packages, then a virtualenv in .venv
# with haos installed in editable mode together with its test tools.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# System packages the project needs (policy tier: Python; cluster tier: corosync & co).
APT_PACKAGES=(python3 python3-venv python3-dev gcc git iproute2 nftables util-linux
              corosync libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev libcorosync-common-dev
              fence-agents ipmitool openipmi debootstrap systemd-container
              resource-agents pacemaker-resource-agents)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.haos-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
./scripts/setup-image.sh
# The root file system of the systemd cluster nodes (demo, scenario tests); cached, and built
# again (about a minute) when its package list changes. The rebuilt root replaces the old one
# while holding the lock that cluster test runs hold (flock /tmp/haos-cluster.lock pytest ...),
# so none of them loses the root its nodes run on; do not run this script under that lock.
image/noderoot.sh --lock /tmp/haos-cluster.lock /var/cache/haos/noderoot >/dev/null
echo "haos set up in $(pwd)/.venv"
