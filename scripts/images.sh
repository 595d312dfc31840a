#!/usr/bin/env bash
# Builds every lotmesh runtime image with podman from deploy/Containerfile, tagged
# lotmesh/<process>:<version> and lotmesh/<process>:latest (`make images`), and
# lotmesh/backends (deploy/backends/Containerfile: PostgreSQL, RabbitMQ and Redis from
# Debian's packages, on the same base) for the Compose test where the official images cannot
# be pulled.
#
# The build stage needs a Debian bookworm image. It is used in this order:
#   1. $LOTMESH_BASE_IMAGE, when set (any image name podman has or can pull);
#   2. localhost/lotmesh/debian-build:<hash of the package lists>, when podman has it already;
#   3. debian:bookworm-slim, when it can be pulled;
#   4. otherwise made here with mmdebstrap from Debian's mirror, with the build packages of
#      deploy/Containerfile and the servers of deploy/backends/Containerfile already installed
#      (so their apt steps do nothing), and kept as a tarball in $LOTMESH_CACHE_DIR (default
#      /var/cache/lotmesh) for the next run.
# Prints one line per image with its size. Usage: scripts/images.sh [process...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
cache_dir=${LOTMESH_CACHE_DIR:-/var/cache/lotmesh}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
processes=("$@")
[ ${#processes[@]} -gt 0 ] || processes=(registry gateway articles charges backends)

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
version=${version#v}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
t0=$(date +%s)

# The package lists are the Containerfiles' own (the build stage's and the backends'), so the
# base always matches them; its tag carries their hash.
pkgs="$(sed -n 's/^ARG BUILD_PACKAGES="\(.*\)"$/\1/p' deploy/Containerfile) $(sed -n 's/^ARG SERVER_PACKAGES="\(.*\)"$/\1/p' deploy/backends/Containerfile)"
[ "$(echo "$pkgs" | wc -w)" -gt 3 ] || { echo "images.sh: no BUILD_PACKAGES/SERVER_PACKAGES in the Containerfiles" >&2; exit 1; }
key=$(printf '%s %s' "$pkgs" "$mirror" | sha256sum | cut -c1-12)
local_base=localhost/lotmesh/debian-build:$key
base=${LOTMESH_BASE_IMAGE:-}
if [ -z "$base" ] && podman image exists "$local_base"; then
  base=$local_base
fi
if [ -z "$base" ] && timeout 30 podman pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
  base=docker.io/library/debian:bookworm-slim
fi
if [ -z "$base" ]; then
  tarball=$cache_dir/debian-bookworm-build-$key.tar
  if [ ! -s "$tarball" ]; then
    mkdir -p "$cache_dir"
    echo "images.sh: making the Debian bookworm base with mmdebstrap (about 3 min, once)" >&2
    # --format=tar: the name decides the format otherwise, and a partial name ending in
    # anything but .tar would make a directory (with the host's /dev/shm bind-mounted in it
    # while it runs)
    part=$cache_dir/.partial-$key.tar
    trap 'rm -f "$part"' EXIT
    mmdebstrap --quiet --format=tar --variant=minbase --include="$(echo $pkgs | tr ' ' ,)" \
      bookworm "$part" "$mirror"
    mv "$part" "$tarball"
    trap - EXIT
  fi
  podman import -q "$tarball" "$local_base" >/dev/null
  base=$local_base
fi
t_base=$(date +%s)
# the base's name, for whoever builds from deploy/Containerfile here too (the workflow test)
mkdir -p build/images && echo "$base" > build/images/base

# oci-labels.sh: with buildah 1.28 the version and revision labels of a cached stage would be
# an older commit's (see there)
for p in "${processes[@]}"; do
  t=$(date +%s)
  if [ "$p" = backends ]; then
    file=(-f deploy/backends/Containerfile)
  else
    file=(-f deploy/Containerfile --target "$p")
  fi
  podman build -q --format docker --layers --pull=missing "${file[@]}" \
    --build-arg DEBIAN="$base" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    -t "lotmesh/$p:$version" -t "lotmesh/$p:latest" . >/dev/null
  scripts/oci-labels.sh "lotmesh/$p:latest,lotmesh/$p:$version" version="$version" revision="$revision"
  size=$(podman image inspect --format '{{.Size}}' "lotmesh/$p:latest")
  awk -v p="$p" -v v="$version" -v s="$size" -v t="$(( $(date +%s) - t ))" \
    'BEGIN{printf "images.sh: lotmesh/%s:%s  %.1f MB  (%d s)\n", p, v, s/1e6, t}'
done
# build-stage layers of earlier sources, no longer tagged, go after a day (today's stay as cache)
podman image prune -f --filter until=24h >/dev/null 2>&1 || true
echo "images.sh: base ${base} ($((t_base - t0)) s), images built in $(( $(date +%s) - t_base )) s" >&2
