-- Christmas core tables: trades, quotes, the exactly-once ledger and the dead-letter table.
-- Plain PostgreSQL. Safe to run more than once.

CREATE TABLE IF NOT EXISTS market_data (
    time         timestamptz      NOT NULL,
    symbol       text             NOT NULL,
    price        double precision NOT NULL,
    volume       double precision NOT NULL,
    side         char(1)          NOT NULL DEFAULT 'N',  -- B(uy) / S(ell) / N(one): aggressor
    exchange_seq bigint           NOT NULL DEFAULT 0     -- the venue's sequence number
);
CREATE INDEX IF NOT EXISTS market_data_symbol_time_idx ON market_data (symbol, time);

CREATE TABLE IF NOT EXISTS quotes (
    time     timestamptz      NOT NULL,
    symbol   text             NOT NULL,
    bid      double precision NOT NULL,
    ask      double precision NOT NULL,
    bid_size double precision NOT NULL,
    ask_size double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS quotes_symbol_time_idx ON quotes (symbol, time);

-- One row per committed batch (or split part of one), written in the batch's own
-- transaction: after an ambiguous failure the engine looks here to decide whether to resend.
CREATE TABLE IF NOT EXISTS ingest_batches (
    stream       text        NOT NULL,  -- <name>-<boot id> of the ingestor run
    shard        integer     NOT NULL,
    seq          bigint      NOT NULL,  -- batch sequence within the shard
    first_row    integer     NOT NULL,  -- 0 for a whole batch; the first row of a split part
    rows         integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, shard, seq, first_row)
);

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
