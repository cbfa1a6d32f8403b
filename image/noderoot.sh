#!/usr/bin/env bash
# Build (or reuse) a cluster node's root file system: image/rootfs.sh --node DIR.
#
#   image/noderoot.sh DIR   (e.g. /var/cache/haos/noderoot)
exec "$(dirname "$0")/rootfs.sh" --node "$@"
