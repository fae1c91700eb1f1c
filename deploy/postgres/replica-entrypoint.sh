#!/bin/sh
# Hot standby of the `postgres` service: clone it on first start, then stream from it.
# Runs as the postgres user; the arguments are the server's command line. The primary
# keeps WAL for slot replica1 up to max_slot_wal_keep_size, so a replica that was down a
# while catches up by itself.
set -eu
: "${PGDATA:?}" "${PRIMARY_HOST:?}" "${REPLICATION_PASSWORD:?}"
PRIMARY_PORT=${PRIMARY_PORT:-5432}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do sleep 1; done
    # Cloned beside PGDATA and renamed when complete, so an interrupted clone is redone.
    # -R writes standby.signal and primary_conninfo; -S follows the slot; -c fast does not
    # wait for the next scheduled checkpoint.
    rm -rf "$PGDATA.partial"
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" \
        -U replicator -D "$PGDATA.partial" -X stream -R -S replica1 -c fast
    rmdir "$PGDATA" 2>/dev/null || true
    mv "$PGDATA.partial" "$PGDATA"
fi
exec "$@"
