#!/usr/bin/env bash
# A Citus cluster on loopback for the citus schema variant: a coordinator and two workers,
# each its own PostgreSQL server on its own loopback address, so the engine and Citus
# meet them as three hosts.
#   scripts/citus.sh start | stop | status | env | installed | restart NODE (coordinator, worker1, worker2)
# Coordinator: 127.0.0.21:${CHRISTMAS_CITUS_PORT:-55441}; workers 127.0.0.22 and 127.0.0.23 on
# the same port. Database `christmas`, owner `christmas` (trust on loopback: a development
# cluster). `env` prints CHRISTMAS_CITUS_URL, which turns on the citus tests.
#
# Citus is not in Debian's packages and this project does not build it: install it into the
# server's library directory yourself (github.com/citusdata/citus, 13.x for PostgreSQL 15).
# `start` says so and exits 3 when `citus.so` is missing, and the tests then print skipped.
# Data lives under .state/citus (or /var/tmp when the service user cannot reach the
# repository). As root, the servers run as the system user `christmas`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.state"
port="${CHRISTMAS_CITUS_PORT:-55441}"
coordinator=127.0.0.21
workers=(127.0.0.22 127.0.0.23)
svc_user=christmas

# shellcheck source=scripts/common.sh
. "$root/scripts/common.sh"

# True when the PostgreSQL of pg_bindir can load Citus.
citus_installed() {
    local bin lib
    bin="$(pg_bindir)" || return 1
    lib="$("$bin/pg_config" --pkglibdir 2>/dev/null || true)"
    [ -n "$lib" ] && [ -f "$lib/citus.so" ]
}

base_dir() {
    local dir="$state/citus"
    if is_root && ! runuser -u "$svc_user" -- test -x "$state" 2>/dev/null; then
        local hash
        hash="$(echo -n "$root" | sha1sum | cut -c1-10)"
        dir="/var/tmp/christmas-$hash/citus"
    fi
    echo "$dir"
}

running() { "$(pg_bindir)/pg_isready" -h "$1" -p "$port" -q 2>/dev/null; }

psql_at() {
    local host="$1"
    shift
    "$(pg_bindir)/psql" -h "$host" -p "$port" -U christmas -v ON_ERROR_STOP=1 -Atq "$@"
}

# initdb + start one node; $1 its name, $2 its address.
start_node() {
    local name="$1" host="$2" bin data
    bin="$(pg_bindir)"
    data="$(base_dir)/$name"
    if running "$host"; then
        ensure_database "$host"
        return
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        say "initdb $data"
        mkdir -p "$data"
        is_root && chown -R "$svc_user" "$(dirname "$data")" "$data"
        chmod 700 "$data"
        as_svc "$bin/initdb" -D "$data" -U christmas --auth=trust --encoding=UTF8 --locale=C >/dev/null
        cat >>"$data/postgresql.conf" <<CONF
# christmas: a Citus node on loopback ($name)
shared_preload_libraries = 'citus'
listen_addresses = '$host'
port = $port
unix_socket_directories = '$data'
max_connections = 200
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_level = logical
max_prepared_transactions = 200
# Citus runs a maintenance daemon (two-phase commit recovery, deadlock detection) per
# database, and the rebalancer's jobs, as background workers: the default 8 run out with a
# few test databases, and then recovery and rebalancing silently wait.
max_worker_processes = 32
# Commit the prepared transactions of cut-off two-phase commits within 10 s, not 60 s: their
# rows are invisible until then (docs/operations.md, "Citus").
citus.recover_2pc_interval = '10s'
# The rebalancer's background jobs connect to this node through this name (localhost by
# default, where nothing listens here).
citus.local_hostname = '$host'
CONF
    fi
    say "starting the Citus $name on $host:$port"
    if ! as_svc "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null; then
        tail -n 30 "$data/server.log" >&2 || true
        die "the Citus $name did not start"
    fi
    ensure_database "$host"
}

# The database `christmas` on a node, with the extension.
ensure_database() {
    local host="$1"
    if ! psql_at "$host" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'christmas'" | grep -q 1; then
        psql_at "$host" -d postgres -c "CREATE DATABASE christmas"
    fi
    psql_at "$host" -d christmas -c "CREATE EXTENSION IF NOT EXISTS citus"
}

cmd_start() {
    citus_installed || {
        echo "citus: not installed in $(pg_bindir)/../lib (build it from source; see docs/operations.md)" >&2
        exit 3
    }
    start_node coordinator "$coordinator"
    local i=1
    for w in "${workers[@]}"; do
        start_node "worker$i" "$w"
        i=$((i + 1))
    done
    psql_at "$coordinator" -d christmas -c "SELECT citus_set_coordinator_host('$coordinator', $port)" >/dev/null
    for w in "${workers[@]}"; do
        if ! psql_at "$coordinator" -d christmas -c \
            "SELECT 1 FROM pg_dist_node WHERE nodename = '$w' AND nodeport = $port" | grep -q 1; then
            say "adding the worker $w:$port"
            psql_at "$coordinator" -d christmas -c "SELECT citus_add_node('$w', $port)" >/dev/null
        fi
    done
}

cmd_stop() {
    local bin data
    bin="$(pg_bindir)"
    for name in worker2 worker1 coordinator; do
        data="$(base_dir)/$name"
        if [ -f "$data/postmaster.pid" ]; then
            say "stopping the Citus $name"
            as_svc "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
        fi
    done
}

# Restarts one node (fast shutdown: its connections are cut, as a crash would cut them).
cmd_restart() {
    local name="${1:?restart coordinator|worker1|worker2}" data
    data="$(base_dir)/$name"
    [ -f "$data/PG_VERSION" ] || die "no Citus node $name under $(base_dir)"
    as_svc "$(pg_bindir)/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w -t 60 restart >/dev/null
}

cmd_status() {
    local rc=0
    for host in "$coordinator" "${workers[@]}"; do
        if running "$host"; then echo "$host:$port running"; else echo "$host:$port stopped"; rc=1; fi
    done
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    installed) citus_installed ;;
    restart) cmd_restart "${2:-}" ;;
    env)
        # Citus turns on TLS with a self-signed certificate the engine (rightly) does not
        # trust; on loopback the connections go without TLS.
        echo "export CHRISTMAS_CITUS_URL='postgres://christmas@$coordinator:$port/christmas?sslmode=disable'"
        # The tests restart a worker with this.
        echo "export CHRISTMAS_CITUS_RESTART_WORKER='bash $root/scripts/citus.sh restart worker1'"
        ;;
    *) echo "usage: $0 start|stop|status|installed|env|restart NODE" >&2; exit 2 ;;
esac
