#!/usr/bin/env bash
# The main job: local PostgreSQL and Redis, the schema, the daemon, the bundled CME sample
# replayed into it, then a synthetic market fed to it over TCP with live throughput.
# DEMO_SECONDS=N stops after N seconds (default: run until Ctrl-C); DEMO_RATE and
# DEMO_SYMBOLS size the synthetic market.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"
mkdir -p .state

echo "==> building christmas-ingest (release)"
cargo build --release -p christmas-ingest
bin=./target/release/christmas-ingest

echo "==> building the web page (web/dist)"
bash scripts/web.sh install-page
bash scripts/web.sh build

echo "==> migrating"
"$bin" migrate

http_addr="${CHRISTMAS_HTTP_ADDR:-127.0.0.1:8080}"
tcp_addr="${CHRISTMAS_TCP_ADDR:-127.0.0.1:9090}"
# The spool makes ack=durable available and keeps ticks while PostgreSQL is away.
export CHRISTMAS_SPOOL_DIR="${CHRISTMAS_SPOOL_DIR:-$root/.state/spool}"
echo "==> starting the daemon (HTTP $http_addr, TCP $tcp_addr, spool $CHRISTMAS_SPOOL_DIR; log in .state/daemon.log)"
"$bin" serve --http-addr "$http_addr" --tcp-addr "$tcp_addr" > .state/daemon.log 2>&1 &
daemon=$!
stop_daemon() {
    if kill -0 "$daemon" 2>/dev/null; then
        echo "==> stopping the daemon (SIGTERM: drain and flush)"
        kill -TERM "$daemon"
        wait "$daemon" || true
        tail -n 1 .state/daemon.log
    fi
}
trap stop_daemon EXIT

ready=""
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${http_addr%:*}/${http_addr##*:}") 2>/dev/null; then
        ready=yes
        break
    fi
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "error: the daemon did not start; .state/daemon.log says:" >&2
    tail -n 20 .state/daemon.log >&2
    exit 1
fi

echo "==> replaying the bundled CME sample (timestamps moved to now)"
"$bin" replay tests/data/glbx-futures-mbp-1.dbn.zst --rebase-to-now

echo "==> the page: http://$http_addr/?symbol=ESU4   (no API keys here: leave the key empty, press Enter)"
echo "==> feeding a synthetic market over TCP (Ctrl-C to stop)"
echo "    try: curl -s 'http://$http_addr/api/market-data?symbol=ESU4'"
echo "         curl -s 'http://$http_addr/api/market-data/SYM0000/bars?interval=1m'"
echo "         curl -s http://$http_addr/metrics | grep -E 'rows_committed|spool_disk'"
echo "         curl -s -XPOST 'http://$http_addr/api/ticks?ack=durable' -d '{\"kind\":\"trade\",\"symbol\":\"ESZ6\",\"time_ns\":$(date +%s)000000000,\"price\":6000.25,\"volume\":1}'"
"$bin" feed --tcp "$tcp_addr" --seconds "${DEMO_SECONDS:-0}" \
    --symbols "${DEMO_SYMBOLS:-500}" --rate "${DEMO_RATE:-200000}" || true
