#!/usr/bin/env bash
# bench/run.sh <build_dir> — the lotmesh runtime against nginx on 127.0.0.1, in one run.
#
# Builds and installs nothing: `make bench` builds build/release and installs wrk and nginx
# (scripts/deps.sh bench) first. Starts, in a temp dir, lotmesh-registry from <build_dir> and
# Debian's nginx with its own generated config, both answering GET /health with the same 15
# bytes of JSON, then runs wrk against each, taking turns, for one worker each and for all
# workers each, with access logging off and then on. Also measures lotmesh's idle RSS and its
# time to ready. Writes bench/results/runtime-<date>.md and prints it. See bench/README.md.
#
# Knobs (environment): DURATION=3 (s per measured round), ROUNDS=4 (rounds per server and
# case, alternating which server goes first), WARMUP=1 (s per server and case), CONNS=64,
# PIN=1 (pin server and wrk to separate cores in the one-worker case), VARIANTS="raw logged",
# READY_RUNS=5, KEEP_TMP=0 (1 keeps the temp dir: configs, logs, raw wrk output).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shared measurement helpers; this script keeps its own process handling (defined below,
# they replace common.sh's functions of the same names)
. "$HERE/common.sh"
[ $# -eq 1 ] || { echo "usage: bench/run.sh <build_dir>" >&2; exit 2; }
BUILD=$(cd "$1" 2>/dev/null && pwd) || { echo "run.sh: no build dir '$1'" >&2; exit 2; }
BIN="$BUILD/lotmesh-registry"
[ -x "$BIN" ] || { echo "run.sh: $BIN not built (make bench builds it)" >&2; exit 2; }
for t in wrk nginx taskset python3; do
  command -v "$t" >/dev/null || { echo "run.sh: '$t' missing: run scripts/deps.sh bench" >&2; exit 2; }
done

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-4}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
PIN=${PIN:-1}
VARIANTS=${VARIANTS:-raw logged}
READY_RUNS=${READY_RUNS:-5}
NPROC=$(nproc)
PY="python3 $HERE/benchlib.py"
T_START=$(date +%s)

TMP=$(mktemp -d -t lotmesh-bench.XXXXXX)
mkdir -p "$TMP/wrk"
META="$TMP/meta"
: >"$META"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "run.sh: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }
note() { printf '[bench %3ds] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }

forget_pid() { # drop $1 from PIDS
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget_pid "$1"
}

# nginx_conf DIR PORT WORKERS LOG(0|1): a self-contained config; nothing under /etc or /var.
nginx_conf() {
  local d=$1 port=$2 workers=$3 log=$4 access="access_log off;"
  mkdir -p "$d/tmp"
  if [ "$log" = 1 ]; then
    # One JSON line per request with the fields lotmesh's access log has; nginx's default:
    # one write() per request (no buffer=).
    access="log_format lm escape=json '{\"time\":\"\$time_iso8601\",\"level\":\"info\",\"service\":\"nginx\",\"request_id\":\"\$request_id\",\"msg\":\"access\",\"method\":\"\$request_method\",\"path\":\"\$uri\",\"status\":\$status,\"bytes\":\$body_bytes_sent,\"duration_s\":\$request_time,\"peer\":\"\$remote_addr:\$remote_port\"}';
    access_log $d/access.log lm;"
  fi
  cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $workers;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    $access
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000000;
    server {
        listen 127.0.0.1:$port reuseport;
        location = /health {
            default_type application/json;
            add_header X-Request-ID \$request_id;
            return 200 '{"status":"ok"}';
        }
    }
}
EOF
}

# start_lotmesh PORT WORKERS ACCESS_LOG LOGFILE [pin-prefix...] -> sets SPID
start_lotmesh() {
  local port=$1 workers=$2 alog=$3 logf=$4
  shift 4
  PORT=$port WORKERS=$workers ACCESS_LOG=$alog LOG_LEVEL=info BIND_ADDRESS=127.0.0.1 OTEL_TRACES_EXPORTER=none \
    "$@" "$BIN" 2>"$logf" &
  SPID=$!
  PIDS+=("$SPID")
}

# start_nginx DIR [pin-prefix...] -> sets SPID
start_nginx() {
  local d=$1
  shift
  "$@" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" &
  SPID=$!
  PIDS+=("$SPID")
}

# Ports: one python call hands out all of them (distinct, free when asked).
read -r -a FREE_PORTS <<<"$($PY freeport 24)"
freeport() { # -> PORT (a global: $(...) would lose the shift)
  PORT_OUT=${FREE_PORTS[0]}
  FREE_PORTS=("${FREE_PORTS[@]:1}")
}

# wait_health PORT PID: until GET /health answers 200 (5 s at most, PID must stay alive)
wait_health() {
  local port=$1 pid=$2 line i
  for i in $(seq 500); do
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
      printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
      line=""
      read -r -t 1 line <&3 || true
      exec 3<&-
      [[ $line == *" 200 "* ]] && return 0
    fi 2>/dev/null
    kill -0 "$pid" 2>/dev/null || { echo "run.sh: process $pid exited before answering on $port" >&2; return 1; }
    sleep 0.01
  done
  echo "run.sh: nothing answered 200 on port $port within 5 s" >&2
  return 1
}

pid_tree() { # PID and its children (nginx: master and workers)
  echo "$1"
  cat /proc/"$1"/task/*/children 2>/dev/null || true
}

cpu_ns() { # CPU time so far of PID, its children and all their threads, in ns
  local total=0 p f t
  for p in $(pid_tree "$1"); do
    for f in /proc/"$p"/task/*/schedstat; do
      read -r t _ <"$f" 2>/dev/null && total=$((total + t))
    done
  done
  echo "$total"
}

# calib_ms, busy_ms, children_ms: from common.sh (the same measurements as services.sh and
# gateway.sh).

rss_kb() { # VmRSS of PID and its children, kB
  local total=0 p kb
  for p in $(pid_tree "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# ---- the machine, versions -----------------------------------------------------------------
meta date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
meta commit "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet -- lib services 2>/dev/null || echo '+dirty')"
meta build "$BUILD ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || echo '?'), binary of $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'))"
meta cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $NPROC cores"
meta kernel "$(uname -r)"
meta nginx "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
meta wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
meta duration "$DURATION"
meta rounds "$ROUNDS"
meta warmup "$WARMUP"
meta conns "$CONNS"
meta nproc "$NPROC"
meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- same bytes? -----------------------------------------------------------------------------
note "checking both servers answer the same body"
freeport; P1=$PORT_OUT; freeport; P2=$PORT_OUT
start_lotmesh "$P1" 1 false "$TMP/check-lotmesh.log"; L=$SPID
nginx_conf "$TMP/nginx-check" "$P2" 1 0
start_nginx "$TMP/nginx-check"; N=$SPID
wait_health "$P1" "$L"; wait_health "$P2" "$N"
A=$($PY get "$P1" /health); B=$($PY get "$P2" /health)
if [ "$A" != "$B" ]; then
  echo "run.sh: responses differ: lotmesh '$A' vs nginx '$B'" >&2
  exit 1
fi
meta body "$A"
stop_pid "$L"; stop_pid "$N"

# ---- footprint: idle RSS and time to ready ---------------------------------------------------
note "idle RSS and time to ready"
for w in 1 "$NPROC"; do
  freeport; P=$PORT_OUT
  start_lotmesh "$P" "$w" true "$TMP/rss-$w.log"
  wait_health "$P" "$SPID"
  sleep 0.5
  meta "rss_idle_w$w" "$(rss_kb "$SPID")"
  stop_pid "$SPID"
  [ "$NPROC" = 1 ] && break
done
freeport; P=$PORT_OUT
meta ready_lotmesh "$(PORT=$P WORKERS=$NPROC ACCESS_LOG=true LOG_LEVEL=info OTEL_TRACES_EXPORTER=none \
  $PY ready "$P" "$READY_RUNS" 'ready in ([0-9.]+) ms' -- "$BIN")"
freeport; P=$PORT_OUT
nginx_conf "$TMP/nginx-ready" "$P" "$NPROC" 0
meta ready_nginx "$($PY ready "$P" "$READY_RUNS" - -- nginx -p "$TMP/nginx-ready" \
  -c "$TMP/nginx-ready/nginx.conf" -e "$TMP/nginx-ready/error.log")"

# ---- throughput and latency ------------------------------------------------------------------
run_wrk() { # OUT PORT THREADS [pin-prefix...]
  local out=$1 port=$2 threads=$3
  shift 3
  "$@" wrk -t"$threads" -c"$CONNS" -d"$DURATION"s --latency "http://127.0.0.1:$port/health" >"$out"
}

worker_counts=(1)
[ "$NPROC" -gt 1 ] && worker_counts+=("$NPROC")
for variant in $VARIANTS; do
  case $variant in
    raw) alog=false; nlog=0 ;;
    logged) alog=true; nlog=1 ;;
    *) echo "run.sh: unknown variant '$variant' (raw|logged)" >&2; exit 2 ;;
  esac
  for w in "${worker_counts[@]}"; do
    srv_pin=() wrk_pin=() threads=$NPROC
    if [ "$w" = 1 ] && [ "$NPROC" -ge 2 ] && [ "$PIN" = 1 ]; then
      # one worker: the server on CPU 0, wrk alone on CPU 1, so neither steals the other's core
      srv_pin=(taskset -c 0) wrk_pin=(taskset -c 1) threads=1
    fi
    meta "pin_w$w" "${srv_pin[*]:-none}|${wrk_pin[*]:-none}|$threads"
    tag="$variant-w$w"
    note "$tag: starting lotmesh and nginx (${srv_pin[*]:-unpinned})"
    freeport; PL=$PORT_OUT; freeport; PN=$PORT_OUT
    start_lotmesh "$PL" "$w" "$alog" "$TMP/lotmesh-$tag.log" "${srv_pin[@]}"; L=$SPID
    nginx_conf "$TMP/nginx-$tag" "$PN" "$w" "$nlog"
    start_nginx "$TMP/nginx-$tag" "${srv_pin[@]}"; N=$SPID
    wait_health "$PL" "$L"; wait_health "$PN" "$N"
    for s in lotmesh nginx; do
      port=$PL; [ $s = nginx ] && port=$PN
      "${wrk_pin[@]}" wrk -t"$threads" -c"$CONNS" -d"$WARMUP"s "http://127.0.0.1:$port/health" >/dev/null
    done
    for r in $(seq "$ROUNDS"); do
      order="lotmesh nginx"; [ $((r % 2)) = 0 ] && order="nginx lotmesh"
      for s in $order; do
        port=$PL; [ $s = nginx ] && port=$PN
        pid=$L; [ $s = nginx ] && pid=$N
        note "$tag: round $r/$ROUNDS $s"
        meta "calib_$variant,$w,$s,$r" "$(calib_ms)"
        c0=$(cpu_ns "$pid"); b0=$(busy_ms); k0=$(children_ms)
        run_wrk "$TMP/wrk/$variant,$w,$s,$r.txt" "$port" "$threads" "${wrk_pin[@]}"
        b1=$(busy_ms); k1=$(children_ms); c1=$(cpu_ns "$pid")
        meta "cpu_$variant,$w,$s,$r" "$((c1 - c0))"
        # CPU the rest of the machine used meanwhile: all busy time minus server and wrk
        meta "others_$variant,$w,$s,$r" "$((b1 - b0 - (c1 - c0) / 1000000 - (k1 - k0)))"
      done
    done
    meta "rss_after_$tag" "$(rss_kb "$L")"
    stop_pid "$L"; stop_pid "$N"
    if [ "$variant" = logged ]; then
      meta "loglines_lotmesh_$tag" "$(grep -c '"msg":"access"' "$TMP/lotmesh-$tag.log" || true)"
      meta "loglines_nginx_$tag" "$(wc -l <"$TMP/nginx-$tag/access.log")"
      meta "logbytes_lotmesh_$tag" "$(stat -c %s "$TMP/lotmesh-$tag.log")"
      meta "logbytes_nginx_$tag" "$(stat -c %s "$TMP/nginx-$tag/access.log")"
      # hundreds of MB each: keep only the last lines unless asked to keep everything
      if [ "${KEEP_TMP:-0}" != 1 ]; then
        for f in "$TMP/lotmesh-$tag.log" "$TMP/nginx-$tag/access.log"; do
          tail -n 5 "$f" >"$f.tail" && rm -f "$f"
        done
      fi
    fi
  done
done
meta elapsed "$(($(date +%s) - T_START))"

# ---- report ------------------------------------------------------------------------------------
mkdir -p "$HERE/results"
OUT="$HERE/results/runtime-$(date -u +%Y-%m-%d-%H%M%S).md"
$PY report "$META" "$TMP/wrk" >"$OUT"
cat "$OUT"
note "written to ${OUT#"$REPO"/}"
