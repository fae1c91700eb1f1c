-- Version 2, TimescaleDB: trades and quotes as hypertables.
--
-- Partitioned on time (christmas_settings.chunk_interval, 1 day by default) and on symbol
-- (space_partitions, 4), compressed ordered by time and segmented by symbol. Compression
-- and retention policies are (re)applied from christmas_settings by
-- christmas_apply_policies(), which the migrator calls on every run. Plain tables of a
-- database made before versioned migrations become hypertables with their rows.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS market_data (
    time         timestamptz      NOT NULL,
    symbol       text             NOT NULL,
    price        double precision NOT NULL,
    volume       double precision NOT NULL,
    side         char(1)          NOT NULL DEFAULT 'N',  -- B(uy) / S(ell) / N(one): aggressor
    exchange_seq bigint           NOT NULL DEFAULT 0     -- the venue's sequence number
);
SELECT create_hypertable('market_data', 'time',
                         partitioning_column => 'symbol',
                         number_partitions   => s.space_partitions,
                         chunk_time_interval => s.chunk_interval,
                         create_default_indexes => false,
                         migrate_data => true)
  FROM christmas_settings s;
CREATE INDEX IF NOT EXISTS market_data_symbol_time_idx ON market_data (symbol, time DESC);
CREATE INDEX IF NOT EXISTS market_data_time_idx ON market_data (time DESC);
ALTER TABLE market_data SET (timescaledb.compress,
                             timescaledb.compress_orderby = 'time DESC, exchange_seq DESC',
                             timescaledb.compress_segmentby = 'symbol');

CREATE TABLE IF NOT EXISTS quotes (
    time     timestamptz      NOT NULL,
    symbol   text             NOT NULL,
    bid      double precision NOT NULL,
    ask      double precision NOT NULL,
    bid_size double precision NOT NULL,
    ask_size double precision NOT NULL
);
SELECT create_hypertable('quotes', 'time',
                         partitioning_column => 'symbol',
                         number_partitions   => s.space_partitions,
                         chunk_time_interval => s.chunk_interval,
                         create_default_indexes => false,
                         migrate_data => true)
  FROM christmas_settings s;
CREATE INDEX IF NOT EXISTS quotes_symbol_time_idx ON quotes (symbol, time DESC);
CREATE INDEX IF NOT EXISTS quotes_time_idx ON quotes (time DESC);
ALTER TABLE quotes SET (timescaledb.compress,
                        timescaledb.compress_orderby = 'time DESC',
                        timescaledb.compress_segmentby = 'symbol');

-- Hypertables create chunks on demand and TimescaleDB's own jobs enforce retention, so the
-- engine's partition maintenance has nothing to do: these keep the same interface as the
-- plain variant's functions and report nothing to do.
CREATE FUNCTION christmas_partitions_needed(target text, at timestamptz DEFAULT now())
RETURNS SETOF timestamptz LANGUAGE sql STABLE AS $$ SELECT NULL::timestamptz WHERE false $$;

CREATE FUNCTION christmas_create_partition(target text, lower_bound timestamptz)
RETURNS bigint LANGUAGE sql AS $$ SELECT -1::bigint $$;

CREATE FUNCTION christmas_apply_retention(target text, at timestamptz DEFAULT now(),
                                          OUT dropped integer, OUT expired bigint)
LANGUAGE sql AS $$ SELECT 0, 0::bigint $$;

CREATE FUNCTION christmas_default_rows(target text) RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT 0::bigint $$;

-- A TimescaleDB job (user-defined action) running christmas_prune_ledger().
CREATE PROCEDURE christmas_prune_ledger_job(job_id integer, config jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM christmas_prune_ledger();
END
$$;

-- Applies christmas_settings to the hypertables' policies. Idempotent; the migrator calls it
-- on every run, so changing a setting and migrating again takes effect.
CREATE FUNCTION christmas_apply_policies() RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
DECLARE
    s christmas_settings;
    t text;
BEGIN
    SELECT * INTO STRICT s FROM christmas_settings;
    FOREACH t IN ARRAY ARRAY['market_data', 'quotes'] LOOP
        PERFORM set_chunk_time_interval(t::regclass, s.chunk_interval);
        PERFORM remove_compression_policy(t::regclass, if_exists => true);
        IF s.compress_after IS NOT NULL THEN
            PERFORM add_compression_policy(t::regclass, s.compress_after);
        END IF;
        PERFORM remove_retention_policy(t::regclass, if_exists => true);
        IF s.retention IS NOT NULL THEN
            PERFORM add_retention_policy(t::regclass, s.retention);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs
                    WHERE proc_name = 'christmas_prune_ledger_job') THEN
        PERFORM add_job('christmas_prune_ledger_job', interval '1 hour');
    END IF;
END
$$;
