#!/usr/bin/env bash
# What `make bench` runs: a private PostgreSQL and hookd on 127.0.0.1, then
# bench/load (unique, signed events over 64 keep-alive HTTPS connections)
# for BENCH_SECONDS (default 10). It checks that every 2xx became a row
# (a 2xx without one fails the run), reports hookd's peak RSS, and writes
# the figures to bench/results/<date>-<cores>cores.txt.
#
# This is the first step of the benchmark issue: keep-alive ingest only.
# Not measured yet: new TLS connections per request, dispatch, and the
# pgbench and nginx ceilings the issue compares against.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
seconds=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-64}
tmp=$(mktemp -d /tmp/hookd-bench.XXXXXX)
chmod 755 "$tmp"
hookd_pid=

# shellcheck disable=SC2317  # called from the trap
cleanup()
{
    if [ -n "$hookd_pid" ]; then
        kill "$hookd_pid" 2>/dev/null || true
        wait "$hookd_pid" 2>/dev/null || true
    fi
    scripts/pg.sh stop "$tmp/pg" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port()
{
    local p
    for p in $(seq "$1" "$(($1 + 500))"); do
        if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

pg_port=$(free_port 26500)
port=$(free_port 27500)
conninfo=$(scripts/pg.sh start "$tmp/pg" "$pg_port")
(umask 077 && openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null)
(umask 077 && openssl rand -hex 24 >"$tmp/secret")
cat >"$tmp/hookd.conf" <<CONF
listen = [ "127.0.0.1:$port" ];
tls = { certificate = "$tmp/cert.pem"; key = "$tmp/key.pem"; };
http = { threads = 96; };
database = { conninfo = "$conninfo"; writers = 2; };
log = { level = "notice"; };
admin = { listen = ""; };
dispatch = { workers = 0; };
endpoints = ( { path = "/webhooks/contextgpt"; secret_files = [ "$tmp/secret" ]; } );
CONF

build/hookd serve --config "$tmp/hookd.conf" >"$tmp/hookd.log" 2>&1 &
hookd_pid=$!
for _ in $(seq 1 100); do
    grep -q "hookd ready" "$tmp/hookd.log" && break
    sleep 0.1
done
grep -q "hookd ready" "$tmp/hookd.log" || { cat "$tmp/hookd.log"; exit 1; }

echo "bench: keep-alive ingest, $conns connections, ${seconds}s" >&2
line=$(build/bench/load 127.0.0.1 "$port" /webhooks/contextgpt "$tmp/secret" "$conns" \
       "$seconds")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$hookd_pid/status")
rows=$(psql "$conninfo" -Atc "select count(*) from hookd.events")
ok=$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$line")

result="cores=$(nproc) date=$(date -u +%F) keepalive_ingest: $line rows=$rows"
result+=" hookd_peak_rss_mb=$((rss_kb / 1024))"
echo "$result"
mkdir -p bench/results
echo "$result" >>"bench/results/$(date -u +%F)-$(nproc)cores.txt"
if [ "$rows" -lt "$ok" ]; then
    echo "bench: FAILED: $ok answers were 2xx but only $rows events are stored" >&2
    exit 1
fi
