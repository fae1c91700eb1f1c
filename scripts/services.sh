#!/usr/bin/env bash
# Private PostgreSQL, Redis and RabbitMQ on loopback for development, the demo and the tests.
#   scripts/services.sh install | start [postgres|redis|rabbitmq] | stop [same] | status | env
#   scripts/services.sh tls-certs DIR   (a private CA and a server certificate for 127.0.0.1)
# `install` also installs the load tools of christmas-bench (wrk, siege, redis-tools,
# python3-venv).
# PostgreSQL: 127.0.0.1:${CHRISTMAS_PG_PORT:-55432}, Redis: 127.0.0.1:${CHRISTMAS_REDIS_PORT:-56379},
# RabbitMQ (AMQP): 127.0.0.1:${CHRISTMAS_AMQP_PORT:-56672}, and AMQP over TLS (amqps://) on
# 127.0.0.1:${CHRISTMAS_AMQPS_PORT:-56671} with a certificate of a private CA made under .state/
# (`env` prints AMQPS_URL and AMQPS_CA, the CA's file), with its own Erlang distribution
# port (${CHRISTMAS_AMQP_DIST_PORT:-56673}) and epmd (${CHRISTMAS_EPMD_PORT:-56369}), so it does not
# meet a system node on 5672/25672/4369.
# Data lives under .state/ at the repository root (or under /var/tmp when the repository is
# somewhere the unprivileged `christmas` user cannot reach; .state/pgdata-location says where).
# As root, PostgreSQL runs as the system user `christmas`: initdb and postgres refuse root.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.state"
pg_port="${CHRISTMAS_PG_PORT:-55432}"
redis_port="${CHRISTMAS_REDIS_PORT:-56379}"
amqp_port="${CHRISTMAS_AMQP_PORT:-56672}"
amqps_port="${CHRISTMAS_AMQPS_PORT:-56671}"
amqp_dist_port="${CHRISTMAS_AMQP_DIST_PORT:-56673}"
epmd_port="${CHRISTMAS_EPMD_PORT:-56369}"
rabbit_bin=/usr/lib/rabbitmq/bin
svc_user=christmas

# shellcheck source=scripts/common.sh
. "$root/scripts/common.sh"

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
    [ -x "$rabbit_bin/rabbitmq-server" ] || need+=(rabbitmq-server)
    # The RabbitMQ node's TLS certificates are made with it.
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    if [ ${#need[@]} -gt 0 ]; then
        apt_install "${need[@]}"
        # Debian's packages start their own cluster/server on the default ports; ours are
        # separate, so leave those alone.
    fi
    if is_root && ! id "$svc_user" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$svc_user"
    fi
    stop_system_rabbitmq
}

# Debian's package starts a system node (5672, epmd on 4369) where an init system runs
# services; nothing here uses it, and it would hold memory and a well-known port, so it is
# stopped and kept from starting at boot.
stop_system_rabbitmq() {
    is_root || return 0
    [ -e /etc/init.d/rabbitmq-server ] || [ -e /lib/systemd/system/rabbitmq-server.service ] || return 0
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
    else
        if [ -x /etc/init.d/rabbitmq-server ] && /etc/init.d/rabbitmq-server status >/dev/null 2>&1; then
            say "stopping Debian's system RabbitMQ node"
            /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
        fi
        command -v update-rc.d >/dev/null 2>&1 && update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
    fi
    # The package's post-install step leaves an epmd on 4369 (all interfaces) behind; it
    # refuses to stop while a node is registered with it, so a live system node is safe.
    if id rabbitmq >/dev/null 2>&1 && command -v epmd >/dev/null 2>&1; then
        runuser -u rabbitmq -- epmd -kill >/dev/null 2>&1 || true
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

# Where the RabbitMQ node keeps its data and logs (under .state/ unless the service user
# cannot reach it, as for PostgreSQL).
rabbit_dir() {
    local dir="$state/rabbitmq"
    if is_root && ! runuser -u "$svc_user" -- test -x "$state" 2>/dev/null; then
        local hash
        hash="$(echo -n "$root" | sha1sum | cut -c1-10)"
        dir="/var/tmp/christmas-$hash/rabbitmq"
    fi
    echo "$dir"
}

# Runs a RabbitMQ tool against our private node: its own node name, ports, cookie (HOME)
# and files, never the system node's.
rabbit_env() {
    local dir; dir="$(rabbit_dir)"
    as_svc env HOME="$dir" \
        RABBITMQ_NODENAME="christmas-$amqp_port@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$amqp_port" \
        RABBITMQ_DIST_PORT="$amqp_dist_port" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        ERL_EPMD_PORT="$epmd_port" ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        "$@"
}

# Makes, once, a private CA (DIR/ca.pem; its key is thrown away once it signed) and a
# server certificate for 127.0.0.1 and localhost (DIR/server.pem, DIR/server.key), valid
# ten years. Clients trust the CA's file (CHRISTMAS_ORDERS_EVENTS_TLS_CA); nothing else does. The
# certificate is good for client authentication too: the nodes of a TLS Redis cluster
# present it to each other on the cluster bus (the TLS tests).
make_tls_certs() {
    local dir="$1"
    if [ -s "$dir/ca.pem" ] && [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ]; then
        return 0
    fi
    command -v openssl >/dev/null 2>&1 || die "openssl is needed for the TLS certificates (services.sh install)"
    mkdir -p "$dir"
    local tmp; tmp="$(mktemp -d)"
    # A name of its own, so a client trusting another such CA is told the issuer is
    # unknown rather than that a signature is bad.
    cat >"$tmp/ca.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = christmas development CA $(openssl rand -hex 6)
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
    cat >"$tmp/server.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
EXT
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    if ! { openssl req -x509 "${ec[@]}" -days 3650 -config "$tmp/ca.cnf" \
                -keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
           openssl req -new "${ec[@]}" -subj "/CN=localhost" \
                -keyout "$tmp/server.key" -out "$tmp/server.csr" &&
           openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
                -CAcreateserial -days 3650 -extfile "$tmp/server.ext" -out "$tmp/server.pem"
         } >"$tmp/openssl.log" 2>&1; then
        cat "$tmp/openssl.log" >&2
        rm -rf "$tmp"
        die "making the TLS certificates failed"
    fi
    # The CA last: its presence says the set is whole.
    mv "$tmp/server.key" "$tmp/server.pem" "$dir/"
    mv "$tmp/ca.pem" "$dir/ca.pem"
    rm -rf "$tmp"
}

rabbit_running() {
    [ -x "$rabbit_bin/rabbitmqctl" ] || return 1
    rabbit_env timeout 20 "$rabbit_bin/rabbitmq-diagnostics" -q check_port_listener "$amqp_port" \
        >/dev/null 2>&1 && return 0
    # A node another checkout started (its own cookie, so diagnostics cannot ask it) still
    # serves this port: take it, as PostgreSQL and Redis are taken.
    port_open "$amqp_port"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_rabbitmq() {
    if rabbit_running; then
        say "RabbitMQ already running on 127.0.0.1:$amqp_port"
        if ! port_open "$amqps_port"; then
            say "warning: that node has no TLS listener on 127.0.0.1:$amqps_port (an older services.sh started it); stop it from the checkout that started it, then start again"
        fi
        return
    fi
    local dir; dir="$(rabbit_dir)"
    mkdir -p "$dir/mnesia" "$dir/log"
    make_tls_certs "$dir/tls"
    # No plugins (no management listener on 15672); guest may log in over loopback only.
    echo "[]." >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"
    echo "[]." >"$dir/advanced.config"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$amqp_port
listeners.ssl.1 = 127.0.0.1:$amqps_port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users.guest = true
log.file.level = warning
CONF
    if [ ! -f "$dir/.erlang.cookie" ]; then
        head -c 32 /dev/urandom | sha1sum | cut -c1-32 >"$dir/.erlang.cookie"
    fi
    chmod 600 "$dir/.erlang.cookie"
    is_root && chown -R "$svc_user" "$dir"
    say "starting RabbitMQ on 127.0.0.1:$amqp_port"
    rabbit_env setsid "$rabbit_bin/rabbitmq-server" >"$dir/log/startup.log" 2>&1 </dev/null &
    # Bounded: a node that has not opened its AMQP port in 90 s is not coming.
    local deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ]; do
        rabbit_running && port_open "$amqps_port" && return
        sleep 1
    done
    tail -n 30 "$dir/log/startup.log" >&2 || true
    die "RabbitMQ did not start"
}

stop_rabbitmq() {
    [ -x "$rabbit_bin/rabbitmqctl" ] || return 0
    local dir; dir="$(rabbit_dir)"
    [ -d "$dir" ] || return 0
    if rabbit_env timeout 30 "$rabbit_bin/rabbitmqctl" -q status >/dev/null 2>&1; then
        say "stopping RabbitMQ"
        rabbit_env timeout 60 "$rabbit_bin/rabbitmqctl" -q stop >/dev/null 2>&1 || true
    fi
    # Our epmd (on its own port) goes with the node.
    if command -v epmd >/dev/null 2>&1; then
        ERL_EPMD_PORT="$epmd_port" epmd -kill >/dev/null 2>&1 || true
    fi
}

cmd_start() {
    cmd_install
    mkdir -p "$state"
    case "${1:-all}" in
        all) start_pg; start_redis; start_rabbitmq ;;
        postgres) start_pg ;;
        redis) start_redis ;;
        rabbitmq) start_rabbitmq ;;
        *) die "unknown service: $1" ;;
    esac
}

cmd_stop() {
    case "${1:-all}" in
        all) stop_pg_redis; stop_rabbitmq ;;
        rabbitmq) stop_rabbitmq ;;
        *) die "stop takes no service but rabbitmq (or none: all)" ;;
    esac
}

stop_pg_redis() {
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
    if rabbit_running; then
        local tls="no TLS listener on $amqps_port"
        port_open "$amqps_port" && tls="amqps on 127.0.0.1:$amqps_port"
        echo "rabbitmq: running on 127.0.0.1:$amqp_port ($tls)"
    else
        echo "rabbitmq: stopped"; rc=1
    fi
    return $rc
}

cmd_env() {
    echo "export DATABASE_URL=postgres://christmas@127.0.0.1:$pg_port/christmas"
    echo "export REDIS_URL=redis://127.0.0.1:$redis_port/"
    echo "export AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
    # The daemon takes the CA as CHRISTMAS_ORDERS_EVENTS_TLS_CA; not exported under that name here,
    # as it is refused beside an events URL that is not amqps://.
    echo "export AMQPS_URL=amqps://guest:guest@127.0.0.1:$amqps_port/%2f"
    echo "export AMQPS_CA=$(rabbit_dir)/tls/ca.pem"
}

case "${1:-}" in
    # `start` installs only the servers; `install` also the bench's load tools.
    install) cmd_install; install_bench_tools ;;
    start) cmd_start "${2:-all}" ;;
    stop) cmd_stop "${2:-all}" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    tls-certs) make_tls_certs "${2:?tls-certs DIR}" ;;
    *) echo "usage: $0 install|start [postgres|redis|rabbitmq]|stop [rabbitmq]|status|env|tls-certs DIR" >&2; exit 2 ;;
esac
