#!/usr/bin/env bash
# Build a minimal Debian bookworm root file system with systemd and dbus, for booting with
# systemd-nspawn in the adapter tests; with --node, a cluster node's root: also corosync and
# python3, locale and timezone set, no machine id (each node writes its own), corosync
# installed but *not* enabled and without its example key (a node enables it in its own
# overlay once it has written its corosync.conf and authkey).
#
#   image/rootfs.sh [--node] DIR
#
# DIR is the cache: a finished root carries DIR/.haos-rootfs and is reused as it is (the script
# prints DIR and exits). Callers must not boot DIR itself: boot an overlay or a copy so the cache
# stays clean. The build goes to DIR.partial and is renamed into place only when complete, so an
# interrupted build never leaves a half root that looks finished.
#
# The mirror is the one this machine's apt already uses (read at run time from
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); no host name lives in the repo.
set -euo pipefail

NODE=0
if [ "${1:-}" = "--node" ]; then NODE=1; shift; fi
if [ "$#" -ne 1 ]; then
    echo "usage: $0 [--node] DIR   (e.g. /var/cache/haos/rootfs)" >&2
    exit 2
fi
DIR=$(realpath -m "$1")
SUITE=bookworm
if [ "$NODE" = 1 ]; then
    STAMP="$DIR/.haos-noderoot"
    PACKAGES=systemd,systemd-sysv,dbus,corosync,python3
else
    STAMP="$DIR/.haos-rootfs"
    PACKAGES=systemd,systemd-sysv,dbus
fi

if [ -f "$STAMP" ]; then
    echo "$DIR"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: must run as root (debootstrap)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "$0: debootstrap is not installed" >&2; exit 1; }

# The first URI of a deb source that carries the plain suite (not -security, not -updates).
mirror_from_deb822() {
    awk -v suite="$SUITE" '
        /^[[:space:]]*$/ { if (uri != "" && ok && deb) { print uri; exit } uri=""; ok=0; deb=0; next }
        /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb=1 }
        /^URIs:/ { uri=$2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok=1 }
        END { if (uri != "" && ok && deb) print uri }
    ' "$@" 2>/dev/null | head -n1
}
mirror_from_list() {
    awk -v suite="$SUITE" '$1 == "deb" && $0 ~ (" " suite " ") {
        for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$@" 2>/dev/null |
        head -n1
}
MIRROR=""
shopt -s nullglob
sources=(/etc/apt/sources.list.d/*.sources)
lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
shopt -u nullglob
if [ "${#sources[@]}" -gt 0 ]; then MIRROR=$(mirror_from_deb822 "${sources[@]}"); fi
if [ -z "$MIRROR" ]; then MIRROR=$(mirror_from_list "${lists[@]}"); fi
if [ -z "$MIRROR" ]; then
    echo "$0: found no $SUITE mirror in the apt sources of this machine" >&2
    exit 1
fi

PARTIAL="$DIR.partial"
rm -rf "$PARTIAL"
mkdir -p "$(dirname "$DIR")"
echo "building $SUITE root in $DIR from $MIRROR" >&2
start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$PARTIAL" "$MIRROR" >&2

# Boot straight to a quiet multi-user system: no getty on the passive console, no first-boot
# questions, no timers that start work during tests.
ln -sf /lib/systemd/system/multi-user.target "$PARTIAL/etc/systemd/system/default.target"
for unit in console-getty.service getty@.service apt-daily.timer apt-daily-upgrade.timer \
        dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-firstboot.service; do
    ln -sf /dev/null "$PARTIAL/etc/systemd/system/$unit"
done
echo haos-node >"$PARTIAL/etc/hostname"
if [ "$NODE" = 1 ]; then
    echo "LANG=C.UTF-8" >"$PARTIAL/etc/locale.conf"
    echo "LANG=C.UTF-8" >"$PARTIAL/etc/default/locale"
    echo "Etc/UTC" >"$PARTIAL/etc/timezone"
    ln -sf /usr/share/zoneinfo/Etc/UTC "$PARTIAL/etc/localtime"
    echo "KEYMAP=us" >"$PARTIAL/etc/vconsole.conf"
    : >"$PARTIAL/etc/machine-id"
    rm -f "$PARTIAL/var/lib/dbus/machine-id"
    rm -f "$PARTIAL/etc/systemd/system/multi-user.target.wants/corosync.service"
    rm -f "$PARTIAL/etc/corosync/authkey"
    test -x "$PARTIAL/usr/sbin/corosync" && test -x "$PARTIAL/usr/bin/python3"
fi
rm -rf "$PARTIAL"/var/cache/apt/archives/*.deb "$PARTIAL"/var/lib/apt/lists/*

touch "$PARTIAL/$(basename "$STAMP")"
rm -rf "$DIR"
mv "$PARTIAL" "$DIR"
echo "built $DIR in $(($(date +%s) - start)) s" >&2
echo "$DIR"
