#!/usr/bin/env bash
# bench/events.sh <build_dir> — the events benchmark in one run (bench/events_bench.py):
# relay throughput with confirms against a bare rabbitmq-c publisher on the same broker, and
# the end-to-end lag commit → applied at 1,000 and 5,000 events/s over RabbitMQ and the
# built-in feed. `make bench-events` builds build/release and installs what it needs first.
# Knobs: ROUNDS, N, RATES, DURATION, TRANSPORTS, KEEP_TMP (see bench/events_bench.py).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "usage: bench/events.sh <build_dir>" >&2; exit 2; }
for t in wrk /usr/bin/python3; do
  command -v "$t" >/dev/null || { echo "events.sh: '$t' missing: run scripts/deps.sh bench" >&2; exit 2; }
done
[ -x "$1/lm_evbench" ] || { echo "events.sh: $1/lm_evbench not built" >&2; exit 2; }
exec /usr/bin/python3 "$HERE/events_bench.py" "$1"
