#!/usr/bin/env bash
# Build the haos appliance disk image with mkosi, or reuse the cached one, and print its path.
#
#   image/build.sh [--force]
#
# The image is cached as $HAOS_IMAGE_CACHE/<key>/haos.raw (default /var/cache/haos/image), the
# key being a hash of every input: the mkosi configuration, the haos sources and the units in
# units/, the version of the Python dependencies and of the host's mkosi and systemd. A second
# run with the same inputs prints the cached path at once; mkosi's own incremental cache makes
# a rebuild after a source change take seconds rather than minutes.
#
# The package-manager sources mkosi uses are generated here from this machine's own Debian
# sources (mkosi's defaults add a debug repository that not every mirror carries).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: must run as root (mkosi builds the image as root here)" >&2
    exit 1
fi
for tool in mkosi systemd-repart; do
    command -v "$tool" >/dev/null || { echo "$0: $tool missing; run scripts/setup-image.sh" >&2; exit 1; }
done

cache=${HAOS_IMAGE_CACHE:-/var/cache/haos/image}
venv_python="$repo/.venv/bin/python"
[ -x "$venv_python" ] || { echo "$0: no .venv; run scripts/setup.sh" >&2; exit 1; }
dbus_fast=$("$venv_python" -c 'import importlib.metadata as m; print(m.version("dbus-fast"))')
# The management daemon's web stack, at the versions the tests ran: bookworm's fastapi (0.92,
# pydantic 1) and uvicorn (0.17) are too old for it, so these come as wheels, with their
# dependencies, like dbus-fast.
mgmt=$("$venv_python" -c 'import importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in ("fastapi", "uvicorn", "prometheus_client")))')

inputs() {
    find mkosi.conf mkosi.conf.d mkosi.repart mkosi.extra mkosi.postinst mkosi.finalize \
        image/build.sh haos units pyproject.toml \
        -type f ! -path '*/__pycache__/*' ! -name '*.pyc' 2>/dev/null | LC_ALL=C sort
}
key=$( {
    inputs | while read -r f; do printf '%s\n' "$f"; sha256sum < "$f"; done
    echo "dbus-fast $dbus_fast $mgmt"
    dpkg-query -W -f='${Version}\n' mkosi systemd
} | sha256sum | cut -c1-16)
image="$cache/$key/haos.raw"
if [ -f "$image" ] && [ "$force" = 0 ]; then
    echo "$image"
    exit 0
fi

work="$cache/work"
staging="$work/extra"
pkgmngr="$work/pkgmngr"
rm -rf "$staging" "$pkgmngr" "$work/out"
mkdir -p "$staging/usr/lib/haos/python" "$staging/usr/lib/systemd/system" \
    "$pkgmngr/etc/apt/sources.list.d" "$work/out" "$work/wheels" "$cache/mkosi"

# This machine's own Debian sources, as the only ones apt sees while building.
cp /etc/apt/sources.list.d/debian.sources "$pkgmngr/etc/apt/sources.list.d/mkosi.sources"

# haos itself (the source tree, without caches), dbus-fast, which bookworm has only in an
# older major version, and the management daemon's web stack; the other dependencies are
# Debian packages (mkosi.conf).
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - haos \
    | tar -C "$staging/usr/lib/haos/python" -xf -
"$venv_python" -m pip download -q --only-binary=:all: --no-deps \
    --dest "$work/wheels" "dbus-fast==$dbus_fast" >&2
"$venv_python" -m pip install -q --no-deps --no-index --no-compile \
    --target "$staging/usr/lib/haos/python" "$work/wheels"/dbus_fast-"$dbus_fast"-*.whl >&2
# shellcheck disable=SC2086 # one argument per requirement
"$venv_python" -m pip install -q --only-binary=:all: --no-compile \
    --target "$staging/usr/lib/haos/python" $mgmt >&2
rm -rf "$staging/usr/lib/haos/python/bin"

# The haos units that exist now; the boot check waits for every one of them.
shopt -s nullglob
units=(units/*.service)
if [ "${#units[@]}" -gt 0 ]; then
    install -m 0644 "${units[@]}" "$staging/usr/lib/systemd/system/"
fi
# Their systemd manager settings (the hardware watchdog), after the image's own defaults.
confs=(units/system.conf.d/*.conf)
if [ "${#confs[@]}" -gt 0 ]; then
    install -D -m 0644 -t "$staging/etc/systemd/system.conf.d/" "${confs[@]}"
fi
shopt -u nullglob

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
release="${version}+${key:0:8}"
start=$(date +%s)
# mkosi must run with the system Python, not the virtualenv's.
PATH=/usr/sbin:/usr/bin:/sbin:/bin mkosi \
    --directory="$repo" \
    --extra-tree="$staging" \
    --package-manager-tree="$pkgmngr" \
    --output-dir="$work/out" \
    --cache-dir="$cache/mkosi" \
    --incremental=yes \
    --environment="HAOS_RELEASE=$release" \
    --force build >&2
echo "image/build.sh: built release $release in $(( $(date +%s) - start )) s" >&2

mkdir -p "$cache/$key.partial"
mv "$work/out/haos.raw" "$cache/$key.partial/haos.raw"
echo "$release" > "$cache/$key.partial/release"
rm -rf "$cache/$key"
mv "$cache/$key.partial" "$cache/$key"
# Keep the two newest images; older ones only take space.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name '????????????????' -printf '%T@ %p\n' \
    | sort -rn | tail -n +3 | cut -d' ' -f2- | xargs -r rm -rf
echo "$image"
