# shellcheck shell=bash
# What bench/run.sh and bench/soak.sh share: a private PostgreSQL tuned
# for the machine, a certificate and secret, hookd started and stopped with
# one route, and the check that every 2xx answer is a stored event with its
# job. Sourced; the caller sets repo and runs bench_setup first.

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

# Sets tmp, the ports and conninfo; starts PostgreSQL; writes the TLS pair,
# the secret and the plugin directory.
bench_setup()
{
    cd "$repo"
    tmp=$(mktemp -d /tmp/hookd-bench.XXXXXX)
    chmod 755 "$tmp"
    hookd_pid=
    nginx_pid=
    peak_rss_kb=0
    failed=0
    answered=0
    trap cleanup EXIT

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
}

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

