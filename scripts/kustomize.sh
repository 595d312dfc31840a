#!/usr/bin/env bash
# kustomize.sh DIR — renders a kustomization offline to stdout, as `kubectl kustomize DIR`.
# Uses the machine's kubectl when its built-in kustomize is v4 or newer; otherwise the kubectl
# of Debian's kubernetes-client package (kustomize v2), unpacked once into
# $LOTMESH_CACHE_DIR/kubernetes-client (default /var/cache/lotmesh) without installing it, so
# an existing kubectl is left alone. deploy/k8s is written to render the same with both.
set -euo pipefail
if command -v kubectl >/dev/null 2>&1; then
  v=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"kustomizeVersion": *"v\([0-9]*\).*/\1/p')
  if [ -n "$v" ] && [ "$v" -ge 4 ]; then
    exec kubectl kustomize "$@"
  fi
fi
cache=${LOTMESH_CACHE_DIR:-/var/cache/lotmesh}/kubernetes-client
if [ ! -x "$cache/usr/bin/kubectl" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && { apt-get download kubernetes-client >/dev/null 2>&1 ||
                  { apt-get update -qq && apt-get download kubernetes-client >/dev/null; }; })
  mkdir -p "$cache.part"
  dpkg -x "$tmp"/kubernetes-client_*.deb "$cache.part"
  rm -rf "$cache" && mv "$cache.part" "$cache"
fi
exec "$cache/usr/bin/kubectl" kustomize "$@"
