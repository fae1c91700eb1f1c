#!/usr/bin/env bash
# Schemathesis against a live daemon: the OpenAPI document the daemon serves
# (/api/openapi.json, generated from the handlers) is the contract, and every check
# (`--checks all`: status codes, content types, headers, response schemas, schema-valid
# requests accepted, 405 with Allow for other methods, auth not ignored, ...) must pass.
#
# The daemon runs on loopback on free ports, against a fresh database on the shared
# PostgreSQL (`christmas_schemathesis`, dropped and made anew) and Redis database 11, with
# a spool, and an API key (all scopes, reads included) that schemathesis sends; the ignored_auth check
# sends none and a wrong one. `GET /api/stream` is left out: an event stream does not end,
# so a request to it cannot be judged by its response.
#
# scripts/schemathesis_hooks.py drops exactly the failures that are rules OpenAPI cannot
# state (two headers or parameters that exclude each other; DELETE that cancels, leaving
# the order readable), and nothing else.
#
# Bounded: a few examples per operation, `--max-time`, and `timeout` around the whole run.
# Schemathesis is pinned and installed from PyPI into .state/schemathesis-venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

SCHEMATHESIS_VERSION=4.32.5
venv="$root/.state/schemathesis-venv"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
max_time="${SCHEMATHESIS_MAX_TIME:-180}"

if [ "$("$venv/bin/st" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into .state/schemathesis-venv"
    mkdir -p "$root/.state"
    if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv --clear "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

bash scripts/services.sh start >/dev/null
eval "$(bash scripts/services.sh env)"
cargo build -q -p christmas-ingest
bin="$root/target/debug/christmas-ingest"

db=christmas_schemathesis
base="${DATABASE_URL%/*}"
psql_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
"$psql_bin/psql" "$base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export DATABASE_URL="$base/$db"
export REDIS_URL="${REDIS_URL%/*}/11"
"$bin" migrate >/dev/null

# Free loopback ports for HTTP, TCP and operations.
read -r http_port tcp_port ops_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
key="schemathesis-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export CHRISTMAS_API_KEYS="schemathesis:$(printf '%s' "$key" | sha256sum | cut -d' ' -f1):ingest+orders+read"
export CHRISTMAS_AUTH_READS=true
# A spool, so that ack=durable is served (without one it is a 400 the document cannot know).
spool="$(mktemp -d)"
export CHRISTMAS_SPOOL_DIR="$spool"
log="$root/.state/schemathesis-daemon.log"
"$bin" serve --http-addr "127.0.0.1:$http_port" --tcp-addr "127.0.0.1:$tcp_port" \
    --ops-addr "127.0.0.1:$ops_port" >"$log" 2>&1 &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; rm -rf "$spool"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null && break
    kill -0 "$daemon" 2>/dev/null || { tail -n 20 "$log" >&2; exit 1; }
    sleep 0.1
done

echo "==> schemathesis $SCHEMATHESIS_VERSION against http://127.0.0.1:$http_port (at most ${max_time}s)"
start=$(date +%s)
status=0
# From .state: schemathesis keeps its example database in the working directory.
cd "$root/.state"
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$root/scripts" \
    timeout $((max_time + 120)) "$venv/bin/st" run "http://127.0.0.1:$http_port/api/openapi.json" \
    --checks all --mode positive --max-examples "$max_examples" --max-time "$max_time" \
    --exclude-path /api/stream --request-timeout 10 --seed 26 --no-color \
    -H "Authorization: Bearer $key" || status=$?
echo "schemathesis: exit $status after $(($(date +%s) - start)) s"
if [ "$status" -ne 0 ]; then
    echo "daemon log (last lines):" >&2
    tail -n 20 "$log" >&2
fi
exit "$status"
