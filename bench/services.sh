#!/usr/bin/env bash
# bench/services.sh <build_dir> — lotmesh-charges against a FastAPI + SQLite equivalent
# (bench/fastapi_charges.py) on 127.0.0.1, in one run: GET /api/v1/charge/{id},
# GET /api/v1/charges?limit=50 and POST /api/v1/charge/create, wrk against both, taking turns;
# plus the idle RSS and time to ready of lotmesh-charges and lotmesh-articles. Issue 3's
# "Performance" and DESIGN 5. Writes bench/results/services-<date>.md and prints it.
#
# lotmesh-charges asks lotmesh-articles about the article and unit of every create, so
# lotmesh-articles runs too (its CPU is reported apart); the FastAPI service checks local
# tables instead. Both services get the same reference data and the same SEED_N batches through
# their own APIs, then a contract check compares their answers before anything is timed.
# Builds and installs nothing (scripts/deps.sh bench installs wrk and the python3-* packages).
#
# Knobs (environment): DURATION=4 (s per round), ROUNDS=3, WARMUP=1, CONNS=64,
# WORKERS=<nproc> (both services), PIN=0 (1: both services get one worker and core 0, wrk one
# thread on core 1 — the load generator then takes no CPU from the server under test, which
# on 2 cores otherwise caps the faster server's req/s), ENDPOINTS="get list create" (or mixed: GET by id, every 10th request a create), SEED_N=1000,
# SEED_CONNS=16,
# AUTH=enabled (lotmesh's SERVICE_AUTH), CACHE=memory: (lotmesh's CACHE_URL; none turns its
# response cache off, to measure the database path), READY_RUNS=5, FASTAPI_PYTHON=/usr/bin/python3,
# CONTRACT_CHECK=fail (or warn), KEEP_TMP=0, LOTMESH_COMMIT (when the build's sources are not a
# git tree), DB=sqlite (or pg: a PostgreSQL 15 server in the temp dir, started by
# tests/blackbox/pg_server.py; lotmesh-articles, lotmesh-charges and the FastAPI service each
# get a database on it; the report adds the round trips per create on lotmesh's writer),
# NUMBERS=given (each create names its charge_nummer; generated: none, both services number
# them from their yearly series).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
[ $# -eq 1 ] || { echo "usage: bench/services.sh <build_dir>" >&2; exit 2; }
BUILD=$(cd "$1" 2>/dev/null && pwd) || { echo "services.sh: no build dir '$1'" >&2; exit 2; }
for b in lotmesh-charges lotmesh-articles; do
  [ -x "$BUILD/$b" ] || { echo "services.sh: $BUILD/$b not built" >&2; exit 2; }
done
FPY=${FASTAPI_PYTHON:-/usr/bin/python3}
for t in wrk taskset python3 "$FPY"; do
  command -v "$t" >/dev/null || { echo "services.sh: '$t' missing: run scripts/deps.sh bench" >&2; exit 2; }
done
"$FPY" -c 'import fastapi, uvicorn, pydantic' 2>/dev/null ||
  { echo "services.sh: $FPY cannot import fastapi/uvicorn: run scripts/deps.sh bench" >&2; exit 2; }

DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
PIN=${PIN:-0}
WORKERS=${WORKERS:-$(nproc)}
SRV_PIN=""
if [ "$PIN" = 1 ]; then
  [ "$(nproc)" -ge 2 ] || { echo "services.sh: PIN=1 needs 2 cores" >&2; exit 2; }
  WORKERS=1 SRV_PIN="taskset -c 0" WRK_PIN="taskset -c 1"
fi
ENDPOINTS=${ENDPOINTS:-get list create}
SEED_N=${SEED_N:-1000}
SEED_CONNS=${SEED_CONNS:-16}
AUTH=${AUTH:-enabled}
CACHE=${CACHE:-memory:}
READY_RUNS=${READY_RUNS:-5}
CONTRACT_CHECK=${CONTRACT_CHECK:-fail}
DB=${DB:-sqlite}
NUMBERS=${NUMBERS:-given}
case $NUMBERS in given | generated) ;; *) echo "services.sh: NUMBERS must be given or generated" >&2; exit 2 ;; esac
# the helpers are standard-library Python: Debian's interpreter starts in a tenth of the time a
# pyenv shim on PATH takes (~2 s on this machine, per call)
PYBIN=${PYTHON:-/usr/bin/python3}
[ -x "$PYBIN" ] || PYBIN=python3
PY="$PYBIN $HERE/stacklib.py"
BL="$PYBIN $HERE/benchlib.py"

TMP=$(mktemp -d -t lotmesh-services.XXXXXX)
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
common_init services.sh
THREADS=$NPROC
[ "$PIN" = 1 ] && THREADS=1

machine_meta "$REPO" "$BUILD"
meta duration "$DURATION"; meta rounds "$ROUNDS"; meta warmup "$WARMUP"; meta conns "$CONNS"
meta workers "$WORKERS"; meta threads "$THREADS"; meta auth "$AUTH"; meta cache "$CACHE"
meta pin "$PIN"; meta db "$DB"; meta numbers "$NUMBERS"
meta seed_n "$SEED_N"; meta seed_conns "$SEED_CONNS"
meta fastapi "$("$FPY" -c 'import fastapi, pydantic; print(fastapi.__version__ + ", pydantic " + pydantic.VERSION)')"
meta uvicorn "$("$FPY" -c 'import uvicorn; print(uvicorn.__version__)')"
meta uvicorn_impl "$("$FPY" -c '
try:
    import uvloop; loop = "uvloop " + uvloop.__version__
except ImportError: loop = "asyncio"
try:
    import httptools; http = "httptools " + httptools.__version__
except ImportError: http = "h11"
print(loop + ", " + http)')"

# ---- PostgreSQL (DB=pg) -----------------------------------------------------------------------
db_url() { :; } # NAME -> DATABASE_URL for lotmesh (empty: SQLite under its data dir)
if [ "$DB" = pg ]; then
  note "starting PostgreSQL 15"
  spawn "$TMP/pg.log" "$PYBIN" "$REPO/tests/blackbox/pg_server.py" serve "$TMP/pg.port" \
    articles charges fastapi fp_articles fp_charges fp_fastapi
  for _ in $(seq 600); do [ -s "$TMP/pg.port" ] && break; sleep 0.1; done
  [ -s "$TMP/pg.port" ] || die "PostgreSQL did not start (see $TMP/pg.log)"
  PGPORT=$(cat "$TMP/pg.port")
  db_url() { echo "postgresql://postgres@127.0.0.1:$PGPORT/$1"; }
  meta postgres "$(/usr/lib/postgresql/15/bin/postgres --version | sed 's/.* //')"
elif [ "$DB" != sqlite ]; then
  die "DB must be sqlite or pg"
fi
db_env() { # NAME -> "DATABASE_URL=…" or nothing
  local u
  u=$(db_url "$1")
  [ -n "$u" ] && echo "DATABASE_URL=$u"
  return 0
}
fa_db() { # DIR NAME -> what the FastAPI service uses as CHARGES_DB
  local u
  u=$(db_url "$2")
  if [ -n "$u" ]; then echo "$u"; else echo "$1/charges.db"; fi
}

SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') # 48 characters, HS256 >= 32
read -r P_ART P_CHG P_FA P_R1 P_R2 P_R3 P_R4 <<<"$($BL freeport 7)"
lm_env=(SERVICE_AUTH="$AUTH" SERVICE_TOKEN_SECRET="$SECRET" CACHE_URL="$CACHE" ACCESS_LOG=false LOG_LEVEL=info
        BIND_ADDRESS=127.0.0.1 WORKERS="$WORKERS" OTEL_TRACES_EXPORTER=none)
uvicorn_cmd() { # PORT
  echo "$FPY" -m uvicorn fastapi_charges:app --app-dir "$HERE" --host 127.0.0.1 --port "$1" \
    --workers "$WORKERS" --no-access-log --log-level warning
}

# ---- footprint: idle RSS, time to ready --------------------------------------------------------
note "footprint: idle RSS and time to ready"
for name in articles charges; do
  mkdir -p "$TMP/fp-$name"
  # shellcheck disable=SC2046
  spawn "$TMP/fp-$name.log" env "${lm_env[@]}" $(db_env "fp_$name") PORT="$P_R1" \
    LOTMESH_DATA_DIR="$TMP/fp-$name" ARTICLES_URL="http://127.0.0.1:$P_ART" "$BUILD/lotmesh-$name"
  $PY wait "$P_R1" /health 10 || die "lotmesh-$name did not start (see $TMP/fp-$name.log)"
  sleep 0.5
  meta "rss_lotmesh-$name" "$(rss_kb "$SPID")"
  stop_pid "$SPID"
  # spawn to the first 200 on /health; the database exists (a restart), as it usually does
  # shellcheck disable=SC2046
  meta "ready_lotmesh-$name" "$(env "${lm_env[@]}" $(db_env "fp_$name") PORT="$P_R2" LOTMESH_DATA_DIR="$TMP/fp-$name" \
    ARTICLES_URL="http://127.0.0.1:$P_ART" $BL ready "$P_R2" "$READY_RUNS" 'ready in ([0-9.]+) ms' -- \
    "$BUILD/lotmesh-$name")"
done
$PY refs "$TMP/refs.json"
mkdir -p "$TMP/fp-fastapi"
FP_FA_DB=$(fa_db "$TMP/fp-fastapi" fp_fastapi)
"$FPY" "$HERE/fastapi_charges.py" init "$FP_FA_DB" "$TMP/refs.json"
# shellcheck disable=SC2046
spawn "$TMP/fp-fastapi.log" env CHARGES_DB="$FP_FA_DB" $(uvicorn_cmd "$P_R3")
$PY wait "$P_R3" /health 20 || die "FastAPI did not start (see $TMP/fp-fastapi.log)"
sleep 0.5
meta rss_fastapi "$(rss_kb "$SPID")"
stop_pid "$SPID"
# shellcheck disable=SC2046
meta ready_fastapi "$(CHARGES_DB="$FP_FA_DB" $BL ready "$P_R4" 3 - -- $(uvicorn_cmd "$P_R4"))"

# ---- the services under test ---------------------------------------------------------------------
note "starting lotmesh-articles, lotmesh-charges and the FastAPI service"
mkdir -p "$TMP/articles" "$TMP/charges" "$TMP/fastapi"
# shellcheck disable=SC2086
spawn "$TMP/articles.log" $SRV_PIN env "${lm_env[@]}" $(db_env articles) PORT="$P_ART" \
  LOTMESH_DATA_DIR="$TMP/articles" "$BUILD/lotmesh-articles"
ART=$SPID
# shellcheck disable=SC2086
spawn "$TMP/charges.log" $SRV_PIN env "${lm_env[@]}" $(db_env charges) PORT="$P_CHG" \
  LOTMESH_DATA_DIR="$TMP/charges" ARTICLES_URL="http://127.0.0.1:$P_ART" "$BUILD/lotmesh-charges"
CHG=$SPID
FA_DB=$(fa_db "$TMP/fastapi" fastapi)
"$FPY" "$HERE/fastapi_charges.py" init "$FA_DB" "$TMP/refs.json"
# shellcheck disable=SC2046,SC2086
spawn "$TMP/fastapi.log" $SRV_PIN env CHARGES_DB="$FA_DB" $(uvicorn_cmd "$P_FA")
FA=$SPID
$PY wait "$P_ART" /health 10 || die "lotmesh-articles did not start"
$PY wait "$P_CHG" /health 10 || die "lotmesh-charges did not start"
$PY wait "$P_FA" /health 20 || die "FastAPI did not start"

TOK_A=$($PY token "$SECRET" articles_api)
TOK_C=$($PY token "$SECRET" charges_api)
note "seeding: ${SEED_N} batches into each"
$PY seed-articles "$P_ART" "$TOK_A" "$TMP/refs.json"
read -r _ t <<<"$($PY seed-charges "$P_CHG" "$TOK_C" "$TMP/refs.json" "$SEED_N" "$SEED_CONNS")"
meta seed_lotmesh "$t"
read -r _ t <<<"$($PY seed-charges "$P_FA" "$TOK_C" "$TMP/refs.json" "$SEED_N" "$SEED_CONNS")"
meta seed_fastapi "$t"
meta n_articles "$($PYBIN -c "import json; print(len(json.load(open('$TMP/refs.json'))['articles']))")"

note "checking both answer alike"
if same=$($PY same-charges "$P_CHG" "$P_FA" "$TOK_C" "$TMP/refs.json"); then
  meta same "$same"
else
  meta same "$same"
  [ "$CONTRACT_CHECK" = warn ] || die "the two services answer differently: $same"
fi

# ---- rounds ----------------------------------------------------------------------------------------
wrk_args() { # CASE PORT TAG -> WRK_ARGS (URL and script) for one endpoint
  local url="http://127.0.0.1:$2"
  case $1 in
    get) WRK_ARGS=(-s "$HERE/wrk/charge_get.lua" "$url" -- "$SEED_N") ;;
    list) WRK_ARGS=("$url/api/v1/charges?limit=50") ;;
    create) WRK_ARGS=(-s "$HERE/wrk/charge_create.lua" "$url" -- "$3" 20 8 "$NUMBERS") ;;
    mixed) WRK_ARGS=(-s "$HERE/wrk/charge_mixed.lua" "$url" -- "$SEED_N" "$3" 10 20 8) ;;
    *) die "unknown endpoint '$1' (get list create mixed)" ;;
  esac
}
common_wrk=(-t"$THREADS" -c"$CONNS" --latency --timeout 10s -H "Authorization: Bearer $TOK_C")
for case in $ENDPOINTS; do
  for s in lotmesh fastapi; do
    port=$P_CHG; [ $s = fastapi ] && port=$P_FA
    wrk_args "$case" "$port" "W$s"
    wrk "${common_wrk[@]}" -d"$WARMUP"s "${WRK_ARGS[@]}" >/dev/null 2>&1 || true
  done
  for r in $(seq "$ROUNDS"); do
    order="lotmesh fastapi"; [ $((r % 2)) = 0 ] && order="fastapi lotmesh"
    for s in $order; do
      note "$case: round $r/$ROUNDS $s"
      if [ $s = lotmesh ]; then
        port=$P_CHG srv=$CHG be=""
        [ "$case" = create ] || [ "$case" = mixed ] && be=$ART
      else
        port=$P_FA srv=$FA be=""
      fi
      wrk_args "$case" "$port" "R$r$s"
      measure_round "$case,$s,$r" "$TMP/wrk/$case,$s,$r.txt" "$srv" "$be" \
        "${common_wrk[@]}" -d"$DURATION"s "${WRK_ARGS[@]}"
    done
  done
done
# statements and round trips on lotmesh-charges' writer per write job (every create of the run,
# seeding too; BEGIN/COMMIT shared by a group commit's jobs, so this falls as batches grow; on
# PostgreSQL transaction control travels in the pipeline with the next statement)
metric() { curl -fsS -H "Authorization: Bearer $TOK_C" "http://127.0.0.1:$P_CHG/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
ws=$(metric lotmesh_db_write_statements_total); wj=$(metric lotmesh_db_write_jobs_total)
cm=$(metric lotmesh_db_commits_total); wr=$(metric lotmesh_db_write_round_trips_total)
meta write_statements_per_job "$(awk -v s="$ws" -v j="$wj" 'BEGIN {printf "%.2f", s / j}')"
# builds before the round-trip counter: every statement was one
meta write_round_trips_per_job "$(awk -v s="${wr:-$ws}" -v j="$wj" 'BEGIN {printf "%.2f", s / j}')"
meta write_jobs_per_commit "$(awk -v c="$cm" -v j="$wj" 'BEGIN {printf "%.1f", j / c}')"
meta rss_after_lotmesh-charges "$(rss_kb "$CHG")"
meta rss_after_lotmesh-articles "$(rss_kb "$ART")"
meta rss_after_fastapi "$(rss_kb "$FA")"
meta elapsed "$(($(date +%s) - T_START))"

mkdir -p "$HERE/results"
OUT="$HERE/results/services-$(date -u +%Y-%m-%d-%H%M%S).md"
$PY svc-report "$META" "$TMP/wrk" >"$OUT"
cat "$OUT"
note "written to ${OUT#"$REPO"/}"
