#!/usr/bin/env bash
# Builds every lotmesh runtime image with podman from deploy/Containerfile, tagged
# lotmesh/<process>:<version> and lotmesh/<process>:latest (`make images`).
#
# The build stage needs a Debian bookworm image. It is used in this order:
#   1. $LOTMESH_BASE_IMAGE, when set (any image name podman has or can pull);
#   2. localhost/lotmesh/debian-build:bookworm, when podman has it already;
#   3. debian:bookworm-slim, when it can be pulled;
#   4. otherwise made here with mmdebstrap from Debian's mirror, with the build packages
#      the Containerfile names already installed (so its apt step does nothing), and kept as
#      a tarball in $LOTMESH_CACHE_DIR (default /var/cache/lotmesh) for the next run.
# Prints one line per image with its size. Usage: scripts/images.sh [process...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
cache_dir=${LOTMESH_CACHE_DIR:-/var/cache/lotmesh}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
local_base=localhost/lotmesh/debian-build:bookworm
processes=("$@")
[ ${#processes[@]} -gt 0 ] || processes=(registry gateway articles charges)

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
version=${version#v}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
t0=$(date +%s)

base=${LOTMESH_BASE_IMAGE:-}
if [ -z "$base" ] && podman image exists "$local_base"; then
  base=$local_base
fi
if [ -z "$base" ] && timeout 30 podman pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
  base=docker.io/library/debian:bookworm-slim
fi
if [ -z "$base" ]; then
  # The package list is the Containerfile's own, so the base always matches it.
  pkgs=$(sed -n 's/^ARG BUILD_PACKAGES="\(.*\)"$/\1/p' deploy/Containerfile)
  [ -n "$pkgs" ] || { echo "images.sh: no BUILD_PACKAGES in deploy/Containerfile" >&2; exit 1; }
  key=$(printf '%s %s' "$pkgs" "$mirror" | sha256sum | cut -c1-12)
  tarball=$cache_dir/debian-bookworm-build-$key.tar
  if [ ! -s "$tarball" ]; then
    mkdir -p "$cache_dir"
    echo "images.sh: making the Debian bookworm build base with mmdebstrap (about 2 min, once)" >&2
    # --format=tar: the name decides the format otherwise, and a partial name ending in
    # anything but .tar would make a directory (with the host's /dev/shm bind-mounted in it
    # while it runs)
    part=$cache_dir/.partial-$key.tar
    trap 'rm -f "$part"' EXIT
    mmdebstrap --quiet --format=tar --variant=minbase --include="$(echo "$pkgs" | tr ' ' ,)" \
      bookworm "$part" "$mirror"
    mv "$part" "$tarball"
    trap - EXIT
  fi
  podman import -q "$tarball" "$local_base" >/dev/null
  base=$local_base
fi
t_base=$(date +%s)

for p in "${processes[@]}"; do
  podman build -q --format docker --layers --pull=missing -f deploy/Containerfile --target "$p" \
    --build-arg DEBIAN="$base" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    -t "lotmesh/$p:$version" -t "lotmesh/$p:latest" . >/dev/null
  size=$(podman image inspect --format '{{.Size}}' "lotmesh/$p:latest")
  awk -v p="$p" -v v="$version" -v s="$size" 'BEGIN{printf "images.sh: lotmesh/%s:%s  %.1f MB\n", p, v, s/1e6}'
done
# build-stage layers of earlier sources, no longer tagged, go after a day (today's stay as cache)
podman image prune -f --filter until=24h >/dev/null 2>&1 || true
echo "images.sh: base ${base} ($((t_base - t0)) s), images built in $(( $(date +%s) - t_base )) s" >&2
