#!/usr/bin/env bash
# bench/events.sh <build_dir> [RATE...] — end-to-end event lag from commit to applied in the
# consumer (articles -> charges), at 1,000 and 5,000 events/s by default, on the transport
# EVENT_BROKER_URL selects (unset: the built-in feed). See bench/events_lag.py and
# bench/README.md. Knobs: DURATION=5 (s per rate), CONNS=32.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { echo "usage: bench/events.sh <build_dir> [RATE...]" >&2; exit 2; }
exec /usr/bin/python3 "$HERE/events_lag.py" "$@"
