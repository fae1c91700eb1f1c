-- Version 12, every variant: a producer's claim updates its row in place.
--
-- Each batch's transaction claims every (producer, kind, symbol) it carries: a replayed file
-- of 100 symbols claims 100 rows per batch. Setting committed_at on every claim changed an
-- indexed column, so no claim was a HOT update: each wrote a new row version into both
-- indexes. committed_at now moves only once it is a minute old, so the other claims leave
-- every indexed column as it was and PostgreSQL updates the row in place (the page keeps
-- room for that with a fill factor of 70). The ledger's pruning allows for that minute: a
-- producer is forgotten only when its last commit is older than ledger_retention plus a
-- minute. The claim is PL/pgSQL so that each writer's connection plans it once.
ALTER TABLE ingest_producers SET (fillfactor = 70);

CREATE OR REPLACE FUNCTION christmas_claim_producers(producers text[], kinds text[],
                                                     symbols text[], firsts bigint[],
                                                     lasts bigint[])
RETURNS SETOF integer
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH claim AS (
        SELECT * FROM unnest(producers, kinds, symbols, firsts, lasts)
                      WITH ORDINALITY AS c(producer, kind, symbol, first_seq, seq, i)
    ), won AS (
        INSERT INTO ingest_producers AS p (producer, kind, symbol, first_seq, seq)
        SELECT c.producer, c.kind, c.symbol, c.first_seq, c.seq FROM claim c ORDER BY c.i
        ON CONFLICT (producer, kind, symbol) DO UPDATE
           SET first_seq = excluded.first_seq, seq = excluded.seq,
               committed_at = CASE WHEN p.committed_at < now() - interval '1 minute'
                                   THEN now() ELSE p.committed_at END
         WHERE p.seq < excluded.first_seq
        RETURNING p.producer, p.kind, p.symbol
    )
    SELECT c.i::integer FROM claim c
     WHERE NOT EXISTS (SELECT 1 FROM won w
                        WHERE (w.producer, w.kind, w.symbol) = (c.producer, c.kind, c.symbol))
     ORDER BY c.i;
END
$$;

CREATE OR REPLACE FUNCTION christmas_prune_ledger_at(at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    pruned bigint;
    keep interval := (SELECT ledger_retention FROM christmas_settings);
BEGIN
    DELETE FROM ingest_batches WHERE committed_at < at - keep;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    DELETE FROM ingest_producers WHERE committed_at < at - keep - interval '1 minute';
    RETURN pruned;
END
$$;
