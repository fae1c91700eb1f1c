-- Version 6, plain PostgreSQL: no insert-triggered autovacuum on the partitions being written.
--
-- market_data and quotes are insert-only. PostgreSQL 13+ still vacuums an insert-only table
-- every autovacuum_vacuum_insert_threshold + autovacuum_vacuum_insert_scale_factor ×
-- reltuples inserted rows, to set hint bits and the visibility map. On the partitions that
-- take the live feed that is a vacuum of each hash leaf every few minutes, reading and
-- dirtying nearly every page COPY has just written: WAL and I/O in proportion to the ingest
-- rate, competing with the commits. (Measured in the daemon's soak at half its ceiling:
-- 103 vacuums of the hot leaves in 9 minutes; bench/RESULTS.md.)
--
-- So a time partition's leaves are created with that trigger off, and once the partition's
-- range has ended (no live tick goes there any more) it is turned back on together with
-- autovacuum_freeze_min_age = 0: autovacuum then vacuums the closed partition once, freezing
-- it, and never needs to rewrite it for wraparound later. Auto-analyze is untouched, so the
-- planner's statistics of the open partition stay current. christmas_tune_autovacuum() does
-- both, from the partition maintenance pass; the state lives in each leaf's reloptions:
--
--   neither option set                        not seen yet
--   autovacuum_vacuum_insert_threshold=-1     held: open, insert-triggered vacuum off
--   autovacuum_freeze_min_age=0               released: closed, vacuumed by autovacuum
--
-- ALTER TABLE … SET/RESET of these options takes SHARE UPDATE EXCLUSIVE on the leaf, which
-- does not conflict with the COPYs into it. The default partition keeps the server defaults.

-- Holds the open time partitions of `target` and releases the closed ones (as of `at`).
-- Returns how many leaf tables it changed each way.
CREATE FUNCTION christmas_tune_autovacuum(target text, at timestamptz DEFAULT now(),
                                          OUT held integer, OUT released integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '10s'
AS $$
DECLARE
    leaf record;
BEGIN
    held := 0;
    released := 0;
    IF NOT christmas_is_partitioned(target) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('christmas partitions ' || target));
    FOR leaf IN
        SELECT t.relid::regclass AS rel,
               p.upper_bound > at AS open,
               coalesce('autovacuum_vacuum_insert_threshold=-1' = ANY(c.reloptions), false)
                   AS is_held,
               coalesce('autovacuum_freeze_min_age=0' = ANY(c.reloptions), false)
                   AS is_released
          FROM christmas_partitions p
         CROSS JOIN LATERAL pg_partition_tree(to_regclass(p.name)) t
          JOIN pg_class c ON c.oid = t.relid
         WHERE p.parent_table = target AND t.isleaf
         ORDER BY p.lower_bound, 1
    LOOP
        IF leaf.open AND NOT leaf.is_held AND NOT leaf.is_released THEN
            EXECUTE format('ALTER TABLE %s SET (autovacuum_vacuum_insert_threshold = -1)',
                           leaf.rel);
            held := held + 1;
        ELSIF NOT leaf.open AND NOT leaf.is_released THEN
            EXECUTE format('ALTER TABLE %s RESET (autovacuum_vacuum_insert_threshold),'
                           ' SET (autovacuum_freeze_min_age = 0)', leaf.rel);
            released := released + 1;
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION christmas_tune_autovacuum(text, timestamptz) FROM PUBLIC;
