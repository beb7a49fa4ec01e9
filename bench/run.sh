#!/usr/bin/env bash
# What `make bench` runs, all on 127.0.0.1 with the load tool on the same
# cores as hookd and PostgreSQL. A private PostgreSQL (shared_buffers 1GB,
# max_wal_size 2GB, fsync and synchronous_commit on) and hookd with the
# example config's defaults (2 writers, 64 HTTP threads, 4 dispatch workers;
# log level notice) and one route, so every event also gets a job. Then
# bench/load (unique, signed events) for BENCH_SECONDS each (default 10):
#   1. keep-alive ingest over 64 connections: events/s and latency;
#   2. a new TLS connection per request (16 at a time, TLS 1.3 resuming the
#      previous session): connections/s;
#   3. dispatch: jobs/s through the no-op handler (bench/noop.c) and through
#      crm (each job one lead), and the median delay from an event's commit
#      to its handler's start when hookd is otherwise idle;
#   4. the ceilings in the same run: nginx-light answering `return 200` over
#      the same certificate (both modes), and pgbench inserting the same rows
#      one per transaction and 50 per transaction;
# then the ratios. After every load, each 2xx must be a stored event with
# its job (else the run fails). hookd's peak RSS is reported. Figures are
# appended to bench/results/<date>-<cores>cores.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
seconds=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-64}
bench_setup

# jobs_rate SECONDS: done jobs per second over a window (or until none is left).
jobs_rate()
{
    local start now done0 done1 left t0 t1
    done0=$(sql "SELECT count(*) FROM hookd.jobs WHERE status = 'done'")
    t0=$(date +%s.%N)
    start=$(date +%s)
    while :; do
        sleep 0.2
        now=$(date +%s)
        left=$(sql "SELECT count(*) FROM hookd.jobs WHERE status <> 'done'")
        if [ "$left" -eq 0 ] || [ $((now - start)) -ge "$1" ]; then
            break
        fi
    done
    t1=$(date +%s.%N)
    done1=$(sql "SELECT count(*) FROM hookd.jobs WHERE status = 'done'")
    awk -v d=$((done1 - done0)) -v a="$t0" -v b="$t1" \
        'BEGIN { printf "jobs=%d seconds=%.1f rate=%.0f", d, b - a, d / (b - a) }'
}

say "1. keep-alive ingest, $conns connections, ${seconds}s (every event also gets a job)"
start_hookd 0 noop
keepalive=$(load "$conns" "$seconds")
answered=$((answered + $(field ok "$keepalive")))
check_stored "keep-alive ingest"
keepalive_stored=$stored_line
batches=$(curl -s "http://127.0.0.1:$admin_port/metrics" \
          | awk '/^hookd_db_batches_total / {print $2}')

say "2. a new TLS connection per request, 16 at a time, ${seconds}s"
reconnect=$(load 16 "$seconds" reconnect)
answered=$((answered + $(field ok "$reconnect")))
check_stored "new connections"
reconnect_stored=$stored_line
stop_hookd

say "3a. dispatch through the no-op handler, 4 workers, up to ${seconds}s"
start_hookd 4 noop
noop=$(jobs_rate "$seconds")
stop_hookd

say "3b. dispatch through crm: 20000 leads stored, then 4 workers, up to $((seconds * 3))s"
fresh_tables
start_hookd 0 crm
leads=$(LOAD_EVENT=lead LOAD_MAX=20000 load "$conns" 60)
answered=$((answered + $(field ok "$leads")))
check_stored "lead ingest"
stop_hookd
start_hookd 4 crm
crm=$(jobs_rate $((seconds * 3)))
contacts=$(sql "SELECT count(*) FROM crm.contacts")
stop_hookd

say "3c. commit-to-start delay when idle: 200 events, one every 20 ms"
fresh_tables
start_hookd 4 noop-record
idle=$(LOAD_MAX=200 LOAD_PACE_MS=20 load 1 60)
answered=$((answered + $(field ok "$idle")))
for _ in $(seq 1 50); do
    [ "$(sql "SELECT count(*) FROM hookd.jobs WHERE status <> 'done'")" -eq 0 ] && break
    sleep 0.1
done
check_stored "idle events"
stop_hookd
# jobs.created_at is the storing transaction's start: the delay measured
# also holds that statement's own time, so it errs on the long side.
sql "CREATE TABLE bench_starts (event_id bigint, start_us bigint)"
psql "$conninfo" -Xqc "\\copy bench_starts FROM '$tmp/starts' WITH (DELIMITER ' ')"
delay=$(sql "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY d))::numeric, 2)
             || ' p99_ms=' || round((percentile_cont(0.99) WITHIN GROUP (ORDER BY d))::numeric, 2)
             || ' count=' || count(*)
             FROM (SELECT (s.start_us - extract(epoch FROM j.created_at) * 1e6) / 1000 AS d
                   FROM bench_starts s JOIN hookd.jobs j USING (event_id)) x")

say "4a. nginx-light, return 200, same certificate"
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
nginx_pid=

say "4b. pgbench, the same rows, 1 and 50 per transaction"
psql "$conninfo" -Xqc "CREATE TABLE bench_events (LIKE hookd.events INCLUDING ALL)"
body=$(sed 's/\x27/\x27\x27/g' samples/new_message_user.json | tr -d '\n')
ins="INSERT INTO bench_events (dedup_key, event_type, chatbot_id, thread_id, raw_body,"
ins+=" payload, scheme, endpoint)"
echo "$ins VALUES (md5(random()::text || clock_timestamp()::text), 'NEW_MESSAGE',"\
     "'365062873485935184', 't', '$body', '$body'::jsonb, 'x', '/w');" >"$tmp/one.sql"
echo "$ins SELECT md5(random()::text || g::text || clock_timestamp()::text), 'NEW_MESSAGE',"\
     "'365062873485935184', 't', '$body', '$body'::jsonb, 'x', '/w'"\
     "FROM generate_series(1, 50) g;" >"$tmp/fifty.sql"
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

ka_rate=$(field rate "$keepalive")
result=$(cat <<RESULT
== hookd bench, $(date -u +%F), $(nproc) cores, ${seconds}s per step, $(git rev-parse --short HEAD)
hookd keep-alive ($conns conns):   $keepalive
  $keepalive_stored; mean batch $(ratio "$(field ok "$keepalive")" "${batches:-0}")
hookd new TLS per request (16):    $reconnect
  $reconnect_stored
dispatch, no-op handler:           $noop
dispatch, crm (20000 leads):       $crm contacts=$contacts
commit-to-start when idle:         median_ms=$delay
nginx keep-alive ($conns conns):   $nginx_keepalive
nginx new TLS per request (16):    $nginx_reconnect
pgbench 1 row per transaction:     rows/s=${one_tps%.*}
pgbench 50 rows per transaction:   rows/s=$fifty_rows
hookd peak RSS $((peak_rss_kb / 1024)) MB
ratio keep-alive ingest / pgbench 50-per-txn:  $(ratio "$ka_rate" "$fifty_rows")
ratio keep-alive ingest / pgbench 1-per-txn:   $(ratio "$ka_rate" "$one_tps")
ratio new-TLS hookd / nginx:                   $(ratio "$(field rate "$reconnect")" \
    "$(field rate "$nginx_reconnect")")
ratio keep-alive hookd / nginx:                $(ratio "$ka_rate" \
    "$(field rate "$nginx_keepalive")")
RESULT
)
echo "$result"
mkdir -p bench/results
echo "$result" >>"bench/results/$(date -u +%F)-$(nproc)cores.txt"
if [ "$failed" -ne 0 ]; then
    say "FAILED: some 2xx answers have no stored event or job (see above)"
    exit 1
fi
