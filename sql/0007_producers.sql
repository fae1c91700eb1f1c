-- Version 7, both variants: idempotent producers.
--
-- A producer (a feed handler's connection, an HTTP client, a replayed file) names itself and
-- numbers its ticks. Each batch's transaction claims, per (producer, kind, symbol) it
-- carries, the range of sequences it writes: the claim succeeds only when everything stored
-- so far for that key is below the batch's first sequence. A resend of ticks that already
-- committed (after a timeout, a reconnect, a crash, or to another daemon) fails its claim,
-- and the engine drops those ticks instead of writing them twice. One row per key, updated
-- once per batch: no per-row cost.
CREATE TABLE IF NOT EXISTS ingest_producers (
    producer     text        NOT NULL,
    kind         text        NOT NULL,  -- 'trade' or 'quote'
    symbol       text        NOT NULL,
    first_seq    bigint      NOT NULL,  -- first sequence of the last batch that claimed it
    seq          bigint      NOT NULL,  -- highest sequence committed
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer, kind, symbol)
);
CREATE INDEX IF NOT EXISTS ingest_producers_committed_at_idx ON ingest_producers (committed_at);
ALTER TABLE ingest_producers SET (vacuum_truncate = false);

-- Claims the keys of one batch, in the order given (the engine sorts them, so two
-- transactions lock shared keys in the same order and cannot deadlock). Returns the
-- 1-based positions of the claims that failed: another transaction already stored a
-- sequence at or past that claim's first one. The row lock taken on a conflicting key is
-- held to the end of the transaction, so a concurrent resend through another daemon waits
-- for this one's outcome instead of racing it.
CREATE OR REPLACE FUNCTION christmas_claim_producers(producers text[], kinds text[],
                                                     symbols text[], firsts bigint[],
                                                     lasts bigint[])
RETURNS SETOF integer
LANGUAGE sql VOLATILE SET search_path = public, pg_temp
AS $$
    WITH claim AS (
        SELECT * FROM unnest(producers, kinds, symbols, firsts, lasts)
                      WITH ORDINALITY AS c(producer, kind, symbol, first_seq, seq, i)
    ), won AS (
        INSERT INTO ingest_producers AS p (producer, kind, symbol, first_seq, seq)
        SELECT producer, kind, symbol, first_seq, seq FROM claim ORDER BY i
        ON CONFLICT (producer, kind, symbol) DO UPDATE
           SET first_seq = excluded.first_seq, seq = excluded.seq, committed_at = now()
         WHERE p.seq < excluded.first_seq
        RETURNING producer, kind, symbol
    )
    SELECT c.i::integer FROM claim c
     WHERE NOT EXISTS (SELECT 1 FROM won w
                        WHERE (w.producer, w.kind, w.symbol) = (c.producer, c.kind, c.symbol))
     ORDER BY c.i
$$;

-- The ledger's pruning also forgets producers idle for longer than the ledger is kept: a
-- producer that resends after that long is a new producer.
CREATE OR REPLACE FUNCTION christmas_prune_ledger(at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    pruned bigint;
    keep interval := (SELECT ledger_retention FROM christmas_settings);
BEGIN
    DELETE FROM ingest_batches WHERE committed_at < at - keep;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    DELETE FROM ingest_producers WHERE committed_at < at - keep;
    RETURN pruned;
END
$$;
REVOKE ALL ON FUNCTION christmas_prune_ledger(timestamptz) FROM PUBLIC;
