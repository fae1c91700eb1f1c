-- Version 3, plain PostgreSQL: OHLCV bars computed on the fly with date_bin, over the same
-- interface as the TimescaleDB variant's continuous aggregate.

-- One-minute bars, the same columns as TimescaleDB's market_data_1m continuous aggregate.
-- For ranged queries prefer christmas_bars(), which prunes partitions by time.
CREATE VIEW market_data_1m AS
SELECT date_bin(interval '1 minute', time, christmas_origin()) AS bucket,
       symbol,
       christmas_first(price, time, exchange_seq) AS open,
       max(price)                                 AS high,
       min(price)                                 AS low,
       christmas_last(price, time, exchange_seq)  AS close,
       sum(volume)                                AS volume,
       count(*)                                   AS trades
  FROM market_data
 GROUP BY 1, 2;

-- Bars of `width` (a whole number of minutes dividing a day, e.g. 1m, 5m, 1h, 1d) for one
-- symbol: every bar whose start lies in [from rounded down to width, to), complete.
CREATE FUNCTION christmas_bars(sym text, width interval, t_from timestamptz, t_to timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision,
               low double precision, close double precision, volume double precision,
               trades bigint)
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$
    SELECT date_bin(width, m.time, christmas_origin()) AS bucket,
           christmas_first(m.price, m.time, m.exchange_seq),
           max(m.price),
           min(m.price),
           christmas_last(m.price, m.time, m.exchange_seq),
           sum(m.volume),
           count(*)
      FROM market_data m
     WHERE m.symbol = sym
       AND m.time >= date_bin(width, t_from, christmas_origin())
       AND m.time < t_to + width
       AND date_bin(width, m.time, christmas_origin()) < t_to
     GROUP BY 1
     ORDER BY 1
$$;
