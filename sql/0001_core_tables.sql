-- Version 1, both variants: the exactly-once ledger, the dead-letter table, orders, and the
-- tie-breaking first/last aggregates the OHLCV bars use.

-- One row per committed batch (or split part of one), written in the batch's own
-- transaction: after an ambiguous failure the engine looks here to decide whether to resend.
-- Rows only matter for as long as a retry can happen, so christmas_prune_ledger() deletes
-- those older than christmas_settings.ledger_retention.
CREATE TABLE IF NOT EXISTS ingest_batches (
    stream       text        NOT NULL,  -- <name>-<boot id> of the ingestor run
    shard        integer     NOT NULL,
    seq          bigint      NOT NULL,  -- batch sequence within the shard
    first_row    integer     NOT NULL,  -- 0 for a whole batch; the first row of a split part
    rows         integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, shard, seq, first_row)
);
CREATE INDEX IF NOT EXISTS ingest_batches_committed_at_idx ON ingest_batches (committed_at);

-- Rows PostgreSQL rejected, isolated from their batch, with the reason.
CREATE TABLE IF NOT EXISTS ingest_dead_letters (
    id           bigserial   PRIMARY KEY,
    stream       text        NOT NULL,
    shard        integer     NOT NULL,
    seq          bigint      NOT NULL,
    row_index    integer     NOT NULL,
    target_table text        NOT NULL,
    row_copy     bytea       NOT NULL,  -- the row in binary COPY form
    reason       text        NOT NULL,
    sqlstate     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Orders: durable and idempotent on (account, client_order_id).
CREATE TABLE IF NOT EXISTS orders (
    id              bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account         text             NOT NULL,  -- the account (or API key) placing it
    client_order_id text             NOT NULL,  -- the client's id, unique per account
    symbol          text             NOT NULL,
    side            char(1)          NOT NULL CHECK (side IN ('B', 'S')),
    type            text             NOT NULL CHECK (type IN ('market', 'limit')),
    quantity        double precision NOT NULL CHECK (quantity > 0),
    limit_price     double precision CHECK (limit_price > 0),
    time_in_force   text             NOT NULL DEFAULT 'day'
                                     CHECK (time_in_force IN ('day', 'gtc', 'ioc', 'fok')),
    status          text             NOT NULL DEFAULT 'new'
                                     CHECK (status IN ('new', 'accepted', 'rejected',
                                                       'partially_filled', 'filled',
                                                       'cancelled')),
    created_at      timestamptz      NOT NULL DEFAULT now(),
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (account, client_order_id),
    CHECK ((type = 'limit') = (limit_price IS NOT NULL))
);

-- Deletes ledger rows older than the configured window; returns how many. Runs as the
-- schema owner so the daemon's role needs no DELETE on the ledger.
CREATE OR REPLACE FUNCTION christmas_prune_ledger(at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    pruned bigint;
BEGIN
    DELETE FROM ingest_batches
     WHERE committed_at < at - (SELECT ledger_retention FROM christmas_settings);
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;
REVOKE ALL ON FUNCTION christmas_prune_ledger(timestamptz) FROM PUBLIC;

-- first / last price of a bar. Ticks that share a timestamp (timestamptz keeps microseconds)
-- are ordered by the venue's sequence number, so open and close are deterministic. The type
-- is schema-qualified in the bodies because TimescaleDB refreshes continuous aggregates with
-- an empty search_path (and a SET clause would stop these being inlined).
CREATE TYPE christmas_tick_pick AS (time timestamptz, seq bigint, price double precision);

CREATE FUNCTION christmas_pick_first(state christmas_tick_pick, price double precision,
                                     t timestamptz, seq bigint)
RETURNS christmas_tick_pick LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IS NULL OR (t, seq) < (state.time, state.seq)
                THEN ROW(t, seq, price)::public.christmas_tick_pick ELSE state END
$$;

CREATE FUNCTION christmas_pick_last(state christmas_tick_pick, price double precision,
                                    t timestamptz, seq bigint)
RETURNS christmas_tick_pick LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IS NULL OR (t, seq) >= (state.time, state.seq)
                THEN ROW(t, seq, price)::public.christmas_tick_pick ELSE state END
$$;

CREATE FUNCTION christmas_pick_price(state christmas_tick_pick)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT state.price
$$;

-- christmas_first(price, time, exchange_seq): the price of the earliest tick.
CREATE AGGREGATE christmas_first(double precision, timestamptz, bigint) (
    SFUNC = christmas_pick_first, STYPE = christmas_tick_pick,
    FINALFUNC = christmas_pick_price, PARALLEL = SAFE
);

-- christmas_last(price, time, exchange_seq): the price of the latest tick.
CREATE AGGREGATE christmas_last(double precision, timestamptz, bigint) (
    SFUNC = christmas_pick_last, STYPE = christmas_tick_pick,
    FINALFUNC = christmas_pick_price, PARALLEL = SAFE
);
