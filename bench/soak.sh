#!/usr/bin/env bash
# What `make bench-soak` runs: hookd (example-config defaults, one no-op
# route, 4 dispatch workers running the jobs as they come) under keep-alive
# load over 64 connections until SOAK_EVENTS unique signed events (default
# 10 million) were answered, its resident memory sampled every
# SOAK_SAMPLE_S seconds (default 10). Passes when every 2xx is a stored
# event with its job, peak RSS stays within 64 MB, and memory is flat: the
# highest sample of the last quarter of the run is at most 10% (plus 2 MB)
# above the highest of the first quarter. The samples and the verdict are
# appended to bench/results/<date>-<cores>cores-soak.txt. Needs about 3 kB
# of disk per event for PostgreSQL (30 GB for 10 million); it checks first.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
events=${SOAK_EVENTS:-10000000}
every=${SOAK_SAMPLE_S:-10}
conns=64

need_kb=$((events * 3))
free_kb=$(df -Pk /tmp | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
    say "need about $((need_kb / 1024 / 1024)) GB free under /tmp for $events events," \
        "$((free_kb / 1024 / 1024)) GB are; set SOAK_EVENTS lower"
    exit 1
fi
bench_setup

say "soak: $events events over $conns keep-alive connections, jobs run as they come"
start_hookd 4 noop
samples="$tmp/samples"
LOAD_MAX=$events load "$conns" 86400 >"$tmp/load.out" &
load_pid=$!
t0=$(date +%s)
while kill -0 "$load_pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$hookd_pid/status")
    echo "$(($(date +%s) - t0)) $rss" >>"$samples"
    sleep "$every"
done
wait "$load_pid"
result_load=$(cat "$tmp/load.out")
answered=$(field ok "$result_load")
check_stored "the soak"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$hookd_pid/status")
stop_hookd

# Flat: the last quarter's highest sample against the first quarter's.
read -r first last < <(awk '{ rss[NR] = $2 } END {
        q = int(NR / 4); if (q < 1) q = 1
        for (i = 1; i <= q; i++) if (rss[i] > a) a = rss[i]
        for (i = NR - q + 1; i <= NR; i++) if (rss[i] > b) b = rss[i]
        print a, b }' "$samples")
verdict=flat
if [ "$last" -gt $((first + first / 10 + 2048)) ]; then
    verdict="GROWING"
    failed=1
fi
if [ "$hwm" -gt $((64 * 1024)) ]; then
    verdict="$verdict, OVER 64 MB"
    failed=1
fi

result=$(cat <<RESULT
== hookd soak, $(date -u +%F), $(nproc) cores, $(git rev-parse --short HEAD)
load:   $result_load
$stored_line
RSS first quarter max $((first / 1024)) MB, last quarter max $((last / 1024)) MB,
peak (VmHWM) $((hwm / 1024)) MB: $verdict
samples (seconds RSS_kB): $(tr '\n' ' ' <"$samples")
RESULT
)
echo "$result"
mkdir -p bench/results
echo "$result" >>"bench/results/$(date -u +%F)-$(nproc)cores-soak.txt"
if [ "$failed" -ne 0 ]; then
    say "FAILED (see above)"
    exit 1
fi
