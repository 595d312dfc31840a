#!/usr/bin/env bash
# Checks deploy/prometheus/ with Debian's promtool: the scrape configuration, the alert
# rules, and the rules' unit tests (each alert fires on the series that should raise it).
# Usage: scripts/promtool.sh    (make test runs it)
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
promtool check config --syntax-only prometheus.yml compose.yml
promtool check rules rules/*.yml
promtool test rules tests/*.yml
