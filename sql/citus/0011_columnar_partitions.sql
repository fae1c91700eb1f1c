-- Version 11, Citus: old time partitions move to columnar storage, the analogue of
-- TimescaleDB's compression.
--
-- christmas_compress_partitions(table), run by the maintenance pass, converts each time
-- partition whose range ended more than christmas_settings.compress_after ago (NULL: never)
-- to Citus's columnar access method, shard by shard on the workers. A columnar partition
-- still takes inserts (late ticks, a replay of old history) and answers every query; it
-- cannot take UPDATE or DELETE, which nothing in Christmas runs on market data (retention
-- drops whole partitions). The default partition stays a heap: rows are moved out of it.
--
-- christmas_stale_prepared(): prepared transactions of this database older than a minute on
-- the coordinator and every worker, exported by the daemons as a metric. Each batch commits
-- with two-phase commit across the workers it wrote to; when a worker's connection dies
-- between PREPARE and COMMIT PREPARED, the batch is committed (the coordinator recorded the
-- decision) but its rows on that worker stay invisible, and hold a max_prepared_transactions
-- slot, until Citus's recovery commits them (every citus.recover_2pc_interval, 60 s by
-- default; docs/operations.md, "Citus").
--
-- Columnar lives in the citus_columnar extension. Creating it needs a superuser on
-- PostgreSQL 15; when the migrating role cannot, the step does nothing and says so (NOTICE
-- here, and the function returns 0) until an administrator runs
-- CREATE EXTENSION citus_columnar.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS citus_columnar;
EXCEPTION WHEN insufficient_privilege OR feature_not_supported OR undefined_file THEN
    RAISE NOTICE 'christmas: citus_columnar could not be created (%): old partitions stay heap tables', SQLERRM;
END
$$;

-- Converts the partitions of `target` that ended before `at - compress_after` and are still
-- heap tables; returns how many it converted. One partition per call (each rewrites every
-- row of its shards), so no call holds its locks for long: the maintenance pass calls it
-- until it returns 0.
CREATE FUNCTION christmas_compress_partitions_at(target text, at timestamptz,
                                                 OUT converted integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '10s'
AS $$
DECLARE
    keep interval := (SELECT compress_after FROM christmas_settings);
    p    record;
BEGIN
    converted := 0;
    IF keep IS NULL OR NOT christmas_is_partitioned(target)
       OR NOT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'columnar') THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('christmas partitions ' || target));
    FOR p IN SELECT cp.name
               FROM christmas_partitions cp
               JOIN pg_class c ON c.oid = to_regclass(cp.name)
               JOIN pg_am a ON a.oid = c.relam
              WHERE cp.parent_table = target AND cp.upper_bound <= at - keep
                AND a.amname = 'heap'
              ORDER BY cp.lower_bound
              LIMIT 1
    LOOP
        PERFORM alter_table_set_access_method(p.name::regclass, 'columnar');
        -- Closed for good: autovacuum may freeze it once (version 6's "released" state).
        EXECUTE format('ALTER TABLE %I SET (autovacuum_freeze_min_age = 0)', p.name);
        converted := converted + 1;
    END LOOP;
END
$$;

CREATE FUNCTION christmas_compress_partitions(target text, OUT converted integer)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT * FROM christmas_compress_partitions_at(target, now()) $$;

REVOKE ALL ON FUNCTION christmas_compress_partitions_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_compress_partitions(text) FROM PUBLIC;

CREATE FUNCTION christmas_stale_prepared() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT (SELECT count(*) FROM pg_prepared_xacts
             WHERE database = current_database() AND prepared < now() - interval '1 minute')
         + coalesce((SELECT sum(result::bigint) FROM run_command_on_workers(
               $q$SELECT count(*) FROM pg_prepared_xacts
                   WHERE database = current_database()
                     AND prepared < now() - interval '1 minute'$q$)
              WHERE success), 0)::bigint
$$;
REVOKE ALL ON FUNCTION christmas_stale_prepared() FROM PUBLIC;
