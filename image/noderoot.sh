#!/usr/bin/env bash
# Build (or reuse) a cluster node's root file system: image/rootfs.sh --node [--lock FILE] DIR
# (see there: the root is built again when its package list changes).
#
#   image/noderoot.sh [--lock FILE] DIR   (e.g. /var/cache/haos/noderoot)
exec "$(dirname "$0")/rootfs.sh" --node "$@"
