#!/usr/bin/env bash
# Private PostgreSQL and Redis on loopback for development, the demo and the tests.
#   scripts/services.sh install | start | stop | status | env
# `install` also installs the load tools of christmas-bench (wrk, siege, redis-tools,
# python3-venv).
# PostgreSQL: 127.0.0.1:${CHRISTMAS_PG_PORT:-55432}, Redis: 127.0.0.1:${CHRISTMAS_REDIS_PORT:-56379}.
# Data lives under .state/ at the repository root (or under /var/tmp when the repository is
# somewhere the unprivileged `christmas` user cannot reach; .state/pgdata-location says where).
# As root, PostgreSQL runs as the system user `christmas`: initdb and postgres refuse root.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.state"
pg_port="${CHRISTMAS_PG_PORT:-55432}"
redis_port="${CHRISTMAS_REDIS_PORT:-56379}"
svc_user=christmas

say() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

pg_bindir() {
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Runs a command as the service user when root, else as ourselves.
as_svc() {
    # From /, so a working directory the service user cannot enter does not matter.
    if is_root; then (cd / && runuser -u "$svc_user" -- "$@"); else "$@"; fi
}

# Installs Debian packages (as root, or through sudo).
apt_install() {
    say "installing $* from Debian's packages"
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install $*"
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The load tools christmas-bench runs: wrk and siege (orders, scale), redis-benchmark
# (fanout), and a Python that can make the venv of the Python peers (ingest).
install_bench_tools() {
    local need=()
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    command -v siege >/dev/null 2>&1 || need+=(siege)
    command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        apt_install "${need[@]}"
    fi
}

cmd_install() {
    local need=()
    [ -n "$(pg_bindir || true)" ] || need+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    # The scale-out tests put PgBouncer and nginx in front of daemons.
    [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
    [ -x /usr/sbin/nginx ] || need+=(nginx-light)
    if [ ${#need[@]} -gt 0 ]; then
        apt_install "${need[@]}"
        # Debian's packages start their own cluster/server on the default ports; ours are
        # separate, so leave those alone.
    fi
    if is_root && ! id "$svc_user" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$svc_user"
    fi
}

# Where the PostgreSQL data directory lives.
pg_datadir() {
    if [ -f "$state/pgdata-location" ]; then
        cat "$state/pgdata-location"
        return
    fi
    local dir="$state/pgdata"
    if is_root && ! runuser -u "$svc_user" -- test -x "$state" 2>/dev/null; then
        # The service user cannot traverse the repository's path (e.g. under /root).
        local hash
        hash="$(echo -n "$root" | sha1sum | cut -c1-10)"
        dir="/var/tmp/christmas-$hash/pgdata"
    fi
    echo "$dir" >"$state/pgdata-location"
    echo "$dir"
}

pg_running() {
    local bin; bin="$(pg_bindir)"
    "$bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -q 2>/dev/null
}

redis_running() {
    redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG
}

start_pg() {
    local bin data
    bin="$(pg_bindir)"
    data="$(pg_datadir)"
    if pg_running; then
        say "PostgreSQL already running on 127.0.0.1:$pg_port"
        return
    fi
    mkdir -p "$(dirname "$data")"
    if [ ! -f "$data/PG_VERSION" ]; then
        say "initdb $data"
        mkdir -p "$data"
        is_root && chown -R "$svc_user" "$(dirname "$data")" "$data"
        chmod 700 "$data"
        as_svc "$bin/initdb" -D "$data" -U christmas --auth=trust --encoding=UTF8 --locale=C >/dev/null
        cat >>"$data/postgresql.conf" <<CONF
# christmas: a private development server on loopback
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$data'
max_connections = 200
shared_buffers = 512MB
synchronous_commit = on
fsync = on
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_level = replica
CONF
    fi
    say "starting PostgreSQL on 127.0.0.1:$pg_port"
    if ! as_svc "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null; then
        tail -n 30 "$data/server.log" >&2 || true
        die "PostgreSQL did not start"
    fi
    if ! "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U christmas -d postgres -Atqc \
        "SELECT 1 FROM pg_database WHERE datname = 'christmas'" | grep -q 1; then
        "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U christmas -d postgres -qc "CREATE DATABASE christmas"
    fi
}

start_redis() {
    if redis_running; then
        say "Redis already running on 127.0.0.1:$redis_port"
        return
    fi
    mkdir -p "$state/redis"
    say "starting Redis on 127.0.0.1:$redis_port"
    # A limit, and refusals rather than evictions at it: order events nobody reads yet stay
    # in the stream (and, once Redis refuses them, in PostgreSQL's outbox) instead of
    # growing Redis until the kernel kills it (docs/operations.md, "Redis").
    redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes \
        --dir "$state/redis" --pidfile "$state/redis/redis.pid" \
        --logfile "$state/redis/redis.log" --save '' --appendonly no \
        --maxmemory 8gb --maxmemory-policy noeviction >/dev/null
    for _ in $(seq 1 100); do
        redis_running && return
        sleep 0.1
    done
    tail -n 30 "$state/redis/redis.log" >&2 || true
    die "Redis did not start"
}

cmd_start() {
    cmd_install
    mkdir -p "$state"
    start_pg
    start_redis
}

cmd_stop() {
    local bin data
    bin="$(pg_bindir || true)"
    if [ -n "$bin" ] && [ -d "$state" ]; then
        data="$(pg_datadir)"
        if [ -f "$data/postmaster.pid" ]; then
            say "stopping PostgreSQL"
            as_svc "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
        fi
    fi
    if command -v redis-cli >/dev/null 2>&1 && redis_running; then
        say "stopping Redis"
        redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    fi
}

cmd_status() {
    local rc=0
    if [ -n "$(pg_bindir || true)" ] && pg_running; then
        echo "postgresql: running on 127.0.0.1:$pg_port"
    else
        echo "postgresql: stopped"; rc=1
    fi
    if command -v redis-cli >/dev/null 2>&1 && redis_running; then
        echo "redis: running on 127.0.0.1:$redis_port"
    else
        echo "redis: stopped"; rc=1
    fi
    return $rc
}

cmd_env() {
    echo "export DATABASE_URL=postgres://christmas@127.0.0.1:$pg_port/christmas"
    echo "export REDIS_URL=redis://127.0.0.1:$redis_port/"
}

case "${1:-}" in
    # `start` installs only the servers; `install` also the bench's load tools.
    install) cmd_install; install_bench_tools ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
