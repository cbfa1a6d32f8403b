#!/usr/bin/env bash
# Build a Debian bookworm root file system for cluster nodes booted with systemd-nspawn:
# systemd, dbus, corosync and python3 (see haos/cluster/harness/nspawn.py).
#
#   image/noderoot.sh DIR
#
# DIR is the cache (e.g. /var/cache/haos/noderoot): a finished root carries DIR/.haos-noderoot
# and is reused as it is (the script prints DIR and exits). Callers must not boot DIR itself:
# boot an overlay so the cache stays clean. The build goes to DIR.partial and is renamed into
# place only when complete, so an interrupted build never leaves a half root that looks
# finished.
#
# corosync is installed but *not* enabled: a node enables it in its own overlay once it has
# written its corosync.conf and authkey, so the cache never starts a corosync with the
# package's single-node example configuration.
#
# The mirror is the one this machine's apt already uses (read at run time from
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); no host name lives in the repo.
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 DIR   (e.g. /var/cache/haos/noderoot)" >&2
    exit 2
fi
DIR=$(realpath -m "$1")
STAMP="$DIR/.haos-noderoot"
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,corosync,python3

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
echo "building $SUITE node root in $DIR from $MIRROR" >&2
start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$PARTIAL" "$MIRROR" >&2

# Boot straight to a quiet multi-user system: no getty on the passive console, no first-boot
# questions (locale, timezone, machine id), no timers that start work during tests.
ln -sf /lib/systemd/system/multi-user.target "$PARTIAL/etc/systemd/system/default.target"
for unit in console-getty.service getty@.service apt-daily.timer apt-daily-upgrade.timer \
        dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-firstboot.service; do
    ln -sf /dev/null "$PARTIAL/etc/systemd/system/$unit"
done
echo "LANG=C.UTF-8" >"$PARTIAL/etc/locale.conf"
echo "LANG=C.UTF-8" >"$PARTIAL/etc/default/locale"
echo "Etc/UTC" >"$PARTIAL/etc/timezone"
ln -sf /usr/share/zoneinfo/Etc/UTC "$PARTIAL/etc/localtime"
echo "KEYMAP=us" >"$PARTIAL/etc/vconsole.conf"
echo haos-node >"$PARTIAL/etc/hostname"
# Each node writes its own machine id into its overlay; the cache has none.
: >"$PARTIAL/etc/machine-id"
rm -f "$PARTIAL/var/lib/dbus/machine-id"

# corosync: installed, not enabled, no example configuration or key (see the header).
rm -f "$PARTIAL/etc/systemd/system/multi-user.target.wants/corosync.service"
rm -f "$PARTIAL/etc/corosync/authkey"
test -x "$PARTIAL/usr/sbin/corosync" && test -x "$PARTIAL/usr/bin/python3"

rm -rf "$PARTIAL"/var/cache/apt/archives/*.deb "$PARTIAL"/var/lib/apt/lists/*

touch "$PARTIAL/.haos-noderoot"
rm -rf "$DIR"
mv "$PARTIAL" "$DIR"
echo "built $DIR in $(($(date +%s) - start)) s" >&2
echo "$DIR"
