#!/usr/bin/env bash
# Installs the page-test tools of package-lock.json into tests/pages/node_modules once
# (playwright-core, which drives Debian's /usr/bin/chromium — no browser is downloaded —
# and @elastic/mockotlpserver); a second run with the same lock file does nothing.
# Usage: tests/pages/setup.sh    (the tests call it themselves)
set -euo pipefail
cd "$(dirname "$0")"
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "tests/pages/setup.sh: $tool not found (install nodejs and npm)" >&2
    exit 3
  }
done
installed() {
  [ -f node_modules/.package-lock.json ] &&
    [ node_modules/.package-lock.json -nt package-lock.json ] &&
    [ -f node_modules/playwright-core/package.json ] &&
    [ -f node_modules/@elastic/mockotlpserver/package.json ]
}
installed && exit 0
exec 9>.setup.lock
flock -w 300 9
installed && exit 0
echo "tests/pages/setup.sh: npm ci" >&2
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2
touch node_modules/.package-lock.json
