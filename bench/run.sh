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
cd "$repo"
seconds=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-64}
tmp=$(mktemp -d /tmp/hookd-bench.XXXXXX)
chmod 755 "$tmp"
hookd_pid=
nginx_pid=
peak_rss_kb=0
failed=0

# shellcheck disable=SC2317  # called from the trap
cleanup()
{
    stop_hookd
    if [ -n "$nginx_pid" ]; then
        kill "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    scripts/pg.sh stop "$tmp/pg" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

say()
{
    echo "bench: $*" >&2
}

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

field()
{
    sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"
}

sql()
{
    psql "$conninfo" -XAtqc "$1"
}

pg_port=$(free_port 26500)
port=$(free_port 27500)
admin_port=$(free_port 29500)
conninfo=$(scripts/pg.sh start "$tmp/pg" "$pg_port")
# The test cluster's small defaults would measure buffer eviction, not
# hookd: give it what a machine with this much memory would.
psql "$conninfo" -Xq -c "ALTER SYSTEM SET shared_buffers = '1GB'" \
    -c "ALTER SYSTEM SET max_wal_size = '2GB'"
scripts/pg.sh stop "$tmp/pg" >/dev/null
scripts/pg.sh start "$tmp/pg" "$pg_port" >/dev/null
(umask 077 && openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null)
(umask 077 && openssl rand -hex 24 >"$tmp/secret")
mkdir -p "$tmp/plugins"
ln -s "$repo/build/bench/noop.so" "$tmp/plugins/noop.so"
ln -s "$repo/build/handlers/crm.so" "$tmp/plugins/crm.so"

# start_hookd WORKERS ROUTE: ROUTE is "noop", "noop-record" or "crm".
start_hookd()
{
    local route
    case "$2" in
    noop) route='{ name = "bench"; handler = "noop"; }' ;;
    noop-record)
        route="{ name = \"bench\"; handler = \"noop\";"
        route+=" options = { record = \"$tmp/starts\"; }; }" ;;
    crm) route='{ name = "bench"; events = [ "NEW_LEAD" ]; handler = "crm"; }' ;;
    esac
    cat >"$tmp/hookd.conf" <<CONF
listen = [ "127.0.0.1:$port" ];
tls = { certificate = "$tmp/cert.pem"; key = "$tmp/key.pem"; };
database = { conninfo = "$conninfo"; };
log = { level = "notice"; };
admin = { listen = "127.0.0.1:$admin_port"; };
dispatch = { plugin_dir = "$tmp/plugins"; workers = $1; };
endpoints = ( { path = "/webhooks/contextgpt"; secret_files = [ "$tmp/secret" ]; } );
routes = ( $route );
CONF
    build/hookd serve --config "$tmp/hookd.conf" >"$tmp/hookd.log" 2>&1 &
    hookd_pid=$!
    for _ in $(seq 1 100); do
        grep -q "hookd ready" "$tmp/hookd.log" && return 0
        sleep 0.1
    done
    cat "$tmp/hookd.log" >&2
    exit 1
}

stop_hookd()
{
    local rss
    if [ -n "$hookd_pid" ]; then
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$hookd_pid/status" 2>/dev/null || echo 0)
        if [ "${rss:-0}" -gt "$peak_rss_kb" ]; then
            peak_rss_kb=$rss
        fi
        kill "$hookd_pid" 2>/dev/null || true
        wait "$hookd_pid" 2>/dev/null || true
        hookd_pid=
        # What hookd itself found worth saying (warnings, errors, notices
        # beyond start and stop) belongs next to the figures.
        grep -E " (warning|error) |statistics" "$tmp/hookd.log" >&2 || true
    fi
}

# Every 2xx so far must be an event with its job: counts both.
answered=0
check_stored()
{
    local events jobs
    events=$(sql "SELECT count(*) FROM hookd.events")
    jobs=$(sql "SELECT count(*) FROM hookd.jobs")
    if [ "$events" -lt "$answered" ] || [ "$jobs" -lt "$answered" ]; then
        say "FAILED after $1: $answered answers were 2xx but $events events and $jobs jobs" \
            "are stored"
        failed=1
    fi
    stored_line="stored: $events events and $jobs jobs for $answered answers 2xx"
}

fresh_tables()
{
    sql "TRUNCATE hookd.events, hookd.jobs, hookd.api_actions CASCADE"
    sql "DROP SCHEMA IF EXISTS crm CASCADE"
    sql "CHECKPOINT"
    answered=0
}

load()
{
    build/bench/load 127.0.0.1 "$port" /webhooks/contextgpt "$tmp/secret" "$@"
}

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
