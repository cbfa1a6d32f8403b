#!/usr/bin/env bash
# Host tools for the appliance image and its QEMU tests: mkosi 24 and systemd >= 254 from
# bookworm-backports, QEMU (TCG), OVMF, kmod (depmod), and the partitioning and file system
# tools mkosi drives. Idempotent: a second run only checks what is already there.
#
# The backports source is derived from this machine's own Debian source entry (its URIs and
# keyring), so the image is built from whatever mirror the machine is set up with.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

SOURCES=/etc/apt/sources.list.d/debian.sources
BACKPORTS=/etc/apt/sources.list.d/haos-backports.sources

# "URIs: ..." and "Signed-By: ..." of the first deb822 stanza whose suites include bookworm.
main_stanza() {
    awk '
    function flush() {
        if (!done && uris != "" && suites ~ /(^|[ \t])bookworm([ \t]|$)/) {
            print uris; if (key != "") print key; done = 1
        }
        uris = ""; suites = ""; key = ""
    }
    /^[ \t]*$/ { flush(); next }
    /^URIs:/ { uris = $0 } /^Suites:/ { suites = $0 } /^Signed-By:/ { key = $0 }
    END { flush() }' "$1"
}

if [ ! -f "$BACKPORTS" ]; then
    [ -f "$SOURCES" ] || { echo "setup-image: $SOURCES not found" >&2; exit 1; }
    stanza="$(main_stanza "$SOURCES")"
    [ -n "$stanza" ] || { echo "setup-image: no bookworm entry in $SOURCES" >&2; exit 1; }
    printf 'Types: deb\n%s\nSuites: bookworm-backports\nComponents: main\n' "$stanza" \
        | $SUDO tee "$BACKPORTS.tmp" >/dev/null
    $SUDO mv "$BACKPORTS.tmp" "$BACKPORTS"
    $SUDO apt-get update -q
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
version_at_least() { dpkg --compare-versions "$(dpkg-query -W -f='${Version}' "$1")" ge "$2"; }

export DEBIAN_FRONTEND=noninteractive
if ! installed mkosi || ! version_at_least mkosi 24 || ! version_at_least systemd 254; then
    $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports \
        mkosi systemd systemd-boot systemd-boot-efi systemd-container libsystemd-shared udev \
        libsystemd0 libudev1 bubblewrap
fi

APT_PACKAGES=(qemu-system-x86 qemu-utils ovmf kmod dosfstools mtools e2fsprogs
              squashfs-tools zstd cpio apt dpkg debian-archive-keyring gnupg
              python3-pip python3-venv socat)
missing=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "image tools set up: mkosi $(dpkg-query -W -f='${Version}' mkosi)," \
     "systemd $(dpkg-query -W -f='${Version}' systemd)"
