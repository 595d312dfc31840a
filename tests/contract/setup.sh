#!/usr/bin/env bash
# Installs the contract-test tools of package-lock.json into tests/contract/node_modules
# (an OpenAPI 3.1 validator and Ajv for JSON Schema 2020-12), once: a second run with the
# same lock file does nothing. Needs node and npm (scripts/deps.sh installs them).
# Usage: tests/contract/setup.sh    (the contract tests call it themselves)
set -euo pipefail
cd "$(dirname "$0")"

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "tests/contract/setup.sh: $tool not found (install nodejs and npm)" >&2
    exit 3
  }
done

# npm writes node_modules/.package-lock.json after a complete install: when it is newer than
# the lock file, the tree is the one the lock describes
installed() {
  [ -f node_modules/.package-lock.json ] &&
    [ node_modules/.package-lock.json -nt package-lock.json ] &&
    [ -f node_modules/@seriousme/openapi-schema-validator/package.json ] &&
    [ -f node_modules/ajv/package.json ] && [ -f node_modules/ajv-formats/package.json ]
}
installed && exit 0

# one installer at a time (parallel test runs share the folder)
exec 9>.setup.lock
flock -w 300 9
installed && exit 0
echo "tests/contract/setup.sh: npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
touch node_modules/.package-lock.json
