#!/usr/bin/env bash
# bench/gateway.sh <build_dir> — the lotmesh gateway against nginx (proxy_pass, upstream
# keep-alive), HAProxy (http-reuse always) and the seed's Starlette + httpx gateway
# (bench/seed_gateway.py), all in front of the same two backend instances, at the same
# concurrency, in one run; plus wrk straight to one backend for reference. Issue 5's
# "Performance" and DESIGN 5. Writes bench/results/gateway-<date>.md and prints it.
#
# The backend: two lotmesh-articles instances (SERVICE_AUTH=enabled, one database copied to
# both so they answer the same bytes), GET /api/v1/unit/1 — a cheap read. The lotmesh gateway
# runs as deployed: client auth (X-API-Key, and in a second row a Bearer access token from
# its /auth/token), discovery static: with both instances, a minted service token, tracing
# and forwarding headers; the lotmesh-traced row is a second gateway with span export on
# (OTEL_TRACES_SAMPLER=always_on: a server and a client span per request, exported in batches
# over OTLP/HTTP JSON to a collector: nginx answering 200 to POST /v1/traces, so what is
# measured is the gateway's cost of recording and sending); the other rows run with
# OTEL_TRACES_EXPORTER=none. nginx and HAProxy cannot mint tokens: they add a fixed valid
# service token (minted here with the shared secret) so the same backends accept them and do
# the same work for every proxy. The seed's gateway mints its own (seed_gateway.py).
# Builds and installs nothing (scripts/deps.sh bench installs wrk, nginx-light, haproxy, the
# python3-* packages).
#
# Knobs (environment): DURATION=4 (s per round), ROUNDS=3, WARMUP=1, CONNS=64,
# WORKERS=<nproc> (every proxy), BACKEND_WORKERS=1 (each of the two backends),
# PROXIES="lotmesh-key lotmesh-traced lotmesh-bearer nginx haproxy seed direct", READY_RUNS=3,
# SEED_PYTHON=/usr/bin/python3, KEEP_TMP=0, LOTMESH_COMMIT.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ $# -eq 1 ] || { echo "usage: bench/gateway.sh <build_dir>" >&2; exit 2; }
BUILD=$(cd "$1" 2>/dev/null && pwd) || { echo "gateway.sh: no build dir '$1'" >&2; exit 2; }
for b in lotmesh-gateway lotmesh-articles; do
  [ -x "$BUILD/$b" ] || { echo "gateway.sh: $BUILD/$b not built" >&2; exit 2; }
done
SPY=${SEED_PYTHON:-/usr/bin/python3}
for t in wrk nginx haproxy taskset python3 "$SPY"; do
  command -v "$t" >/dev/null || { echo "gateway.sh: '$t' missing: run scripts/deps.sh bench" >&2; exit 2; }
done
"$SPY" -c 'import starlette, httpx, uvicorn' 2>/dev/null ||
  { echo "gateway.sh: $SPY cannot import starlette/httpx/uvicorn: run scripts/deps.sh bench" >&2; exit 2; }

DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-$(nproc)}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
PROXIES=${PROXIES:-lotmesh-key lotmesh-traced lotmesh-bearer nginx haproxy seed direct}
READY_RUNS=${READY_RUNS:-3}
# the helpers are standard-library Python: Debian's interpreter starts in a tenth of the time a
# pyenv shim on PATH takes (~2 s on this machine, per call)
PYBIN=${PYTHON:-/usr/bin/python3}
[ -x "$PYBIN" ] || PYBIN=python3
PY="$PYBIN $HERE/stacklib.py"
BL="$PYBIN $HERE/benchlib.py"
UPATH=/api/v1/unit/1                 # on a backend
GPATH=/api/articles_api$UPATH        # through a proxy
TRACEPARENT="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TMP=$(mktemp -d -t lotmesh-gateway.XXXXXX)
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
common_init gateway.sh
THREADS=$NPROC

machine_meta "$REPO" "$BUILD"
meta duration "$DURATION"; meta rounds "$ROUNDS"; meta warmup "$WARMUP"; meta conns "$CONNS"
meta workers "$WORKERS"; meta threads "$THREADS"; meta backend_workers "$BACKEND_WORKERS"
meta path "$GPATH"; meta ready_runs "$READY_RUNS"
meta nginx "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
meta haproxy "$(haproxy -v 2>&1 | head -1 | awk '{print "HAProxy " $3}')"
meta starlette "$("$SPY" -c 'import starlette; print(starlette.__version__)')"
meta httpx "$("$SPY" -c 'import httpx; print(httpx.__version__)')"
meta uvicorn "$("$SPY" -c 'import uvicorn; print(uvicorn.__version__)')"
meta uvicorn_impl "$("$SPY" -c '
try:
    import uvloop; loop = "uvloop " + uvloop.__version__
except ImportError: loop = "asyncio"
try:
    import httptools; http = "httptools " + httptools.__version__
except ImportError: http = "h11"
print(loop + ", " + http)') --workers $WORKERS"

SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
read -r P_B1 P_B2 P_GW P_NG P_HA P_SEED P_R1 P_GWT P_SINK <<<"$($BL freeport 9)"
lm_env=(SERVICE_TOKEN_SECRET="$SECRET" ACCESS_LOG=false LOG_LEVEL=info BIND_ADDRESS=127.0.0.1
        OTEL_TRACES_EXPORTER=none)

# ---- backends: one database, copied, so both instances answer the same bytes ---------------------
note "starting the two backends"
mkdir -p "$TMP/b0"
spawn "$TMP/b0.log" env "${lm_env[@]}" SERVICE_AUTH=enabled WORKERS=1 PORT="$P_B1" \
  LOTMESH_DATA_DIR="$TMP/b0" "$BUILD/lotmesh-articles"
$PY wait "$P_B1" /health 10 || die "lotmesh-articles did not start (see $TMP/b0.log)"
stop_pid "$SPID"
cp -r "$TMP/b0" "$TMP/b1"; cp -r "$TMP/b0" "$TMP/b2"
BACKENDS=()
for i in 1 2; do
  port=$P_B1; [ $i = 2 ] && port=$P_B2
  spawn "$TMP/b$i.log" env "${lm_env[@]}" SERVICE_AUTH=enabled WORKERS="$BACKEND_WORKERS" \
    PORT="$port" LOTMESH_DATA_DIR="$TMP/b$i" "$BUILD/lotmesh-articles"
  BACKENDS+=("$SPID")
done
SVC_TOKEN=$($PY token "$SECRET" articles_api read)
$PY wait "$P_B1" "$UPATH" 10 "Authorization: Bearer $SVC_TOKEN" || die "backend 1 does not answer $UPATH"
$PY wait "$P_B2" "$UPATH" 10 "Authorization: Bearer $SVC_TOKEN" || die "backend 2 does not answer $UPATH"

# ---- the lotmesh gateway ---------------------------------------------------------------------------
note "starting the lotmesh gateway"
mkdir -p "$TMP/gw"
gw_env=("${lm_env[@]}" WORKERS="$WORKERS" LOTMESH_DATA_DIR="$TMP/gw"
        SERVICE_REGISTRY_URL="static:articles_api=http://127.0.0.1:$P_B1,http://127.0.0.1:$P_B2")
spawn "$TMP/gw.log" env "${gw_env[@]}" PORT="$P_GW" "$BUILD/lotmesh-gateway"
GW=$SPID
$PY wait "$P_GW" /health 20 || die "lotmesh-gateway did not start (see $TMP/gw.log)"
sleep 0.5
meta rss_gateway "$(rss_kb "$GW")"
API_KEY=$($PY json-get "$TMP/gw/dev-client.json" api_key)
ACCESS=$($PY gw-token "$P_GW" "$TMP/gw/dev-client.json")
# the span collector of the traced gateway: nginx taking every POST /v1/traces with a 200
mkdir -p "$TMP/sink/tmp"
cat >"$TMP/sink/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $TMP/sink/nginx.pid;
error_log $TMP/sink/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $TMP/sink/tmp/body;
    proxy_temp_path $TMP/sink/tmp/proxy;
    fastcgi_temp_path $TMP/sink/tmp/fastcgi;
    uwsgi_temp_path $TMP/sink/tmp/uwsgi;
    scgi_temp_path $TMP/sink/tmp/scgi;
    client_max_body_size 0;
    server {
        listen 127.0.0.1:$P_SINK;
        location /v1/traces { default_type application/json; return 200 '{"partialSuccess":{}}'; }
    }
}
NGINX
spawn "$TMP/sink/stderr.log" nginx -p "$TMP/sink" -c "$TMP/sink/nginx.conf" -e "$TMP/sink/error.log"
# the same gateway (its clients and keys) with span export on
spawn "$TMP/gwt.log" env "${gw_env[@]}" PORT="$P_GWT" OTEL_TRACES_EXPORTER=otlp \
  OTEL_TRACES_SAMPLER=always_on OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$P_SINK" \
  "$BUILD/lotmesh-gateway"
GWT=$SPID
$PY wait "$P_GWT" /health 20 || die "the traced lotmesh-gateway did not start (see $TMP/gwt.log)"

# ---- nginx ----------------------------------------------------------------------------------------
mkdir -p "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000000;
    upstream articles_api {
        server 127.0.0.1:$P_B1;
        server 127.0.0.1:$P_B2;
        keepalive 64;
        keepalive_requests 1000000000;
    }
    server {
        listen 127.0.0.1:$P_NG reuseport;
        location /api/articles_api/ {
            proxy_pass http://articles_api/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header Authorization "Bearer $SVC_TOKEN";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-ID \$request_id;
        }
    }
}
EOF

# ---- HAProxy --------------------------------------------------------------------------------------
mkdir -p "$TMP/haproxy"
cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 65s
    timeout server 30s
    timeout http-keep-alive 65s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:$P_HA
    option forwardfor
    unique-id-format %[uuid()]
    unique-id-header X-Request-ID
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Authorization "Bearer $SVC_TOKEN"
    http-request set-path %[path,regsub(^/api/articles_api/,/)]
    default_backend articles_api
backend articles_api
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$P_B1
    server b2 127.0.0.1:$P_B2
EOF

note "starting nginx, HAProxy and the seed's gateway"
spawn "$TMP/nginx/stderr.log" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
NG=$SPID
haproxy -c -f "$TMP/haproxy/haproxy.cfg" >"$TMP/haproxy/check.log" 2>&1 ||
  die "haproxy rejects its config: $(tail -3 "$TMP/haproxy/check.log")"
spawn "$TMP/haproxy/stderr.log" haproxy -db -f "$TMP/haproxy/haproxy.cfg"
HA=$SPID
spawn "$TMP/seed.log" env SEED_SERVICES="articles_api=http://127.0.0.1:$P_B1,http://127.0.0.1:$P_B2" \
  SERVICE_TOKEN_SECRET="$SECRET" "$SPY" -m uvicorn seed_gateway:gateway_app --app-dir "$HERE" \
  --host 127.0.0.1 --port "$P_SEED" --workers "$WORKERS" --no-access-log --log-level warning
SEED=$SPID
CH=("X-API-Key: $API_KEY" "traceparent: $TRACEPARENT")
$PY wait "$P_NG" "$GPATH" 10 "${CH[@]}" || die "nginx does not answer $GPATH (see $TMP/nginx/error.log)"
$PY wait "$P_HA" "$GPATH" 10 "${CH[@]}" || die "haproxy does not answer $GPATH"
$PY wait "$P_SEED" "$GPATH" 30 "${CH[@]}" || die "the seed's gateway does not answer $GPATH (see $TMP/seed.log)"

note "checking every proxy answers the same"
same=$($PY same-proxied "$GPATH" "$P_GW:lotmesh" "$P_NG:nginx" "$P_HA:haproxy" "$P_SEED:seed" -- "${CH[@]}") ||
  die "$same"
IFS=$'\t' read -r _ _ body <<<"$same"
meta body_bytes "${#body}"
$PY same-proxied "$GPATH" "$P_GW:lotmesh-bearer" -- "Authorization: Bearer $ACCESS" "traceparent: $TRACEPARENT" \
  >/dev/null || die "the gateway refuses its own access token"
meta client_headers "\`X-API-Key\` (or \`Authorization: Bearer\` in the Bearer row; nginx, HAProxy and the seed ignore it) and \`traceparent\`"

# ---- rounds ------------------------------------------------------------------------------------------
target() { # NAME -> T_PORT T_PATH T_SRV T_HDR (the client's auth header)
  T_PATH=$GPATH T_HDR="X-API-Key: $API_KEY"
  case $1 in
    lotmesh-key) T_PORT=$P_GW T_SRV=$GW ;;
    lotmesh-bearer) T_PORT=$P_GW T_SRV=$GW T_HDR="Authorization: Bearer $ACCESS" ;;
    lotmesh-traced) T_PORT=$P_GWT T_SRV=$GWT ;;
    nginx) T_PORT=$P_NG T_SRV=$NG ;;
    haproxy) T_PORT=$P_HA T_SRV=$HA ;;
    seed) T_PORT=$P_SEED T_SRV=$SEED ;;
    direct) T_PORT=$P_B1 T_SRV="" T_PATH=$UPATH T_HDR="Authorization: Bearer $SVC_TOKEN" ;;
    *) die "unknown proxy '$1'" ;;
  esac
}
read -r -a plist <<<"$PROXIES"
for s in "${plist[@]}"; do
  target "$s"
  wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP"s -H "$T_HDR" -H "traceparent: $TRACEPARENT" \
    "http://127.0.0.1:$T_PORT$T_PATH" >/dev/null 2>&1 || true
done
n=${#plist[@]}
for r in $(seq "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    s=${plist[$(((k + r - 1) % n))]} # the order rotates by round
    target "$s"
    note "round $r/$ROUNDS $s"
    measure_round "proxy,$s,$r" "$TMP/wrk/proxy,$s,$r.txt" "$T_SRV" "${BACKENDS[*]}" \
      -t"$THREADS" -c"$CONNS" -d"$DURATION"s --latency --timeout 10s -H "$T_HDR" \
      -H "traceparent: $TRACEPARENT" "http://127.0.0.1:$T_PORT$T_PATH"
  done
done

# the traced gateway's span pipeline over the run: exported, dropped (queue full), stored
meta spans_traced "$($PY get "$P_GWT" /metrics | awk '/^lotmesh_spans_(submitted|exported|dropped)_total/ {printf "%s=%s ", $1, $2}')"

# ---- gateway time to ready (after the rounds: the client file and keys exist, as on a restart)
meta ready_gateway "$(env "${gw_env[@]}" PORT="$P_R1" $BL ready "$P_R1" "$READY_RUNS" 'ready in ([0-9.]+) ms' -- \
  "$BUILD/lotmesh-gateway")"
meta elapsed "$(($(date +%s) - T_START))"

mkdir -p "$HERE/results"
OUT="$HERE/results/gateway-$(date -u +%Y-%m-%d-%H%M%S).md"
$PY gw-report "$META" "$TMP/wrk" >"$OUT"
cat "$OUT"
note "written to ${OUT#"$REPO"/}"
