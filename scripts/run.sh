#!/usr/bin/env bash
# The main job: local PostgreSQL and Redis, the schema, and the daemon fed a demo market.
# DEMO_SECONDS=N stops after N seconds (default: run until Ctrl-C).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"

echo "==> building christmas-ingest (release)"
cargo build --release -p christmas-ingest

echo "==> migrating"
./target/release/christmas-ingest migrate

echo "==> running the demo market (Ctrl-C to stop)"
exec ./target/release/christmas-ingest demo --seconds "${DEMO_SECONDS:-0}" \
    --symbols "${DEMO_SYMBOLS:-500}" --rate "${DEMO_RATE:-200000}"
