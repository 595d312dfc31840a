# bench/common.sh — shell helpers shared by bench/services.sh and bench/gateway.sh (sourced,
# not run). The same measurements as bench/run.sh (CPU from schedstat, other load from
# /proc/stat, the calibration loop, VmRSS), here as a library so the scripts measure alike;
# run.sh sources it for calib_ms, busy_ms and children_ms and keeps its own process handling.
#
# The sourcing script sets HERE and TMP before calling anything, and calls
# `common_init` once; every process it starts goes through `spawn`, which records its PID
# for the EXIT trap (TERM, then KILL after 5 s, each by PID).

NPROC=$(nproc)
PIDS=()
T_START=$(date +%s)

common_init() { # NAME: the script's name for messages; installs the traps
  BENCH_NAME=$1
  META="$TMP/meta"
  : >"$META"
  mkdir -p "$TMP/wrk"
  trap common_cleanup EXIT
  trap 'exit 130' INT TERM
}

common_cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "$BENCH_NAME: kept $TMP" >&2; else rm -rf "$TMP"; fi
}

meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }
note() { printf '[%s %3ds] %s\n' "$BENCH_NAME" "$(($(date +%s) - T_START))" "$*" >&2; }
die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

# spawn LOGFILE CMD...: start CMD in the background (its env from the caller), record its PID
# in SPID and PIDS. stdout and stderr go to LOGFILE.
spawn() {
  local logf=$1
  shift
  "$@" >"$logf" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
}

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

stop_pid() { # PID: TERM, wait up to 5 s, then KILL
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

pid_tree() { # PID and all its descendants (nginx, uvicorn --workers: master and workers)
  local p c
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do pid_tree "$c"; done
}

# cpu_ns PID...: CPU time so far (user + system) of each PID's tree, in ns. From
# /proc/PID/stat rather than run.sh's per-thread schedstat: a process's utime+stime keeps the
# time of its threads that have exited, and thread pools come and go (Python's anyio retires
# idle workers after 10 s; summing live threads' schedstat then goes backwards). Resolution:
# one clock tick (10 ms) per process, well under 1% of a round.
CLK_TCK=$(getconf CLK_TCK)
cpu_ns() {
  local total=0 p root line rest f
  for root in "$@"; do
    for p in $(pid_tree "$root"); do
      read -r line <"/proc/$p/stat" 2>/dev/null || continue
      rest=${line##*) }  # after the command name, which may hold spaces
      read -r -a f <<<"$rest"
      total=$((total + f[11] + f[12])) # fields 14 and 15: utime, stime
    done
  done
  echo $((total * 1000000000 / CLK_TCK))
}

# calib_ms: wall time of a fixed CPU loop run on every core at once (as in run.sh): a slow
# one flags a round measured on a slowed host.
calib_ms() {
  local a b c pids=()
  a=$(date +%s%N)
  for c in $(seq 0 $((NPROC - 1))); do
    taskset -c "$c" awk 'BEGIN { for (i = 0; i < 400000; i++) s += i }' &
    pids+=($!)
  done
  wait "${pids[@]}"
  b=$(date +%s%N)
  echo $(((b - a) / 1000000))
}

busy_ms() { # CPU time all cores spent on anything but idle/iowait since boot, in ms
  local _c u n s i w irq sirq st rest
  read -r _c u n s i w irq sirq st rest </proc/stat
  echo $(((u + n + s + irq + sirq + st) * 1000 / $(getconf CLK_TCK)))
}

children_ms() { # CPU time of this shell's finished children (wrk, ...), in ms
  local line
  times >"$TMP/times"
  line=$(sed -n 2p "$TMP/times")
  awk -v l="$line" 'BEGIN { n = split(l, f, " "); t = 0
    for (i = 1; i <= n; i++) { split(f[i], p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
    printf "%d\n", t * 1000 }'
}

rss_kb() { # PID: VmRSS of PID's tree, kB
  local total=0 p kb
  for p in $(pid_tree "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# measure_round KEY OUTFILE "SERVER_PIDS" "BACKEND_PIDS" WRK_ARGS...: one wrk run with the
# figures run.sh takes around it. SERVER_PIDS is what the round's CPU per request is of
# (space-separated roots), BACKEND_PIDS a second group reported apart ("" for none). Writes
# calib_KEY, cpu_KEY, cpu2_KEY and others_KEY to the meta file.
measure_round() {
  local key=$1 out=$2 srv=$3 be=$4 c0 c1 d0 d1 b0 b1 k0 k1
  shift 4
  meta "calib_$key" "$(calib_ms)"
  # shellcheck disable=SC2086
  c0=$(cpu_ns $srv); d0=0; [ -n "$be" ] && d0=$(cpu_ns $be)
  b0=$(busy_ms); k0=$(children_ms)
  # shellcheck disable=SC2086 # WRK_PIN: "" or "taskset -c N" (the caller's PIN knob)
  ${WRK_PIN:-} wrk "$@" >"$out" 2>&1 || true
  b1=$(busy_ms); k1=$(children_ms)
  # shellcheck disable=SC2086
  c1=$(cpu_ns $srv); d1=0; [ -n "$be" ] && d1=$(cpu_ns $be)
  meta "cpu_$key" "$((c1 - c0))"
  [ -n "$be" ] && meta "cpu2_$key" "$((d1 - d0))"
  # the rest of the machine meanwhile: all busy time minus the measured processes and wrk
  meta "others_$key" "$((b1 - b0 - (c1 - c0 + d1 - d0) / 1000000 - (k1 - k0)))"
}

machine_meta() { # REPO BUILD
  local repo=$1 build=$2 src commit
  meta date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null || echo '?')
  if [ -n "${LOTMESH_COMMIT:-}" ]; then
    commit="$LOTMESH_COMMIT (as given in LOTMESH_COMMIT; sources $src)"
  elif git -C "$src" rev-parse --short HEAD >/dev/null 2>&1; then
    commit="$(git -C "$src" rev-parse --short HEAD)$(git -C "$src" diff --quiet -- lib services 2>/dev/null || echo '+dirty')"
  else
    commit="? (sources $src, not a git tree; set LOTMESH_COMMIT)"
  fi
  meta commit "$commit"
  meta build "$build ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null || echo '?'))"
  meta cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $NPROC cores"
  meta kernel "$(uname -r)"
  meta wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
  meta nproc "$NPROC"
  meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
}
