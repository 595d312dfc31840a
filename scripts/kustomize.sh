#!/usr/bin/env bash
# kustomize.sh DIR — renders a kustomization offline to stdout, as `kubectl kustomize DIR`.
# deploy/k8s uses the current kustomize fields (`resources`, `patches`, `labels`), which need
# kustomize v4 or newer: a kubectl of 1.21 or newer (built-in kustomize), else a standalone
# `kustomize` on PATH. Debian bookworm's kubernetes-client (kubectl 1.20, kustomize v2) is too
# old for them and is not used; without either, this fails with one line saying so.
set -euo pipefail
if command -v kubectl >/dev/null 2>&1; then
  v=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"kustomizeVersion": *"v\([0-9]*\).*/\1/p')
  if [ -n "$v" ] && [ "$v" -ge 4 ]; then
    exec kubectl kustomize "$@"
  fi
fi
if command -v kustomize >/dev/null 2>&1; then
  v=$(kustomize version 2>/dev/null | sed -n 's/^v\{0,1\}\([0-9][0-9]*\)\..*/\1/p; s/.*Version:[^0-9]*\([0-9][0-9]*\)\..*/\1/p' | head -n1)
  if [ -n "$v" ] && [ "$v" -ge 4 ]; then
    exec kustomize build "$@"
  fi
fi
echo "kustomize.sh: needs kustomize v4 or newer: kubectl 1.21+ or a kustomize binary on PATH (Debian's kubectl 1.20 is too old for deploy/k8s)" >&2
exit 2
