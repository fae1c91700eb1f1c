#!/usr/bin/env bash
# A Citus cluster for the citus schema variant: a coordinator and two workers, each its own
# PostgreSQL server on its own address, so the engine and Citus meet them as three hosts.
#   scripts/citus.sh start | stop | status | env | installed | restart NODE | cut NODE | heal NODE
# (NODE: coordinator, worker1, worker2; `cut` takes a node's link down, as a pulled cable
# would, and `heal` brings it back: namespaces only)
# Where the machine allows (root, `ip netns`), each node runs in its own network namespace
# (christmas-citus-NODE), joined to the others and to this host by a bridge (christmas-cb,
# 10.251.0.1/24): coordinator 10.251.0.21, workers .22 and .23. Elsewhere, or with
# CHRISTMAS_CITUS_NETNS=off, they listen on loopback: 127.0.0.21, .22 and .23. Port
# ${CHRISTMAS_CITUS_PORT:-55441} on each. Database `christmas`, owner `christmas` (trust on
# those addresses: a development cluster). `env` prints CHRISTMAS_CITUS_URL, which turns on
# the citus tests. `stop` removes the namespaces and the bridge. Which of the two a cluster
# uses is kept with its data (.state/citus/mode): remove the directory to change it.
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
svc_user=christmas
bridge=christmas-cb
subnet=10.251.0

# shellcheck source=scripts/common.sh
. "$root/scripts/common.sh"

# The node names, in start order.
nodes=(coordinator worker1 worker2)

# "netns" or "loopback": what the cluster under base_dir was made with, else what this
# machine allows.
mode() {
    local recorded
    recorded="$(base_dir)/mode"
    if [ -f "$recorded" ]; then
        cat "$recorded"
    elif [ -f "$(base_dir)/coordinator/PG_VERSION" ]; then
        # A cluster made before namespaces were tried listens on loopback.
        echo loopback
    elif [ "${CHRISTMAS_CITUS_NETNS:-auto}" != off ] && is_root && command -v ip >/dev/null 2>&1 &&
        ip netns add christmas-citus-probe 2>/dev/null; then
        ip netns del christmas-citus-probe
        echo netns
    else
        echo loopback
    fi
}

# A node's address: $1 its index in nodes (0 the coordinator).
address() {
    if [ "$(mode)" = netns ]; then echo "$subnet.$((21 + $1))"; else echo "127.0.0.$((21 + $1))"; fi
}

index_of() {
    local i
    for i in "${!nodes[@]}"; do
        [ "${nodes[$i]}" = "$1" ] && { echo "$i"; return; }
    done
    die "no Citus node $1 (coordinator, worker1, worker2)"
}

# Runs a command as the service user inside node $1's namespace (in netns mode).
in_node() {
    local name="$1"
    shift
    if [ "$(mode)" = netns ]; then
        (cd / && ip netns exec "christmas-citus-$name" runuser -u "$svc_user" -- "$@")
    else
        as_svc "$@"
    fi
}

# The bridge and node $1's namespace, with its address, unless they are there.
netns_up() {
    local name="$1" ns="christmas-citus-$1" host="$2" veth
    veth="chc-$name"
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        ip link add "$bridge" type bridge
        ip addr add "$subnet.1/24" dev "$bridge"
        ip link set "$bridge" up
    fi
    ip netns list | grep -qw "$ns" || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$bridge" up
        ip -n "$ns" addr add "$host/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "$subnet.1"
    fi
}

netns_down() {
    local name
    for name in "${nodes[@]}"; do
        ip link del "chc-$name" 2>/dev/null || true
        ip netns del "christmas-citus-$name" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
}

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
    PGOPTIONS='-c client_min_messages=warning' \
        "$(pg_bindir)/psql" -h "$host" -p "$port" -U christmas -v ON_ERROR_STOP=1 -Atq "$@"
}

# initdb + start one node; $1 its name, $2 its address.
start_node() {
    local name="$1" host="$2" bin data
    bin="$(pg_bindir)"
    data="$(base_dir)/$name"
    [ "$(mode)" = netns ] && netns_up "$name" "$host"
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
        echo "host all all $subnet.0/24 trust" >>"$data/pg_hba.conf"
        cat >>"$data/postgresql.conf" <<CONF
# christmas: a Citus node ($name)
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
    if ! in_node "$name" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null; then
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
    local mode i coordinator workers=()
    mode="$(mode)"
    mkdir -p "$(base_dir)"
    echo "$mode" >"$(base_dir)/mode"
    for i in "${!nodes[@]}"; do
        start_node "${nodes[$i]}" "$(address "$i")"
    done
    coordinator="$(address 0)"
    workers=("$(address 1)" "$(address 2)")
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
    local bin data mode
    bin="$(pg_bindir)"
    mode="$(mode)"
    for name in worker2 worker1 coordinator; do
        data="$(base_dir)/$name"
        if [ -f "$data/postmaster.pid" ]; then
            say "stopping the Citus $name"
            in_node "$name" "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
        fi
    done
    if [ "$mode" = netns ]; then netns_down; fi
}

# Restarts one node (fast shutdown: its connections are cut, as a crash would cut them).
cmd_restart() {
    local name="${1:?restart coordinator|worker1|worker2}" data
    data="$(base_dir)/$name"
    [ -f "$data/PG_VERSION" ] || die "no Citus node $name under $(base_dir)"
    index_of "$name" >/dev/null
    in_node "$name" "$(pg_bindir)/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w -t 60 restart >/dev/null
}

# Takes node $1's link to the bridge down ($2 = down) or up.
cmd_link() {
    local name="${1:?cut|heal coordinator|worker1|worker2}"
    index_of "$name" >/dev/null
    [ "$(mode)" = netns ] || die "cut and heal need the nodes in network namespaces (root, ip netns)"
    ip link set "chc-$name" "$2"
}

cmd_status() {
    local rc=0 i host
    for i in "${!nodes[@]}"; do
        host="$(address "$i")"
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
    cut) cmd_link "${2:-}" down ;;
    heal) cmd_link "${2:-}" up ;;
    env)
        # Citus turns on TLS with a self-signed certificate the engine (rightly) does not
        # trust; on this host the connections go without TLS.
        echo "export CHRISTMAS_CITUS_URL='postgres://christmas@$(address 0):$port/christmas?sslmode=disable'"
        # The tests restart a worker with this.
        echo "export CHRISTMAS_CITUS_RESTART_WORKER='bash $root/scripts/citus.sh restart worker1'"
        # And cut a worker's link and heal it with these (only with namespaces).
        if [ "$(mode)" = netns ]; then
            echo "export CHRISTMAS_CITUS_CUT_WORKER='bash $root/scripts/citus.sh cut worker1'"
            echo "export CHRISTMAS_CITUS_HEAL_WORKER='bash $root/scripts/citus.sh heal worker1'"
        fi
        ;;
    *) echo "usage: $0 start|stop|status|installed|env|restart NODE|cut NODE|heal NODE" >&2; exit 2 ;;
esac
