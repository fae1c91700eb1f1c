-- Version 2, Citus: trades and quotes distributed by symbol across the worker nodes. The
-- migrator runs the plain variant's postgres/0002_market_data.sql first, then this file in
-- the same transaction.
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

-- The plain file made the tables (one level of time partitions: the hash sub-partitions
-- are made by christmas_create_partition(), replaced below) and the functions, and Citus
-- propagated the functions to the workers. Distributed DDL from here on goes over one
-- connection per node, as Citus requires before a function command that follows it.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- Distributed by symbol: space_partitions shards each, quotes beside market_data.
SELECT create_distributed_table('market_data', 'symbol',
                                shard_count => (SELECT space_partitions FROM christmas_settings));
SELECT create_distributed_table('quotes', 'symbol', colocate_with => 'market_data');

-- Creates the time partition of `target` starting at `lower_bound` (distributed by symbol,
-- co-located with `target`), moving in any rows the default partition holds for its range.
-- Returns the number of rows moved, or -1 when the partition already exists.
--
-- Locks: the default partition's table on the coordinator (ACCESS EXCLUSIVE), then ATTACH
-- PARTITION. A COPY through the coordinator routes rows to the parent's shards on the
-- workers, so a row of this range may still reach a shard of the default partition between
-- the move and the ATTACH; the ATTACH then fails ("would be violated by some row"), the
-- whole call rolls back, nothing is lost, and the next maintenance pass tries again. The
-- engine creates partitions ahead of time, so this happens only to late or replayed rows.
CREATE OR REPLACE FUNCTION christmas_create_partition(target text, lower_bound timestamptz)
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

REVOKE ALL ON FUNCTION christmas_create_partition(text, timestamptz) FROM PUBLIC;
