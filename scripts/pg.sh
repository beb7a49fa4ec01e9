#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for hookd's tests and `make run`; it never
# touches the system's clusters (Debian's 15/main on port 5432 included).
#
# usage: scripts/pg.sh start DIR PORT   init (first time) and start; prints
#                                       the conninfo line on stdout, e.g.
#                                       host=DIR/run port=PORT user=hookd dbname=hookd
#        scripts/pg.sh stop DIR         fast shutdown; fine if not running
#        scripts/pg.sh status DIR       prints running/stopped; exit 0 / 3
#
# Layout: DIR/data (PGDATA), DIR/run (unix socket), DIR/log/postgresql.log.
# Superuser "hookd", trust authentication, listening on 127.0.0.1:PORT and on
# the socket only. Database "hookd" is created if missing.
#
# As root, the server runs as the "postgres" user and DIR is given to it. If
# postgres cannot reach DIR (say the checkout is under /root, mode 700) or
# the socket path would be too long, the cluster lives in
# /var/tmp/hookd-pg-<hash of DIR> and DIR/data, DIR/run and DIR/log are
# symlinks to it; the conninfo then names the real socket directory.
# Not as root, everything runs as the current user.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

usage()
{
    echo "usage: $0 start DIR PORT | stop DIR | status DIR" >&2
    exit 2
}

die()
{
    echo "pg.sh: $*" >&2
    exit 1
}

# Runs a command as the cluster's owner, from / so that a working directory
# the postgres user cannot read does not upset initdb or pg_ctl.
as_owner()
{
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Prints the uid that owns the cluster's files.
owner_uid()
{
    if [ "$(id -u)" -eq 0 ]; then
        id -u postgres
    else
        id -u
    fi
}

# Quotes a value for postgresql.conf.
conf_quote()
{
    printf "'%s'" "${1//\'/\'\'}"
}

# Sets BASE (where data/, run/ and log/ really are) for the cluster of DIR,
# creating directories (and the fallback symlinks) as needed.
resolve_base()
{
    local dir=$1 owner_ok=1 hash sock_len buid

    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no postgres user (run scripts/deps.sh)"
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -x "$dir" -a -w "$dir"; then
            owner_ok=0
        fi
    fi

    # Unix socket paths are limited to 107 bytes: "$dir/run/.s.PGSQL.NNNNN".
    sock_len=$(( ${#dir} + 20 ))

    if [ -L "$dir/data" ]; then
        # Set up by an earlier run: keep using the same place.
        BASE=$(dirname "$(readlink "$dir/data")")
        echo "pg.sh: the cluster of $dir lives in $BASE" >&2
    elif [ "$owner_ok" -eq 1 ] && [ "$sock_len" -le 100 ]; then
        BASE=$dir
    else
        hash=$(printf '%s' "$dir" | sha256sum | cut -c1-16)
        BASE=/var/tmp/hookd-pg-$hash
        echo "pg.sh: $dir is not usable by the postgres user (or too long" \
            "for a socket path); the cluster lives in $BASE," \
            "with symlinks in $dir" >&2
    fi

    if [ "$BASE" != "$dir" ]; then
        if [ ! -d "$BASE" ]; then
            mkdir -m 700 "$BASE"
        fi
        # /var/tmp is shared: refuse a place someone else prepared.
        if [ -L "$BASE" ] || [ ! -d "$BASE" ]; then
            die "$BASE is not a directory; remove it"
        fi
        buid=$(stat -c %u "$BASE")
        if [ "$buid" != "$(owner_uid)" ] && [ "$buid" != "$(id -u)" ]; then
            die "$BASE belongs to uid $buid, not to us; remove it"
        fi
        if [ "$(id -u)" -eq 0 ]; then
            chown postgres: "$BASE"
        fi
        local sub
        for sub in data run log; do
            if [ ! -L "$dir/$sub" ]; then
                if [ -e "$dir/$sub" ]; then
                    rmdir "$dir/$sub" 2>/dev/null \
                        || die "$dir/$sub exists and is not empty; remove it"
                fi
                ln -s "$BASE/$sub" "$dir/$sub"
            fi
        done
    fi

    mkdir -p "$BASE/run" "$BASE/log"
    chmod 755 "$BASE/run"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$BASE/run" "$BASE/log"
    fi
}

# Creates the cluster in $BASE/data unless it exists.
init_cluster()
{
    local data=$BASE/data locale=C

    if [ -f "$data/PG_VERSION" ]; then
        return 0
    fi
    if [ -e "$data" ]; then
        rmdir "$data" 2>/dev/null \
            || die "$data exists, is not a cluster and is not empty; remove it"
    fi
    if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
        locale=C.UTF-8
    fi

    echo "pg.sh: creating a cluster in $data" >&2
    if ! as_owner "$PGBIN/initdb" -D "$data" --auth=trust -U hookd -E UTF8 \
            --locale="$locale" >"$BASE/log/initdb.log" 2>&1; then
        cat "$BASE/log/initdb.log" >&2
        die "initdb failed"
    fi

    # Fixed settings; port, socket and address are in hookd-run.conf, which
    # is rewritten at every start.
    as_owner tee -a "$data/postgresql.conf" >/dev/null <<'EOF'

# --- added by hookd scripts/pg.sh ---
include_if_exists = 'hookd-run.conf'
max_connections = 200
shared_buffers = 32MB
fsync = on
synchronous_commit = on
max_wal_size = 256MB
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# Writes $BASE/data/hookd-run.conf for PORT.
write_run_conf()
{
    local port=$1

    as_owner tee "$BASE/data/hookd-run.conf" >/dev/null <<EOF
# Written by hookd scripts/pg.sh at each start.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = $(conf_quote "$BASE/run")
EOF
}

# Prints the port of the running server of $1 (a data dir), or nothing.
running_port()
{
    local data=$1

    if as_owner "$PGBIN/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        sed -n 4p "$data/postmaster.pid"
    fi
}

cmd_start()
{
    local dir port cur sock found

    [ $# -eq 2 ] || usage
    port=$2
    case $port in
        ''|*[!0-9]*) die "bad port: $port" ;;
    esac
    [ -x "$PGBIN/pg_ctl" ] || die "$PGBIN/pg_ctl not found (run scripts/deps.sh)"
    mkdir -p "$1"
    dir=$(cd "$1" && pwd -P)

    resolve_base "$dir"
    init_cluster

    cur=$(running_port "$BASE/data")
    if [ -n "$cur" ] && [ "$cur" != "$port" ]; then
        echo "pg.sh: running on port $cur; restarting on $port" >&2
        as_owner "$PGBIN/pg_ctl" stop -D "$BASE/data" -m fast -w -s >&2
        cur=
    fi
    if [ -z "$cur" ]; then
        write_run_conf "$port"
        if ! as_owner "$PGBIN/pg_ctl" start -D "$BASE/data" -w -t 60 -s \
                -l "$BASE/log/postgresql.log" >&2; then
            tail -n 20 "$BASE/log/postgresql.log" >&2 || true
            die "could not start the cluster in $BASE/data on port $port"
        fi
    fi

    sock=$BASE/run
    found=$(as_owner "$PGBIN/psql" -X -q -h "$sock" -p "$port" -U hookd \
        -d postgres -tAc "select 1 from pg_database where datname = 'hookd'")
    if [ "$found" != 1 ]; then
        as_owner "$PGBIN/createdb" -h "$sock" -p "$port" -U hookd hookd >&2
    fi

    echo "host=$sock port=$port user=hookd dbname=hookd"
}

# Prints the data directory of DIR's cluster, or nothing if there is none.
data_of()
{
    local dir=$1

    if [ -f "$dir/data/PG_VERSION" ]; then
        (cd "$dir/data" && pwd -P)
    fi
}

cmd_stop()
{
    local data

    [ $# -eq 1 ] || usage
    data=$(data_of "$1")
    if [ -z "$data" ] || [ -z "$(running_port "$data")" ]; then
        echo "pg.sh: no cluster running in $1" >&2
        return 0
    fi
    as_owner "$PGBIN/pg_ctl" stop -D "$data" -m fast -w -t 60 -s >&2
    echo "pg.sh: stopped the cluster in $data" >&2
}

cmd_status()
{
    local data port

    [ $# -eq 1 ] || usage
    data=$(data_of "$1")
    if [ -z "$data" ]; then
        echo "no cluster in $1"
        return 3
    fi
    port=$(running_port "$data")
    if [ -z "$port" ]; then
        echo "stopped ($data)"
        return 3
    fi
    echo "running on port $port ($data)"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    *) usage ;;
esac
