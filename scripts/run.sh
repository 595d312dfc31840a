#!/usr/bin/env bash
# Runs every lotmesh process in the foreground on 127.0.0.1 with embedded defaults
# (no external server needed); state under $LOTMESH_DATA_DIR (default ./var).
# Ctrl-C (or SIGTERM) stops every process gracefully and waits for it.
# Usage: scripts/run.sh <build_dir>
set -euo pipefail
bin_dir=${1:-build/release}
data_dir=${LOTMESH_DATA_DIR:-$PWD/var}
mkdir -p "$data_dir"
export LOTMESH_DATA_DIR=$data_dir

# name:port — started in this order, stopped in reverse.
processes=(registry:8500 articles:8002 charges:8001)

pids=()
stop() {
  trap - INT TERM EXIT
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "lotmesh: stopped" >&2
}
trap stop INT TERM EXIT

for entry in "${processes[@]}"; do
  name=${entry%%:*}
  port=${entry##*:}
  exe="$bin_dir/lotmesh-$name"
  [ -x "$exe" ] || { echo "lotmesh: $exe is missing; run 'make build'" >&2; exit 1; }
  PORT=$port "$exe" 2> >(tee -a "$data_dir/$name.log" >&2) &
  pids+=($!)
done

for entry in "${processes[@]}"; do
  name=${entry%%:*}; port=${entry##*:}
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.05
  done
  echo "lotmesh: $name ready on http://127.0.0.1:$port" >&2
done
echo "lotmesh: running; logs in $data_dir; Ctrl-C stops everything" >&2
wait -n "${pids[@]}" || true
