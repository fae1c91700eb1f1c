-- Version 2, Citus: trades and quotes distributed by symbol across the worker nodes.
--
-- The same tables as the plain variant, with one level of partitions instead of two: each
-- table is range-partitioned on time (christmas_settings.chunk_interval, 1 day by default)
-- and distributed by symbol (Citus cannot distribute a table whose partitions are
-- partitioned again). The hash split on symbol that the plain variant's sub-partitions make
-- is Citus's shards here: space_partitions shards (4 by default) per table, spread over the
-- workers, quotes co-located with market_data so a symbol's trades and quotes live on the
-- same worker. A DEFAULT partition catches rows no time partition covers, as in the plain
-- variant, and the same functions maintain the partitions: christmas_create_partition()
-- creates a distributed partition, moves the default partition's rows for its range into it
-- and attaches it; retention drops whole partitions (DROP TABLE of a distributed partition
-- drops its shards on every worker).
--
-- Everything else (the ledger, producers, dead letters, orders and their outbox, the
-- settings and this partition registry) stays in ordinary tables on the coordinator: a
-- batch's ledger row and producer claims commit in the batch's own transaction without a
-- round trip to a worker, orders keep their UNIQUE (account, client_order_id), and the
-- maintenance functions read the settings locally.

-- Functions created below are propagated to the workers over one connection per node, which
-- Citus allows only when the distributed DDL before them used one too.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE TABLE market_data (
    time         timestamptz      NOT NULL,
    symbol       text             NOT NULL,
    price        double precision NOT NULL,
    volume       double precision NOT NULL,
    side         char(1)          NOT NULL DEFAULT 'N',  -- B(uy) / S(ell) / N(one): aggressor
    exchange_seq bigint           NOT NULL DEFAULT 0     -- the venue's sequence number
) PARTITION BY RANGE (time);
CREATE TABLE market_data_default PARTITION OF market_data DEFAULT;
CREATE INDEX market_data_symbol_time_idx ON market_data (symbol, time);

CREATE TABLE quotes (
    time     timestamptz      NOT NULL,
    symbol   text             NOT NULL,
    bid      double precision NOT NULL,
    ask      double precision NOT NULL,
    bid_size double precision NOT NULL,
    ask_size double precision NOT NULL
) PARTITION BY RANGE (time);
CREATE TABLE quotes_default PARTITION OF quotes DEFAULT;
CREATE INDEX quotes_symbol_time_idx ON quotes (symbol, time);

-- Distributed by symbol: space_partitions shards each, quotes beside market_data.
SELECT create_distributed_table('market_data', 'symbol',
                                shard_count => (SELECT space_partitions FROM christmas_settings));
SELECT create_distributed_table('quotes', 'symbol', colocate_with => 'market_data');

-- The time partitions christmas_create_partition() made, for retention.
CREATE TABLE christmas_partitions (
    parent_table text        NOT NULL,
    name         text        PRIMARY KEY,
    lower_bound  timestamptz NOT NULL,
    upper_bound  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (parent_table, lower_bound)
);

-- Time partitions start at multiples of chunk_interval from this origin (a UTC midnight),
-- the same alignment as TimescaleDB's time_bucket for minutes, hours and days.
CREATE FUNCTION christmas_origin() RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT timestamptz '2000-01-01 00:00:00+00' $$;

-- True when `target` is a table this schema partitions (has a <target>_default partition).
CREATE FUNCTION christmas_is_partitioned(target text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p
                    WHERE p.partrelid = to_regclass(target))
       AND to_regclass(target || '_default') IS NOT NULL
$$;

-- Lower bounds of the time partitions `target` should have and does not, oldest first, at
-- most 64 per call.
CREATE FUNCTION christmas_partitions_needed(target text, at timestamptz DEFAULT now())
RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    s      christmas_settings;
    first  timestamptz;
    horizon timestamptz;
    oldest timestamptz;
BEGIN
    IF NOT christmas_is_partitioned(target) THEN
        RETURN;
    END IF;
    SELECT * INTO STRICT s FROM christmas_settings;
    -- The partition before the current one too: late ticks just after a boundary.
    first   := date_bin(s.chunk_interval, at, christmas_origin()) - s.chunk_interval;
    horizon := first + s.chunk_interval * (s.partitions_ahead + 2);
    oldest  := CASE WHEN s.retention IS NULL THEN '-infinity'::timestamptz
                    ELSE at - s.retention END;
    RETURN QUERY EXECUTE format(
        $q$SELECT b FROM (
               SELECT generate_series($1, $2 - $3, $3) AS b
               UNION
               SELECT DISTINCT date_bin($3, time, christmas_origin())
                 FROM %I WHERE time >= $4 AND time < $2
           ) wanted
           WHERE b + $3 > $4
             AND NOT EXISTS (SELECT 1 FROM christmas_partitions p
                              WHERE p.parent_table = $5 AND p.lower_bound = wanted.b)
           ORDER BY b LIMIT 64$q$,
        target || '_default')
    USING first, horizon, s.chunk_interval, oldest, target;
END
$$;

-- Creates the time partition of `target` starting at `lower_bound` (distributed by symbol,
-- co-located with `target`), moving in any rows the default partition holds for its range. Returns the number
-- of rows moved, or -1 when the partition already exists.
--
-- Locks: the default partition's table on the coordinator (ACCESS EXCLUSIVE), then ATTACH
-- PARTITION. A COPY through the coordinator routes rows to the parent's shards on the
-- workers, so a row of this range may still reach a shard of the default partition between
-- the move and the ATTACH; the ATTACH then fails ("would be violated by some row"), the
-- whole call rolls back, nothing is lost, and the next maintenance pass tries again. The
-- engine creates partitions ahead of time, so this happens only to late or replayed rows.
CREATE FUNCTION christmas_create_partition(target text, lower_bound timestamptz)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '10s'
SET citus.multi_shard_modify_mode = 'sequential'
AS $$
DECLARE
    s     christmas_settings;
    lo    timestamptz := date_bin((SELECT chunk_interval FROM christmas_settings),
                                  lower_bound, christmas_origin());
    hi    timestamptz;
    part  text;
    moved bigint;
BEGIN
    IF NOT christmas_is_partitioned(target) THEN
        RAISE EXCEPTION 'christmas: % is not a partitioned christmas table', target;
    END IF;
    SELECT * INTO STRICT s FROM christmas_settings;
    hi := lo + s.chunk_interval;
    part := target || '_p' || to_char(lo AT TIME ZONE 'UTC',
        CASE WHEN s.chunk_interval >= interval '1 day'
                  AND extract(epoch FROM s.chunk_interval)::bigint % 86400 = 0
             THEN 'YYYYMMDD' ELSE 'YYYYMMDD"_"HH24MI' END);
    PERFORM pg_advisory_xact_lock(hashtext('christmas partitions ' || target));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN -1;
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', target || '_default');
    -- A distributed table co-located with the parent, filled from the default partition,
    -- then attached: Citus cannot attach a partition whose rows the default still holds.
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part, target);
    PERFORM create_distributed_table(part, 'symbol', colocate_with => target);
    EXECUTE format('INSERT INTO %I SELECT * FROM %I WHERE time >= $1 AND time < $2',
                   part, target || '_default')
    USING lo, hi;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        EXECUTE format('DELETE FROM %I WHERE time >= $1 AND time < $2', target || '_default')
        USING lo, hi;
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   target, part, lo, hi);
    INSERT INTO christmas_partitions (parent_table, name, lower_bound, upper_bound)
    VALUES (target, part, lo, hi);
    RETURN moved;
END
$$;

-- Drops the time partitions of `target` that end before the retention window and deletes
-- older rows from its default partition. Only rows older than `at - retention` go.
CREATE FUNCTION christmas_apply_retention(target text, at timestamptz DEFAULT now(),
                                          OUT dropped integer, OUT expired bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '10s'
AS $$
DECLARE
    keep   interval := (SELECT retention FROM christmas_settings);
    cutoff timestamptz;
    p      record;
BEGIN
    dropped := 0;
    expired := 0;
    IF keep IS NULL OR NOT christmas_is_partitioned(target) THEN
        RETURN;
    END IF;
    cutoff := at - keep;
    PERFORM pg_advisory_xact_lock(hashtext('christmas partitions ' || target));
    FOR p IN SELECT name FROM christmas_partitions
              WHERE parent_table = target AND upper_bound <= cutoff
              ORDER BY lower_bound
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', p.name);
        DELETE FROM christmas_partitions WHERE name = p.name;
        dropped := dropped + 1;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE time < $1', target || '_default') USING cutoff;
    GET DIAGNOSTICS expired = ROW_COUNT;
END
$$;

-- Rows of `target` sitting in its default partition (no time partition covers them).
CREATE FUNCTION christmas_default_rows(target text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    n bigint := 0;
BEGIN
    IF christmas_is_partitioned(target) THEN
        EXECUTE format('SELECT count(*) FROM %I', target || '_default') INTO n;
    END IF;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION christmas_partitions_needed(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_create_partition(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_apply_retention(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_default_rows(text) FROM PUBLIC;
