#!/usr/bin/env bash
# Installs the contract-test tools of package-lock.json into tests/contract/node_modules
# (an OpenAPI 3.1 validator and Ajv for JSON Schema 2020-12), once: a second run with the
# same lock file does nothing. Needs node and npm (scripts/deps.sh installs them).
# Usage: tests/contract/setup.sh    (the contract tests call it themselves)
# The installer is shared: scripts/npm-tools.sh.
exec "$(dirname "$0")/../../scripts/npm-tools.sh" "$(dirname "$0")"
