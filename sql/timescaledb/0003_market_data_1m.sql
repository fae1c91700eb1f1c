-- christmas: no-transaction
-- Version 3, TimescaleDB: the one-minute OHLCV continuous aggregate and christmas_bars().
-- A continuous aggregate cannot be created inside a transaction, so the migrator runs this
-- file one statement at a time; every statement is idempotent in case a run stops midway.
-- Open and close use christmas_first/last (ties in time broken by exchange_seq), the same
-- aggregates as the plain variant, so both give identical bars.

CREATE MATERIALIZED VIEW IF NOT EXISTS market_data_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 minute', time) AS bucket,
       symbol,
       christmas_first(price, time, exchange_seq) AS open,
       max(price)         AS high,
       min(price)         AS low,
       christmas_last(price, time, exchange_seq)  AS close,
       sum(volume)        AS volume,
       count(*)           AS trades
  FROM market_data
 GROUP BY 1, 2
WITH NO DATA;

CREATE INDEX IF NOT EXISTS market_data_1m_symbol_bucket_idx ON market_data_1m (symbol, bucket);

SELECT add_continuous_aggregate_policy('market_data_1m',
                                       start_offset      => interval '1 day',
                                       end_offset        => interval '1 minute',
                                       schedule_interval => interval '1 minute',
                                       if_not_exists     => true);

-- Bars of `width` (a whole number of minutes dividing a day, e.g. 1m, 5m, 1h, 1d) for one
-- symbol: every bar whose start lies in [from rounded down to width, to), complete. Built
-- from the continuous aggregate; real-time aggregation covers the not yet materialized tail.
CREATE OR REPLACE FUNCTION christmas_bars(sym text, width interval, t_from timestamptz,
                                          t_to timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision,
               low double precision, close double precision, volume double precision,
               trades bigint)
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$
    SELECT time_bucket(width, m.bucket) AS bucket,
           first(m.open, m.bucket),
           max(m.high),
           min(m.low),
           last(m.close, m.bucket),
           sum(m.volume),
           sum(m.trades)::bigint
      FROM market_data_1m m
     WHERE m.symbol = sym
       AND m.bucket >= time_bucket(width, t_from)
       AND m.bucket < t_to + width
       AND time_bucket(width, m.bucket) < t_to
     GROUP BY 1
     ORDER BY 1
$$;
