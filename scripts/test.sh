#!/usr/bin/env bash
# The test command: start the shared services, then run every test in the workspace.
# Extra arguments go to `cargo test` (e.g. `bash scripts/test.sh -- core_faults`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/services.sh start
eval "$(bash scripts/services.sh env)"
export CHRISTMAS_TEST_DATABASE_URL="$DATABASE_URL"
export CHRISTMAS_TEST_REDIS_URL="$REDIS_URL"

echo "==> cargo test --workspace"
cargo test --workspace "$@"
