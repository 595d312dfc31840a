#!/usr/bin/env bash
# Installs web/package-lock.json (npm swagger-ui-dist: the files the gateway serves at /docs,
# no CDN) into web/node_modules once; a second run with the same lock file does nothing.
# Usage: scripts/web.sh    (make build calls it)
set -euo pipefail
cd "$(dirname "$0")/../web"
installed() {
  [ -f node_modules/.package-lock.json ] &&
    [ node_modules/.package-lock.json -nt package-lock.json ] &&
    [ -f node_modules/swagger-ui-dist/swagger-ui-bundle.js ]
}
installed && exit 0
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "scripts/web.sh: $tool not found (install nodejs and npm)" >&2
    exit 3
  }
done
exec 9>.setup.lock
flock -w 300 9
installed && exit 0
echo "scripts/web.sh: npm ci (swagger-ui-dist for the gateway's /docs)" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
touch node_modules/.package-lock.json
