-- Version 6, TimescaleDB: no insert-triggered autovacuum on the chunks being written.
--
-- The same policy as the plain variant's version 6 (see sql/postgres/0006_…): the chunks
-- that take the live feed are insert-only, and autovacuum would vacuum each of them every few
-- minutes only to set hint bits and the visibility map, rewriting nearly every page COPY has
-- just written. Storage parameters set on a hypertable are set on its chunks and inherited
-- by every chunk created later, so the trigger is turned off here once, for all of them;
-- christmas_tune_autovacuum(), called by the engine's maintenance pass, turns it back on,
-- with autovacuum_freeze_min_age = 0, for each chunk whose range has ended. Autovacuum then
-- vacuums and freezes the closed chunk once (before the compression policy reaches it, or
-- instead of it when compression is off). Auto-analyze is untouched.

ALTER TABLE market_data SET (autovacuum_vacuum_insert_threshold = -1);
ALTER TABLE quotes SET (autovacuum_vacuum_insert_threshold = -1);

-- Releases the closed chunks of hypertable `target` (as of `at`). `held` is always 0 here:
-- new chunks inherit the hypertable's setting.
CREATE FUNCTION christmas_tune_autovacuum(target text, at timestamptz DEFAULT now(),
                                          OUT held integer, OUT released integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '10s'
AS $$
DECLARE
    chunk regclass;
BEGIN
    held := 0;
    released := 0;
    FOR chunk IN
        SELECT c.oid::regclass
          FROM timescaledb_information.chunks ch
          JOIN pg_namespace n ON n.nspname = ch.chunk_schema
          JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = ch.chunk_name
         WHERE ch.hypertable_schema = 'public'
           AND ch.hypertable_name = target
           AND ch.range_end <= at
           AND c.relkind = 'r'
           AND 'autovacuum_vacuum_insert_threshold=-1' = ANY(c.reloptions)
         ORDER BY ch.range_end, 1
    LOOP
        EXECUTE format('ALTER TABLE %s RESET (autovacuum_vacuum_insert_threshold),'
                       ' SET (autovacuum_freeze_min_age = 0)', chunk);
        released := released + 1;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION christmas_tune_autovacuum(text, timestamptz) FROM PUBLIC;
