#!/usr/bin/env bash
# bench/instr.sh <build_dir> [<other_build_dir>] — user-space instructions per request of
# lotmesh-registry's GET /health, counted by valgrind's callgrind: exact and repeatable where
# bench/run.sh's timings are at the mercy of whatever else the machine runs. With a second
# build dir it prints both, for an A/B of a change. Access log off and on.
#
# Method: one worker under callgrind on a free 127.0.0.1 port; 1,000 warm-up requests; counters
# zeroed; exactly REQUESTS (20,000) keep-alive GETs over 16 connections (bench/benchlib.py
# load); counters dumped. The kernel's share (read/write/epoll, the TCP stack) is not counted:
# bench/run.sh's CPU per request has it. Writes bench/results/instr-<date>.md and prints it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bench/instr.sh <build_dir> [<other_build_dir>]" >&2; exit 2; }
for t in valgrind callgrind_annotate callgrind_control python3; do
  command -v "$t" >/dev/null || { echo "instr.sh: '$t' missing (apt-get install valgrind)" >&2; exit 2; }
done
REQUESTS=${REQUESTS:-20000}
TOP=${TOP:-15}
PY="python3 $HERE/benchlib.py"
TMP=$(mktemp -d -t lotmesh-instr.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_health() { # PORT PID: valgrind starts slowly
  local i line
  for i in $(seq 300); do
    if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
      printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
      line=""
      read -r -t 2 line <&3 || true
      exec 3<&-
      [[ $line == *" 200 "* ]] && return 0
    fi 2>/dev/null
    kill -0 "$2" 2>/dev/null || { echo "instr.sh: server exited" >&2; return 1; }
    sleep 0.1
  done
  return 1
}

# measure BUILD ACCESS_LOG OUTFILE
measure() {
  local build=$1 alog=$2 out=$3 port pid
  build=$(cd "$build" && pwd)
  port=$($PY freeport)
  (cd "$TMP" && PORT=$port WORKERS=1 ACCESS_LOG=$alog LOG_LEVEL=info \
    exec valgrind --tool=callgrind --callgrind-out-file="$out" "$build/lotmesh-registry" \
    2>"$out.stderr") &
  pid=$!
  PIDS+=("$pid")
  wait_health "$port" "$pid"
  $PY load "$port" 1000 16 /health >/dev/null
  (cd "$TMP" && callgrind_control -z "$pid" >/dev/null)
  $PY load "$port" "$REQUESTS" 16 /health >/dev/null
  (cd "$TMP" && callgrind_control -d "$pid" >/dev/null)
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
}

OUT="$HERE/results/instr-$(date -u +%Y-%m-%d-%H%M%S).md"
mkdir -p "$HERE/results"
{
  echo "# lotmesh user-space instructions per request, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "callgrind, WORKERS=1, $REQUESTS keep-alive GET /health over 16 connections after 1,000"
  echo "warm-up requests; kernel time (syscalls, TCP) not included."
  n=0
  for build in "$@"; do
    n=$((n + 1))
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
    for alog in false true; do
      f="$TMP/cg-$n-$alog.out"
      measure "$build" "$alog" "$f"
      echo
      echo "## $build, ACCESS_LOG=$alog"
      echo
      $PY cgtop "$f.1" "$REQUESTS" "$TOP"
    done
  done
} >"$OUT"
cat "$OUT"
echo "[instr] written to ${OUT#"$REPO"/}" >&2
