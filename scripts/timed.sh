#!/usr/bin/env bash
# timed.sh NAME COMMAND [ARGS…] — runs COMMAND and prints one line with NAME and its wall time
# (`time: NAME 123 s`, also on failure), so that .ci/run's log states the duration of each part
# of `make test`; the lines are collected in build/ci-times.txt. Exits with COMMAND's status.
set -uo pipefail
name=$1
shift
t0=$(date +%s)
"$@"
rc=$?
line="time: $name $(( $(date +%s) - t0 )) s$([ $rc -eq 0 ] || echo " (failed, exit $rc)")"
echo "$line"
mkdir -p build && echo "$line" >> build/ci-times.txt
exit $rc
