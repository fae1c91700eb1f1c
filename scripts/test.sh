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
export CHRISTMAS_TEST_AMQP_URL="$AMQP_URL"
export CHRISTMAS_TEST_AMQPS_URL="$AMQPS_URL"
export CHRISTMAS_TEST_AMQPS_CA="$AMQPS_CA"

# The page the daemon serves and tests/it/browser.rs drives (that test prints
# "skipped: <reason>" without web/node_modules, chromium or a build).
if [ -d web/node_modules ]; then bash scripts/web.sh build; fi

# The daemon binary the process-level tests spawn (kill -9, memory), built before them.
cargo build -q -p christmas-ingest

echo "==> cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
# The Citus cluster of scripts/citus.sh (a coordinator and two workers, in network
# namespaces as root), when
# Citus is installed in this PostgreSQL and no CHRISTMAS_CITUS_URL names another.
if [ -z "${CHRISTMAS_CITUS_URL:-}" ] && bash scripts/citus.sh installed; then
    bash scripts/citus.sh start
    eval "$(bash scripts/citus.sh env)"
fi

# The TimescaleDB and Citus tests (tests/it/schema/timescaledb.rs, citus*.rs) are
# #[ignore]d, so they count as skipped where they cannot run; with CHRISTMAS_TIMESCALEDB_URL
# naming a server that has TimescaleDB preloaded, or CHRISTMAS_CITUS_URL a Citus
# coordinator, they run too (the other's are then left out, and said so).
extra=()
if [ -n "${CHRISTMAS_TIMESCALEDB_URL:-}" ] || [ -n "${CHRISTMAS_CITUS_URL:-}" ]; then
    case " $* " in
        *" -- "*) extra=(--include-ignored) ;;
        *) extra=(-- --include-ignored) ;;
    esac
    if [ -z "${CHRISTMAS_TIMESCALEDB_URL:-}" ]; then
        echo "skipped: the TimescaleDB tests (CHRISTMAS_TIMESCALEDB_URL is not set)"
        extra+=(--skip schema::timescaledb::)
    fi
    if [ -z "${CHRISTMAS_CITUS_URL:-}" ]; then
        echo "skipped: the Citus tests (CHRISTMAS_CITUS_URL is not set and Citus is not installed)"
        extra+=(--skip schema::citus)
    fi
fi
cargo test --workspace "$@" "${extra[@]}" 2>&1 | tee "$log" || status=$?
# cargo prints one "test result" line per test binary, the last often a doc-test binary
# with 0 tests; close with the totals over all of them.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
