#!/usr/bin/env bash
# Installs the page-test tools of package-lock.json into tests/pages/node_modules once
# (playwright-core, which drives Debian's /usr/bin/chromium — no browser is downloaded —
# and @elastic/mockotlpserver); a second run with the same lock file does nothing.
# Usage: tests/pages/setup.sh    (the tests call it themselves)
# The installer is shared: scripts/npm-tools.sh.
exec "$(dirname "$0")/../../scripts/npm-tools.sh" "$(dirname "$0")"
