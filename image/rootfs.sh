#!/usr/bin/env bash
# Build a minimal Debian bookworm root file system with systemd and dbus, for booting with
# systemd-nspawn in the adapter tests; with --node, a cluster node's root: also corosync,
# python3 and what the components the nodes run need (iproute2, procps, Debian's OCF
# resource agents with send_arp, Pacemaker's OCF agents), the fence agents with ipmitool,
# locale and timezone set, no machine id (each node writes its own), corosync installed but
# *not* enabled and without its example key (a node enables it in its own overlay once it has
# written its corosync.conf and authkey).
#
#   image/rootfs.sh [--node] [--lock FILE] DIR
#
# DIR is the cache: a finished root carries a stamp (DIR/.haos-rootfs, DIR/.haos-noderoot)
# holding a hash of its recipe (suite, package list, revision of the steps below) and is
# reused as it is while that matches (the script prints DIR and exits). A root built from
# another recipe -- an older package list -- is built again. Callers must not boot DIR itself:
# boot an overlay or a copy so the cache stays clean. The build goes to DIR.partial (one
# build at a time: DIR.build-lock) and replaces DIR only when complete, so an interrupted
# build never leaves a half root that looks finished. With --lock, the old root is swapped
# out and removed while holding FILE (flock), the lock the users of DIR hold while they boot
# overlays of it: no running node loses its lower layer. Whoever already holds FILE (a test
# run under it) calls this without --lock.
#
# The mirror is the one this machine's apt already uses (read at run time from
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); no host name lives in the repo.
set -euo pipefail

NODE=0
LOCK=""
while [ "$#" -gt 1 ]; do
    case "$1" in
        --node) NODE=1; shift ;;
        --lock) LOCK=$2; shift 2 ;;
        *) break ;;
    esac
done
if [ "$#" -ne 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 [--node] [--lock FILE] DIR   (e.g. /var/cache/haos/rootfs)" >&2
    exit 2
fi
DIR=$(realpath -m "$1")
SUITE=bookworm
# Bump when a step after debootstrap changes what a finished root holds.
REVISION=2
if [ "$NODE" = 1 ]; then
    STAMP="$DIR/.haos-noderoot"
    # resource-agents brings send_arp (IPaddr2); pacemaker-resource-agents Stateful and Dummy;
    # fence-agents (bookworm has no smaller package with fence_ipmilan) and ipmitool, which
    # fence_ipmilan runs, are the cluster daemon's fence devices ([fencing] agent = ...);
    # python3-cffi-backend is named because debootstrap does not resolve the virtual package
    # (python3-cffi-backend-api-*) that fence-agents' python3-cryptography needs.
    PACKAGES=systemd,systemd-sysv,dbus,corosync,python3,iproute2,procps,resource-agents
    PACKAGES=$PACKAGES,pacemaker-resource-agents,fence-agents,ipmitool,python3-cffi-backend
else
    STAMP="$DIR/.haos-rootfs"
    PACKAGES=systemd,systemd-sysv,dbus
fi
RECIPE=$(printf '%s\n' "suite $SUITE" "packages $PACKAGES" "revision $REVISION" | sha256sum |
    cut -c1-16)

current() { [ "$(cat "$STAMP" 2>/dev/null)" = "$RECIPE" ]; }

if current; then
    echo "$DIR"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: must run as root (debootstrap)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "$0: debootstrap is not installed" >&2; exit 1; }
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.build-lock"
flock 9
if current; then  # another build finished it while this one waited
    echo "$DIR"
    exit 0
fi

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
    # cluster-glue's log daemon: the agents log to stderr, which the node agent records.
    rm -f "$PARTIAL/etc/systemd/system/multi-user.target.wants/logd.service"
    for tool in usr/sbin/corosync usr/bin/python3 bin/ip usr/libexec/heartbeat/send_arp \
            usr/lib/ocf/resource.d/heartbeat/IPaddr2 usr/lib/ocf/resource.d/pacemaker/Stateful \
            usr/sbin/fence_ipmilan usr/bin/ipmitool; do
        test -x "$PARTIAL/$tool" || { echo "$0: $tool missing in the built root" >&2; exit 1; }
    done
fi
rm -rf "$PARTIAL"/var/cache/apt/archives/*.deb "$PARTIAL"/var/lib/apt/lists/*

echo "$RECIPE" >"$PARTIAL/$(basename "$STAMP")"
# The old root goes only once nobody boots from it: removing a lower layer under a running
# overlay is undefined. DIR itself is never missing for longer than between two renames.
swap='rm -rf "$2" && if [ -e "$1" ]; then mv "$1" "$2"; fi && mv "$3" "$1" && rm -rf "$2"'
if [ -n "$LOCK" ]; then
    flock "$LOCK" sh -c "$swap" sh "$DIR" "$DIR.old" "$PARTIAL"
else
    sh -c "$swap" sh "$DIR" "$DIR.old" "$PARTIAL"
fi
echo "built $DIR in $(($(date +%s) - start)) s" >&2
echo "$DIR"
