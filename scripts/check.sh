#!/usr/bin/env bash
# Runs hookd's test suites; this is what `make check` runs once everything
# is built. Starts a throwaway PostgreSQL cluster and TLS material in a temp
# dir, exports the HOOKD_TEST_* variables of notes/contract.md, then runs:
#   1. build/tests/unit
#   2. build/tests/integration against build/hookd
#   3. build/tests/integration against build/asan/hookd (ASan + UBSan)
# Every step runs (each bounded by CHECK_TIMEOUT seconds, default 900), a
# summary line per step follows, and the exit status is non-zero if any step
# failed. The cluster and the temp dir go away on exit, Ctrl-C included.
#
# usage: scripts/check.sh        (from anywhere; works on the repo it is in)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
pg_script=$repo/scripts/pg.sh
step_timeout=${CHECK_TIMEOUT:-900}

tmp=
pg_dir=
child=
tee_pid=

# shellcheck disable=SC2317  # called from the traps
cleanup()
{
    local rc=$? base

    trap - EXIT INT TERM
    stop_child
    if [ -n "$pg_dir" ]; then
        # A cluster that had to live in /var/tmp (see pg.sh) goes too.
        base=
        if [ -L "$pg_dir/data" ]; then
            base=$(dirname "$(readlink "$pg_dir/data")")
        fi
        "$pg_script" stop "$pg_dir" || true
        case $base in
            /var/tmp/hookd-pg-*) rm -rf "$base" ;;
        esac
    fi
    if [ -n "$tmp" ]; then
        rm -rf "$tmp"
    fi
    exit "$rc"
}

# Ends the running test step (timeout and everything in its process group).
# shellcheck disable=SC2317  # called from cleanup
stop_child()
{
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    if [ -n "$child" ]; then
        kill -TERM -- "-$child" 2>/dev/null || true
    fi
    child=
    if [ -n "$tee_pid" ]; then
        kill -TERM "$tee_pid" 2>/dev/null || true
        wait "$tee_pid" 2>/dev/null || true
        tee_pid=
    fi
}

# shellcheck disable=SC2317  # called from the traps
on_signal()
{
    echo "check: interrupted" >&2
    exit "$1"
}

trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# True if something listens on TCP port $1 (any address, IPv4 or IPv6).
port_busy()
{
    local hex
    hex=$(printf '%04X' "$1")
    # Fields: sl local_address rem_address st ...; st 0A is LISTEN.
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \
        | awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p \
            { found = 1 } END { exit !found }'
}

free_port()
{
    local i port
    for i in $(seq 1 100); do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 10000 ))
        if ! port_busy "$port"; then
            echo "$port"
            return 0
        fi
    done
    echo "check: no free port found in 20000-29999" >&2
    return 1
}

# Writes a self-signed certificate for 127.0.0.1, ::1 and localhost.
# usage: make_cert CERT KEY DAYS KEYALG-OPTIONS...
make_cert()
{
    local cert=$1 key=$2 days=$3
    shift 3
    (umask 077 && openssl req -x509 -nodes "$@" -keyout "$key" -out "$cert" \
        -days "$days" -subj "/CN=localhost" \
        -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
        -addext "extendedKeyUsage=serverAuth" 2>/dev/null)
    chmod 644 "$cert"
}

# Runs one test step, bounded in time, its output shown and kept.
# usage: run_step NAME COMMAND...
# Appends to step_names/step_results and adds to total_pass/total_fail.
step_names=()
step_results=()
total_pass=0
total_fail=0
run_step()
{
    local name=$1 log rc=0 synth tested passing failing crashing detail f
    shift
    log=$tmp/logs/$name.log

    echo "check: === $name: $* ===" >&2
    for f in "$1" ${HOOKD_BIN:+"$HOOKD_BIN"}; do
        if [ ! -x "$f" ]; then
            echo "check: $f not built" >&2
            step_names+=("$name")
            step_results+=("FAILED (${f#"$repo"/} missing)")
            total_fail=$(( total_fail + 1 ))
            return 0
        fi
    done

    # In the background so that Ctrl-C reaches our trap at once; timeout
    # puts itself and the tests in their own process group, which
    # stop_child can end as a whole.
    rm -f "$tmp/logs/fifo"
    mkfifo "$tmp/logs/fifo"
    tee "$log" <"$tmp/logs/fifo" &
    tee_pid=$!
    timeout -k 30 "$step_timeout" "$@" >"$tmp/logs/fifo" 2>&1 </dev/null &
    child=$!
    wait "$child" || rc=$?
    # A daemon a test left behind may still hold the output: end it, and
    # give tee a few seconds to finish.
    kill -TERM -- "-$child" 2>/dev/null || true
    child=
    for _ in $(seq 1 50); do
        kill -0 "$tee_pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -TERM "$tee_pid" 2>/dev/null || true
    wait "$tee_pid" || true
    tee_pid=

    synth=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a 'Synthesis: Tested:' \
        | tail -n 1 || true)
    tested=$(sed -n 's/.*Tested: \([0-9]*\).*/\1/p' <<<"$synth")
    passing=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synth")
    failing=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$synth")
    crashing=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$synth")
    total_pass=$(( total_pass + ${passing:-0} ))
    total_fail=$(( total_fail + ${failing:-0} ))

    step_names+=("$name")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        step_results+=("FAILED (timed out after ${step_timeout}s)")
    elif [ -z "$synth" ]; then
        step_results+=("FAILED (exit $rc, no Criterion summary)")
    elif [ "$rc" -ne 0 ] || [ "${failing:-0}" -ne 0 ]; then
        detail="exit $rc; tested $tested, passing $passing"
        detail+=", failing $failing, crashing $crashing"
        step_results+=("FAILED ($detail)")
    elif [ "${tested:-0}" -eq 0 ]; then
        step_results+=("FAILED (no test ran)")
    else
        step_results+=("ok (tested $tested, passing $passing)")
    fi
    # Count a failed step that reported no failing test as one failure.
    case ${step_results[-1]} in
        FAILED*)
            if [ "${failing:-0}" -eq 0 ]; then
                total_fail=$(( total_fail + 1 ))
            fi
            ;;
    esac
}

# --- environment
tmp=$(mktemp -d /tmp/hookd-check.XXXXXX)
chmod 755 "$tmp"
mkdir -p "$tmp/logs" "$tmp/scratch" "$tmp/tls"

port=$(free_port)
pg_dir=$tmp/pg
conninfo=$("$pg_script" start "$pg_dir" "$port")
pg_host=$(sed -n 's/^host=\([^ ]*\) .*/\1/p' <<<"$conninfo")
if [ -z "$pg_host" ]; then
    echo "check: unexpected conninfo from pg.sh: $conninfo" >&2
    exit 1
fi

tls=$tmp/tls
make_cert "$tls/cert.pem" "$tls/key.pem" 2 \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256
make_cert "$tls/rsa-cert.pem" "$tls/rsa-key.pem" 2 -newkey rsa:2048

export HOOKD_TEST_PG="host=$pg_host port=$port user=hookd dbname=postgres"
HOOKD_TEST_PGDATA=$(cd "$pg_dir/data" && pwd -P)
export HOOKD_TEST_PGDATA
export HOOKD_TEST_PGSCRIPT=$pg_script
export HOOKD_TEST_TLS_DIR=$tls
export HOOKD_TEST_SAMPLES=$repo/samples
export HOOKD_TEST_TMP=$tmp/scratch
# Variables of the shell that must not leak into the daemons under test.
unset HOOKD_DATABASE_URL PGHOST PGPORT PGUSER PGDATABASE PGSERVICE

echo "check: PostgreSQL on port $port (socket in $pg_host), temp dir $tmp" >&2

# --- steps
run_step unit build/tests/unit
HOOKD_BIN=$repo/build/hookd run_step integration build/tests/integration
HOOKD_BIN=$repo/build/asan/hookd \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_step integration-asan build/tests/integration

# --- summary
status=0
echo
echo "check: summary"
for i in "${!step_names[@]}"; do
    printf 'check:   %-16s %s\n' "${step_names[$i]}" "${step_results[$i]}"
    case ${step_results[$i]} in
        FAILED*) status=1 ;;
    esac
done
echo "check: $total_pass passed, $total_fail failed"
exit "$status"
