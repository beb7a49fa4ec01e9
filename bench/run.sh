#!/usr/bin/env bash
# What `make bench` runs, all on 127.0.0.1 with the load tool on the same
# cores: a private PostgreSQL and hookd, then bench/load (unique, signed
# events) for BENCH_SECONDS each (default 10):
#   1. keep-alive ingest over 64 connections: events/s and latency;
#   2. a new TLS connection per request (16 at a time): connections/s;
#   3. the ceilings in the same run: nginx-light answering `return 200` over
#      the same certificate (both modes), and pgbench inserting the same rows
#      one per transaction and 50 per transaction;
# then the ratios. Every 2xx must have become a row (else the run fails);
# hookd's peak RSS is reported. Figures go to bench/results/. Not measured
# yet: dispatch (jobs/s, commit-to-start delay) and the 10-million soak.
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

field()
{
    sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"
}

echo "bench: 1. keep-alive ingest, $conns connections, ${seconds}s" >&2
keepalive=$(build/bench/load 127.0.0.1 "$port" /webhooks/contextgpt "$tmp/secret" "$conns" \
            "$seconds")
echo "bench: 2. a new TLS connection per request, 16 at a time, ${seconds}s" >&2
reconnect=$(build/bench/load 127.0.0.1 "$port" /webhooks/contextgpt "$tmp/secret" 16 \
            "$seconds" reconnect)
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$hookd_pid/status")
rows=$(psql "$conninfo" -Atc "select count(*) from hookd.events")
ok=$(( $(field ok "$keepalive") + $(field ok "$reconnect") ))
kill "$hookd_pid"
wait "$hookd_pid" || true
hookd_pid=

echo "bench: 3a. nginx-light, return 200, same certificate" >&2
nginx_port=$(free_port 28500)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
error_log $tmp/nginx/error.log;
pid $tmp/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $tmp/nginx;
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { return 200; }
    }
}
NGINX
nginx -c "$tmp/nginx/nginx.conf" &
nginx_pid=$!
sleep 0.5
nginx_keepalive=$(build/bench/load 127.0.0.1 "$nginx_port" / "$tmp/secret" "$conns" "$seconds")
nginx_reconnect=$(build/bench/load 127.0.0.1 "$nginx_port" / "$tmp/secret" 16 "$seconds" \
                  reconnect)
kill "$nginx_pid"
wait "$nginx_pid" || true

echo "bench: 3b. pgbench, the same rows, 1 and 50 per transaction" >&2
psql "$conninfo" -qc "create table bench_events (like hookd.events including all)"
body=$(sed 's/\x27/\x27\x27/g' samples/new_message_user.json | tr -d '\n')
ins="insert into bench_events (dedup_key, event_type, chatbot_id, thread_id, raw_body,"
ins+=" payload, scheme, endpoint)"
echo "$ins values (md5(random()::text || clock_timestamp()::text), 'NEW_MESSAGE',"\
     "'365062873485935184', 't', '$body', '$body'::jsonb, 'x', '/w');" >"$tmp/one.sql"
echo "$ins select md5(random()::text || g::text || clock_timestamp()::text), 'NEW_MESSAGE',"\
     "'365062873485935184', 't', '$body', '$body'::jsonb, 'x', '/w'"\
     "from generate_series(1, 50) g;" >"$tmp/fifty.sql"
pgb=/usr/lib/postgresql/15/bin/pgbench
one_tps=$("$pgb" -n -c 8 -j 2 -T "$seconds" -f "$tmp/one.sql" "$conninfo" 2>/dev/null \
          | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
fifty_tps=$("$pgb" -n -c 8 -j 2 -T "$seconds" -f "$tmp/fifty.sql" "$conninfo" 2>/dev/null \
            | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
fifty_rows=$(awk -v t="$fifty_tps" 'BEGIN { printf "%.0f", t * 50 }')

ratio()
{
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

result=$(cat <<RESULT
== hookd bench, $(date -u +%F), $(nproc) cores, ${seconds}s per step
hookd keep-alive ($conns conns):   $keepalive
hookd new TLS per request (16):    $reconnect
nginx keep-alive ($conns conns):   $nginx_keepalive
nginx new TLS per request (16):    $nginx_reconnect
pgbench 1 row per transaction:     rows/s=${one_tps%.*}
pgbench 50 rows per transaction:   rows/s=$fifty_rows
stored rows $rows for $ok answers 2xx; hookd peak RSS $((rss_kb / 1024)) MB
ratio keep-alive ingest / pgbench 50-per-txn:  $(ratio "$(field rate "$keepalive")" "$fifty_rows")
ratio keep-alive ingest / pgbench 1-per-txn:   $(ratio "$(field rate "$keepalive")" "$one_tps")
ratio new-TLS hookd / nginx:                   $(ratio "$(field rate "$reconnect")" \
    "$(field rate "$nginx_reconnect")")
ratio keep-alive hookd / nginx:                $(ratio "$(field rate "$keepalive")" \
    "$(field rate "$nginx_keepalive")")
RESULT
)
echo "$result"
mkdir -p bench/results
echo "$result" >>"bench/results/$(date -u +%F)-$(nproc)cores.txt"
if [ "$rows" -lt "$ok" ]; then
    echo "bench: FAILED: $ok answers were 2xx but only $rows events are stored" >&2
    exit 1
fi
