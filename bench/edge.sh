#!/usr/bin/env bash
# bench/edge.sh <build_dir> — what issue 15's edge features cost, side by side in one run:
#
#   gateway  the proxied GET of bench/gateway.sh (X-API-Key, two lotmesh-articles backends,
#            GET /api/articles_api/api/v1/unit/1) through three gateways that differ only in
#            their rate limit: off, in-process (GATEWAY_RATE_LIMIT far above the load, so
#            every request is checked and charged, none refused), and shared through Redis
#            (RATE_LIMIT_URL, one Lua script per request);
#   services GET /api/v1/unit/{id} on lotmesh-articles with the in-process cache
#            (CACHE_URL=memory:) and with the in-process cache in front of Redis
#            (CACHE_URL=redis://), ids spread over IDS units so the first reads miss.
#
# A redis-server on a free loopback port, no persistence; the rounds rotate the order; the
# report gives the median req/s, p99 and CPU per request of each, and the ratio to the
# baseline row. Writes bench/results/edge-<date>.md and prints it.
#
# Knobs: DURATION=4, ROUNDS=3, WARMUP=1, CONNS=64, WORKERS=<nproc>, IDS=50, KEEP_TMP=0.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ $# -eq 1 ] || { echo "usage: bench/edge.sh <build_dir>" >&2; exit 2; }
BUILD=$(cd "$1" 2>/dev/null && pwd) || { echo "edge.sh: no build dir '$1'" >&2; exit 2; }
for b in lotmesh-gateway lotmesh-articles; do
  [ -x "$BUILD/$b" ] || { echo "edge.sh: $BUILD/$b not built" >&2; exit 2; }
done
for t in wrk redis-server taskset; do
  command -v "$t" >/dev/null || { echo "edge.sh: '$t' missing: run scripts/deps.sh bench" >&2; exit 2; }
done

DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-$(nproc)}
IDS=${IDS:-50}
PYBIN=${PYTHON:-/usr/bin/python3}
PY="$PYBIN $HERE/stacklib.py"
BL="$PYBIN $HERE/benchlib.py"
UPATH=/api/v1/unit/1
GPATH=/api/articles_api$UPATH

TMP=$(mktemp -d -t lotmesh-edge.XXXXXX)
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
common_init edge.sh
THREADS=$NPROC
machine_meta "$REPO" "$BUILD"
meta duration "$DURATION"; meta rounds "$ROUNDS"; meta conns "$CONNS"; meta workers "$WORKERS"
meta redis "$(redis-server --version | awk '{print $3}')"

SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
read -r P_RD P_B1 P_B2 P_G0 P_G1 P_G2 P_SM P_SR <<<"$($BL freeport 8)"
lm_env=(SERVICE_TOKEN_SECRET="$SECRET" ACCESS_LOG=false LOG_LEVEL=info BIND_ADDRESS=127.0.0.1)

note "starting redis-server"
spawn "$TMP/redis.log" redis-server --port "$P_RD" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$TMP" --protected-mode no
RD=$SPID
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$P_RD" && printf 'PING\r\n' >&3 && read -r -t 1 l <&3 && [ "${l%$'\r'}" = +PONG ]) 2>/dev/null && break
  sleep 0.1
done
REDIS=redis://127.0.0.1:$P_RD

# ---- backends (as bench/gateway.sh): one database copied to both -----------------------------------
note "starting the backends"
mkdir -p "$TMP/b0"
spawn "$TMP/b0.log" env "${lm_env[@]}" SERVICE_AUTH=enabled WORKERS=1 PORT="$P_B1" \
  LOTMESH_DATA_DIR="$TMP/b0" "$BUILD/lotmesh-articles"
$PY wait "$P_B1" /health 10 || die "lotmesh-articles did not start (see $TMP/b0.log)"
stop_pid "$SPID"
cp -r "$TMP/b0" "$TMP/b1"; cp -r "$TMP/b0" "$TMP/b2"; cp -r "$TMP/b0" "$TMP/sm"; cp -r "$TMP/b0" "$TMP/sr"
BACKENDS=()
for i in 1 2; do
  port=$P_B1; [ $i = 2 ] && port=$P_B2
  spawn "$TMP/b$i.log" env "${lm_env[@]}" SERVICE_AUTH=enabled WORKERS=1 PORT="$port" \
    LOTMESH_DATA_DIR="$TMP/b$i" "$BUILD/lotmesh-articles"
  BACKENDS+=("$SPID")
done
SVC_TOKEN=$($PY token "$SECRET" articles_api "read write")
$PY wait "$P_B1" "$UPATH" 10 "Authorization: Bearer $SVC_TOKEN" || die "backend 1 does not answer"
$PY wait "$P_B2" "$UPATH" 10 "Authorization: Bearer $SVC_TOKEN" || die "backend 2 does not answer"

# ---- three gateways, one clients file ----------------------------------------------------------------
note "starting the gateways"
mkdir -p "$TMP/g0" "$TMP/g1" "$TMP/g2"
gw_env=("${lm_env[@]}" WORKERS="$WORKERS" GATEWAY_CLIENTS_FILE="$TMP/clients.json"
        GATEWAY_ACCESS_KEY_FILE="$TMP/access.key"
        SERVICE_REGISTRY_URL="static:articles_api=http://127.0.0.1:$P_B1,http://127.0.0.1:$P_B2")
LIMIT=(GATEWAY_RATE_LIMIT=100000000/s)
spawn "$TMP/g0.log" env "${gw_env[@]}" LOTMESH_DATA_DIR="$TMP/g0" PORT="$P_G0" "$BUILD/lotmesh-gateway"
G0=$SPID
$PY wait "$P_G0" /health 20 || die "gateway (off) did not start (see $TMP/g0.log)"
spawn "$TMP/g1.log" env "${gw_env[@]}" "${LIMIT[@]}" LOTMESH_DATA_DIR="$TMP/g1" PORT="$P_G1" \
  "$BUILD/lotmesh-gateway"
G1=$SPID
spawn "$TMP/g2.log" env "${gw_env[@]}" "${LIMIT[@]}" RATE_LIMIT_URL="$REDIS" LOTMESH_DATA_DIR="$TMP/g2" \
  PORT="$P_G2" "$BUILD/lotmesh-gateway"
G2=$SPID
$PY wait "$P_G1" /health 20 || die "gateway (in-process) did not start"
$PY wait "$P_G2" /health 20 || die "gateway (redis) did not start"
API_KEY=$($PY json-get "$TMP/g0/dev-client.json" api_key)
for p in "$P_G0" "$P_G1" "$P_G2"; do
  $PY wait "$p" "$GPATH" 10 "X-API-Key: $API_KEY" || die "gateway on $p does not answer $GPATH"
done

# ---- two services: in-process cache, and in front of Redis ----------------------------------------------
note "starting the services"
spawn "$TMP/sm.log" env "${lm_env[@]}" SERVICE_AUTH=enabled WORKERS="$WORKERS" PORT="$P_SM" \
  LOTMESH_DATA_DIR="$TMP/sm" CACHE_URL=memory: "$BUILD/lotmesh-articles"
SM=$SPID
spawn "$TMP/sr.log" env "${lm_env[@]}" SERVICE_AUTH=enabled WORKERS="$WORKERS" PORT="$P_SR" \
  LOTMESH_DATA_DIR="$TMP/sr" CACHE_URL="$REDIS" "$BUILD/lotmesh-articles"
SR=$SPID
$PY wait "$P_SM" "$UPATH" 10 "Authorization: Bearer $SVC_TOKEN" || die "articles (memory) does not answer"
$PY wait "$P_SR" "$UPATH" 10 "Authorization: Bearer $SVC_TOKEN" || die "articles (redis) does not answer"
# units 1..IDS exist on both (8 are seeded; the rest created here, the same on both)
for port in "$P_SM" "$P_SR"; do
  for i in $(seq 9 "$IDS"); do
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $SVC_TOKEN" -H 'Content-Type: application/json' \
      -d "{\"kuerzel\":\"u$i\",\"bezeichnung\":\"Einheit $i\"}" "http://127.0.0.1:$port/api/v1/unit/create"
  done
done
cat >"$TMP/ids.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/api/v1/unit/" .. ((n % $IDS) + 1))
end
EOF

# ---- rounds -------------------------------------------------------------------------------------------------
target() { # NAME -> T_PORT T_SRV T_ARGS
  case $1 in
    gw-off) T_PORT=$P_G0 T_SRV=$G0 T_ARGS=(-H "X-API-Key: $API_KEY" "http://127.0.0.1:$P_G0$GPATH") ;;
    gw-local) T_PORT=$P_G1 T_SRV=$G1 T_ARGS=(-H "X-API-Key: $API_KEY" "http://127.0.0.1:$P_G1$GPATH") ;;
    gw-redis) T_PORT=$P_G2 T_SRV="$G2 $RD" T_ARGS=(-H "X-API-Key: $API_KEY" "http://127.0.0.1:$P_G2$GPATH") ;;
    svc-memory) T_PORT=$P_SM T_SRV=$SM T_ARGS=(-s "$TMP/ids.lua" -H "Authorization: Bearer $SVC_TOKEN" "http://127.0.0.1:$P_SM") ;;
    svc-redis) T_PORT=$P_SR T_SRV="$SR $RD" T_ARGS=(-s "$TMP/ids.lua" -H "Authorization: Bearer $SVC_TOKEN" "http://127.0.0.1:$P_SR") ;;
  esac
}
ALL=(gw-off gw-local gw-redis svc-memory svc-redis)
for s in "${ALL[@]}"; do
  target "$s"
  wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP"s "${T_ARGS[@]}" >/dev/null 2>&1 || true
done
n=${#ALL[@]}
for r in $(seq "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    s=${ALL[$(((k + r - 1) % n))]}
    target "$s"
    note "round $r/$ROUNDS $s"
    # shellcheck disable=SC2086
    measure_round "$s,$r" "$TMP/wrk/$s,$r.txt" "$T_SRV" "" -t"$THREADS" -c"$CONNS" -d"$DURATION"s \
      --latency --timeout 10s "${T_ARGS[@]}"
  done
done
meta limited_429 "$(curl -s "http://127.0.0.1:$P_G1/metrics" | awk '/rate_limit_total\{outcome="refused"\}/ {print $2}')"
meta redis_errors "$(curl -s "http://127.0.0.1:$P_G2/metrics" | awk '/rate_limit_total\{outcome="store_failed"\}/ {print $2}')"
meta cache_redis "$(curl -s -H "Authorization: Bearer $SVC_TOKEN" "http://127.0.0.1:$P_SR/metrics" | awk '/^lotmesh_cache_redis_total/ {printf "%s %s; ", $1, $2}')"
meta elapsed "$(($(date +%s) - T_START))"

mkdir -p "$HERE/results"
OUT="$HERE/results/edge-$(date -u +%Y-%m-%d-%H%M%S).md"
"$PYBIN" - "$META" "$TMP/wrk" "$ROUNDS" >"$OUT" <<'EOF'
import re, statistics, sys
from pathlib import Path
meta = dict(l.split("=", 1) for l in Path(sys.argv[1]).read_text().splitlines() if "=" in l)
wrkdir, rounds = Path(sys.argv[2]), int(sys.argv[3])

def unit(v, u):
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]

def run(name, r):
    t = (wrkdir / f"{name},{r}.txt").read_text()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
    n = int(re.search(r"(\d+) requests in", t).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, unit(*m.groups()), int(meta[f"cpu_{name},{r}"]) / n / 1000, int(bad.group(1)) if bad else 0

rows = {}
for name in ("gw-off", "gw-local", "gw-redis", "svc-memory", "svc-redis"):
    rs = [run(name, r) for r in range(1, rounds + 1)]
    rows[name] = tuple(statistics.median(x[i] for x in rs) for i in range(3)) + (sum(x[3] for x in rs),)
print(f"# Edge features: cost of rate limits and of the Redis cache ({meta['date']})\n")
print(f"commit {meta['commit']}; {meta['cpu']}; load average before: {meta['loadavg']}; "
      f"wrk {meta['conns']} connections, {meta['duration']} s x {rounds} rounds (median), "
      f"{meta['workers']} workers per process; Redis {meta['redis']}.\n")
print("| what | req/s | vs baseline | p99 | CPU/req (process under test) | non-2xx |")
print("|---|--:|--:|--:|--:|--:|")
labels = {"gw-off": "gateway, no rate limit", "gw-local": "gateway, in-process limit",
          "gw-redis": "gateway, limit in Redis (CPU incl. redis-server)",
          "svc-memory": "articles GET by id, in-process cache",
          "svc-redis": "articles GET by id, in-process + Redis (CPU incl. redis-server)"}
for name, base in (("gw-off", "gw-off"), ("gw-local", "gw-off"), ("gw-redis", "gw-off"),
                   ("svc-memory", "svc-memory"), ("svc-redis", "svc-memory")):
    rps, p99, cpu, bad = rows[name]
    print(f"| {labels[name]} | {rps:,.0f} | {rps / rows[base][0]:.3f} | {p99:.2f} ms | "
          f"{cpu:.1f} µs | {bad} |")
print(f"\nRefused by the in-process limit: {meta.get('limited_429') or 0}; Redis store failures: "
      f"{meta.get('redis_errors') or 0}. Redis cache level of the services: {meta.get('cache_redis')}")
print(f"\nElapsed {meta['elapsed']} s.")
EOF
cat "$OUT"
note "written to ${OUT#"$REPO"/}"
