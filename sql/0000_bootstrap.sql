-- Bookkeeping the migrator creates before anything else (every variant). Idempotent.

-- One row per applied migration. The checksum is of the file as applied: editing an
-- applied migration is refused instead of silently diverging.
CREATE TABLE IF NOT EXISTS christmas_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    variant    text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The schema's settings, written by the migrator from its config and read by the SQL
-- functions (partition maintenance, retention, policies). One row.
CREATE TABLE IF NOT EXISTS christmas_settings (
    singleton        boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    variant          text        NOT NULL CHECK (variant IN ('postgres', 'timescaledb', 'citus')),
    chunk_interval   interval    NOT NULL CHECK (chunk_interval >= interval '1 minute'),
    space_partitions integer     NOT NULL CHECK (space_partitions BETWEEN 1 AND 64),
    partitions_ahead integer     NOT NULL CHECK (partitions_ahead BETWEEN 0 AND 366),
    compress_after   interval,   -- NULL: no compression policy (TimescaleDB only)
    retention        interval,   -- NULL: keep everything
    ledger_retention interval    NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
