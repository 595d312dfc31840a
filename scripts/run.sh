#!/usr/bin/env bash
# Runs every lotmesh process in the foreground on 127.0.0.1 with embedded defaults
# (no external server needed): registry 8500, articles 8002, charges 8001, gateway 8000.
# State lives under $LOTMESH_DATA_DIR (default ./var): one database per service, the
# registry snapshot, the generated keys and dev-client.json; each process logs to
# <data dir>/<name>.log. Ctrl-C (or SIGTERM) stops every process gracefully, in reverse.
# ARTICLES_DATABASE_URL / CHARGES_DATABASE_URL, when set, become that service's DATABASE_URL
# (e.g. postgresql://user@host/articles): the same system on PostgreSQL, one database each.
# Usage: scripts/run.sh <build_dir>
set -euo pipefail
bin_dir=${1:-build/release}
data_dir=${LOTMESH_DATA_DIR:-$PWD/var}
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
export LOTMESH_DATA_DIR=$data_dir
export SERVICE_REGISTRY_URL=${SERVICE_REGISTRY_URL:-http://127.0.0.1:8500}
# Spans: to the gateway's embedded trace store (POST /v1/traces, shown on /dashboard) unless
# any OTEL_* variable is given, which then reaches every process unchanged.
if ! env | grep -q '^OTEL_'; then
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8000
  export OTEL_BSP_SCHEDULE_DELAY=1000
fi

# name:port — started in this order (each once healthy), stopped in reverse.
processes=(registry:8500 articles:8002 charges:8001 gateway:8000)

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
  db_var="${name^^}_DATABASE_URL"
  if [ -n "${!db_var:-}" ]; then
    DATABASE_URL=${!db_var} PORT=$port "$exe" 2>>"$data_dir/$name.log" &
  else
    PORT=$port "$exe" 2>>"$data_dir/$name.log" &
  fi
  pids+=($!)
  ok=
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$ok" ]; then
    echo "lotmesh: $name did not start; the end of $data_dir/$name.log:" >&2
    tail -n 5 "$data_dir/$name.log" >&2
    exit 1
  fi
  echo "lotmesh: $name ready on http://127.0.0.1:$port" >&2
done

cat >&2 <<MSG
lotmesh: running; logs in $data_dir/*.log; Ctrl-C stops everything.

  First call through the gateway (credentials of the generated dev client):
    ID=\$(jq -r .client_id $data_dir/dev-client.json); SECRET=\$(jq -r .client_secret $data_dir/dev-client.json)
    TOKEN=\$(curl -s -d grant_type=client_credentials -u "\$ID:\$SECRET" http://127.0.0.1:8000/auth/token | jq -r .access_token)
    curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8000/api/articles_api/api/v1/units
  or with the API key:
    curl -s -H "X-API-Key: \$(jq -r .api_key $data_dir/dev-client.json)" http://127.0.0.1:8000/api/charges_api/api/v1/charges

  Dashboard: http://127.0.0.1:8000/dashboard (user: anything, password: the api_key above)
  API docs:  http://127.0.0.1:8000/docs     Registry: http://127.0.0.1:8500/ui/
MSG
wait -n "${pids[@]}" || true
