#!/usr/bin/env bash
# bench/events_amqp.sh <build_dir> — the RabbitMQ events benchmark in one run, one broker
# (bench/events_amqp.py): relay throughput with confirms against a bare rabbitmq-c publisher,
# then the end-to-end lag commit → applied (bench/events_lag.py) over that broker.
# `make bench-events-amqp` builds build/release and installs what it needs first.
# Knobs: ROUNDS, N, RATES, DURATION, CONNS (see bench/events_amqp.py).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "usage: bench/events_amqp.sh <build_dir>" >&2; exit 2; }
[ -x "$1/lm_evbench" ] || { echo "events_amqp.sh: $1/lm_evbench not built" >&2; exit 2; }
exec /usr/bin/python3 "$HERE/events_amqp.py" "$1"
