#!/usr/bin/env bash
# Serves hookd in the foreground with a ready-made setup under ./var of the
# repo; this is what `make run` runs once build/hookd is built.
#   var/tls/{cert,key}.pem  self-signed ECDSA P-256 certificate (made once)
#   var/secret              the endpoint's shared secret (made once)
#   var/pg                  a private PostgreSQL cluster (unless
#                           HOOKD_DATABASE_URL is set), stopped again on exit
#   var/hookd.conf          the configuration, rewritten at every run
# A second run reuses the certificate, the secret and the database.
#
# usage: scripts/run.sh
# env:   HOOKD_RUN_PORT      HTTPS port (default 8443, on 127.0.0.1)
#        HOOKD_RUN_PGPORT    port of the private cluster (default 5433)
#        HOOKD_DATABASE_URL  use this database instead of a private cluster
#        HOOKD_RUN_FAKE_API  1: also start a stand-in ContextGPT API on
#                            127.0.0.1 (build/tests/fake-api) and an
#                            autoreply route that answers through it
#        HOOKD_RUN_FAKE_API_PORT  its port (default 9443)
# Ctrl-C stops hookd, then the cluster.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
var=$repo/var
hookd=$repo/build/hookd
port=${HOOKD_RUN_PORT:-8443}
pg_port=${HOOKD_RUN_PGPORT:-5433}
endpoint=/webhooks/contextgpt

if [ ! -x "$hookd" ]; then
    echo "run: $hookd is not built; run make first" >&2
    exit 1
fi
mkdir -p "$var"

# --- TLS certificate, made once
tls=$var/tls
if [ ! -s "$tls/cert.pem" ] || [ ! -s "$tls/key.pem" ]; then
    echo "run: making a self-signed certificate in $tls" >&2
    mkdir -p "$tls"
    (umask 077 && openssl req -x509 -nodes \
        -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$tls/key.pem.tmp" -out "$tls/cert.pem.tmp" -days 825 \
        -subj "/CN=localhost" \
        -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=serverAuth" 2>/dev/null)
    chmod 644 "$tls/cert.pem.tmp"
    mv "$tls/key.pem.tmp" "$tls/key.pem"
    mv "$tls/cert.pem.tmp" "$tls/cert.pem"
fi
chmod 600 "$tls/key.pem"

# --- shared secret, made once: 32 random bytes, base64url, no padding
secret_file=$var/secret
if [ ! -s "$secret_file" ]; then
    (umask 077 && openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n' \
        >"$secret_file.tmp")
    mv "$secret_file.tmp" "$secret_file"
fi
chmod 600 "$secret_file"

# --- database
started_pg=0
fake_api_pid=
# shellcheck disable=SC2317  # called from the trap
cleanup()
{
    local rc=$?

    trap - EXIT
    if [ -n "$fake_api_pid" ]; then
        kill "$fake_api_pid" 2>/dev/null || true
    fi
    if [ "$started_pg" -eq 1 ]; then
        "$repo/scripts/pg.sh" stop "$var/pg" || true
    fi
    exit "$rc"
}
trap cleanup EXIT
# Ctrl-C reaches hookd from the terminal; this shell waits for hookd to stop
# and then stops the cluster (the EXIT trap).
trap ':' INT

conninfo=
if [ -z "${HOOKD_DATABASE_URL:-}" ]; then
    started_pg=1
    conninfo=$("$repo/scripts/pg.sh" start "$var/pg" "$pg_port")
    psql_target="\"$conninfo\""
else
    # The daemon reads the variable itself; it may hold a password, so
    # neither the config nor the banner gets its value.
    # shellcheck disable=SC2016  # printed as is, for the user's shell
    psql_target='"$HOOKD_DATABASE_URL"'
fi

# --- the stand-in ContextGPT API, when asked for
fake_api=${HOOKD_RUN_FAKE_API:-0}
if [ "$fake_api" = 1 ]; then
    if [ ! -x "$repo/build/tests/fake-api" ]; then
        echo "run: build/tests/fake-api is not built; run make build/tests/fake-api" >&2
        exit 1
    fi
    fake_api_port=${HOOKD_RUN_FAKE_API_PORT:-9443}
    (umask 077 && printf 'fake-key-for-local-tries\n' >"$var/api-key")
    "$repo/build/tests/fake-api" "$fake_api_port" "$tls/cert.pem" "$tls/key.pem" \
        >"$var/fake-api.log" 2>&1 &
    fake_api_pid=$!
    # It says so at once when it listens; anything else is a failure.
    for _ in $(seq 1 30); do
        grep -q "listening" "$var/fake-api.log" 2>/dev/null && break
        kill -0 "$fake_api_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "listening" "$var/fake-api.log" 2>/dev/null; then
        echo "run: the stand-in API could not start on 127.0.0.1:$fake_api_port:" >&2
        cat "$var/fake-api.log" >&2
        echo "run: set HOOKD_RUN_FAKE_API_PORT to a free port" >&2
        exit 1
    fi
fi

# --- configuration, rewritten at every run
# Quotes a value as a libconfig string.
cfg_str()
{
    local v=${1//\\/\\\\}
    printf '"%s"' "${v//\"/\\\"}"
}

conf=$var/hookd.conf
{
    echo "# Written by scripts/run.sh at every \`make run\`; edits are lost."
    echo "listen = [ $(cfg_str "127.0.0.1:$port") ];"
    echo "tls = {"
    echo "    certificate = $(cfg_str "$tls/cert.pem");"
    echo "    key = $(cfg_str "$tls/key.pem");"
    echo "};"
    echo "http = {"
    echo "    threads = 16;"
    echo "    max_body = 1048576;"
    echo "    request_timeout = 10000;"
    echo "    body_timeout = 20000;"
    echo "    keep_alive_timeout = 5000;"
    echo "};"
    echo "database = {"
    if [ -n "$conninfo" ]; then
        echo "    conninfo = $(cfg_str "$conninfo");"
    fi
    echo "    connect_timeout = 5;"
    echo "    query_timeout = 10;"
    echo "    writers = 2;"
    echo "    max_batch = 512;"
    echo "    retry_after = 5;"
    echo "};"
    echo "log = { level = \"info\"; };"
    echo "endpoints = ("
    echo "    {"
    echo "        path = $(cfg_str "$endpoint");"
    echo "        scheme = \"contextgpt\";"
    echo "        secret_files = [ $(cfg_str "$secret_file") ];"
    echo "        require = \"both\";"
    echo "        signature_encoding = \"hex\";"
    echo "    }"
    echo ");"
    echo "dispatch = {"
    echo "    plugin_dir = $(cfg_str "$repo/build/handlers");"
    echo "    workers = 4;"
    echo "    poll_interval = 5000;"
    echo "};"
    # Leads and escalations become CRM contacts; an escalation opens a
    # handoff ticket whose notice (the ticket as JSON) is appended to a file.
    echo "routes = ("
    echo "    {"
    echo "        name = \"crm\";"
    echo "        events = [ \"NEW_LEAD\", \"CONVERSATION_ESCALATED\" ];"
    echo "        handler = \"crm\";"
    echo "    },"
    echo "    {"
    echo "        name = \"handoff\";"
    echo "        events = [ \"CONVERSATION_ESCALATED\" ];"
    echo "        handler = \"handoff\";"
    echo "        options = { notify_command = [ \"/usr/bin/tee\", \"-a\","
    echo "                    $(cfg_str "$var/handoff-notices.jsonl") ]; };"
    if [ "$fake_api" = 1 ]; then
        echo "    },"
        echo "    {"
        echo "        name = \"autoreply\";"
        echo "        events = [ \"NEW_MESSAGE\" ];"
        echo "        handler = \"autoreply\";"
        echo "        options = { rules = ("
        echo "            { keywords = [ \"human\", \"agent\", \"person\" ];"
        echo "              action = \"escalate\"; },"
        echo "            { keywords = [ \"address\", \"delivery\" ]; action = \"reply\";"
        echo "              text = \"You can change it on the order page until it ships.\"; }"
        echo "        ); };"
    fi
    echo "    }"
    echo ");"
    if [ "$fake_api" = 1 ]; then
        echo "api = {"
        echo "    base_url = \"https://127.0.0.1:$fake_api_port/api\";"
        echo "    key_file = $(cfg_str "$var/api-key");"
        echo "    cacert = $(cfg_str "$tls/cert.pem");"
        echo "};"
    fi
} >"$conf.tmp"
mv "$conf.tmp" "$conf"

# --- banner
query="select id, event_type, chatbot_id, thread_id, received_at"
query+=" from hookd.events order by id"
stops="hookd"
if [ "$started_pg" -eq 1 ]; then
    stops="hookd and the database"
fi
cat <<EOF

hookd is starting on https://127.0.0.1:$port$endpoint
  config:  var/hookd.conf
  secret:  $secret_file (give it to the sender; not printed here)
  TLS:     var/tls/cert.pem (self-signed)

Try, from another terminal in $repo:
  build/hookd send-test --config var/hookd.conf
  psql $psql_target -c "$query"
  build/hookd events --config var/hookd.conf      # each event with its jobs
  build/hookd jobs --config var/hookd.conf        # the queue by route and state
  psql $psql_target -c "select * from crm.contacts"
  cat var/handoff-notices.jsonl                  # the handoff notices
$([ "$fake_api" = 1 ] && echo "  cat var/fake-api.log   # what autoreply sent to the stand-in API")

Ctrl-C stops $stops.

EOF

rc=0
"$hookd" serve --config "$conf" || rc=$?
exit "$rc"
