#!/bin/sh
# fuzz.sh <build_dir> <seconds> — runs every libFuzzer target in <build_dir> (fuzz_*) for
# <seconds> each, on a copy of its seed corpus (fuzz/corpus/<target>/; the checked-in corpus
# is never modified) with its dictionary (fuzz/<target>.dict) when there is one, and prints
# one summary line per target. Exits non-zero if any target
# crashed, leaked, timed out, ran out of memory, or if there is no target at all; the crash
# input is kept under <build_dir>/fuzz-artifacts/ and the tail of the log is printed.
# FUZZ_JOBS targets run at a time (default: the number of cores), each one process on one
# core for its whole <seconds>, so every target gets the time it got one after the other;
# the summaries are printed in the targets' order once all have finished.
set -u

# One target, run by this script itself (fuzz.sh --one <build_dir> <seconds> <reports> <exe>):
# its summary line, or its failure report, goes to <reports>/<target>; exits 1 on failure.
if [ "${1:-}" = "--one" ]; then
    build=$2
    secs=$3
    reports=$4
    exe=$5
    repo=$(cd "$(dirname "$0")/.." && pwd)
    keep="$build/fuzz-artifacts"
    name=$(basename "$exe")
    status=0
    {
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
    } >"$reports/$name" 2>&1
    exit $status
fi

if [ $# -ne 2 ]; then
    echo "usage: $0 <build_dir> <seconds>" >&2
    exit 2
fi
build=$1
secs=$2
case $secs in '' | *[!0-9]*) echo "fuzz.sh: seconds must be a whole number (got '$secs')" >&2; exit 2 ;; esac
jobs=${FUZZ_JOBS:-$(nproc)}
case $jobs in '' | 0 | *[!0-9]*) echo "fuzz.sh: FUZZ_JOBS must be a positive whole number (got '$jobs')" >&2; exit 2 ;; esac

targets=$(find "$build" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x 2>/dev/null | sort)
if [ -z "$targets" ]; then
    echo "fuzz.sh: no fuzz targets in $build (configure with CC=clang -DLM_FUZZ=ON)" >&2
    exit 1
fi

reports=$(mktemp -d "${TMPDIR:-/tmp}/lotmesh-fuzz-reports.XXXXXX")
# shellcheck disable=SC2086 # one target path a word
printf '%s\n' $targets | xargs -P "$jobs" -I '{}' sh "$0" --one "$build" "$secs" "$reports" '{}'
status=$?
for exe in $targets; do
    name=$(basename "$exe")
    if [ -f "$reports/$name" ]; then
        cat "$reports/$name"
    else
        echo "$name did not run"
        status=1
    fi
done
rm -rf "$reports"
[ "$status" -eq 0 ] || exit 1
exit 0
