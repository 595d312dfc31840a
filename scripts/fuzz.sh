#!/bin/sh
# fuzz.sh <build_dir> <seconds> — runs every libFuzzer target in <build_dir> (fuzz_*) for
# <seconds> each, on a copy of its seed corpus (fuzz/corpus/<target>/; the checked-in corpus
# is never modified) with its dictionary (fuzz/<target>.dict) when there is one, and prints
# one summary line per target. Exits non-zero if any target
# crashed, leaked, timed out, ran out of memory, or if there is no target at all; the crash
# input is kept under <build_dir>/fuzz-artifacts/ and the tail of the log is printed.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 <build_dir> <seconds>" >&2
    exit 2
fi
build=$1
secs=$2
case $secs in '' | *[!0-9]*) echo "fuzz.sh: seconds must be a whole number (got '$secs')" >&2; exit 2 ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
keep="$build/fuzz-artifacts"

targets=$(find "$build" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x 2>/dev/null | sort)
if [ -z "$targets" ]; then
    echo "fuzz.sh: no fuzz targets in $build (configure with CC=clang -DLM_FUZZ=ON)" >&2
    exit 1
fi

status=0
for exe in $targets; do
    name=$(basename "$exe")
    work=$(mktemp -d "${TMPDIR:-/tmp}/lotmesh-$name.XXXXXX")
    mkdir -p "$work/corpus" "$work/artifacts"
    seeds="$repo/fuzz/corpus/$name"
    nseeds=0
    if [ -d "$seeds" ]; then
        cp -R "$seeds/." "$work/corpus/"
        nseeds=$(find "$work/corpus" -type f | wc -l)
    fi
    dict=
    [ -f "$repo/fuzz/$name.dict" ] && dict="-dict=$repo/fuzz/$name.dict"
    # -timeout: one input taking longer is a hang (reported as a failure);
    # -rss_limit_mb: memory growth is a failure too.
    # shellcheck disable=SC2086 # $dict is one word or none
    "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" $dict "$work/corpus" >"$work/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
    ncorpus=$(find "$work/corpus" -type f | wc -l)
    crashes=$(find "$work/artifacts" -type f | wc -l)
    if [ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ]; then
        printf '%-22s ok      %s execs in %ss, coverage %s, corpus %s -> %s, peak rss %s MB\n' \
            "$name" "${execs:-?}" "$secs" "${cov:-?}" "$nseeds" "$ncorpus" "${rss:-?}"
        rm -rf "$work"
    else
        status=1
        mkdir -p "$keep"
        cp "$work"/artifacts/* "$keep/" 2>/dev/null
        printf '%-22s FAILED  exit %s after %s execs; %s artifact(s) kept in %s\n' \
            "$name" "$rc" "${execs:-?}" "$crashes" "$keep"
        echo "---- last lines of $name's log ($work/log) ----"
        tail -n 40 "$work/log"
        echo "---- reproduce: $exe $keep/<artifact> ----"
    fi
done
exit $status
