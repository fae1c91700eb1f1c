-- Version 9, plain PostgreSQL: what a retention setting would delete, asked before it is set.
--
-- The migrator keeps christmas_settings as stored and changes only what it is told to; a
-- change that would delete rows (retention turned on or shortened) is applied only when
-- confirmed, after it has shown what this function counts.

-- The time partitions of `target` that retention `keep` would drop now, and the rows it would
-- delete (theirs and those of the default partition older than now() - keep).
CREATE FUNCTION christmas_retention_preview(target text, keep interval,
                                            OUT partitions integer, OUT rows bigint)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - keep;
    upto   timestamptz;
    stray  bigint;
BEGIN
    partitions := 0;
    rows := 0;
    IF NOT christmas_is_partitioned(target) THEN
        RETURN;
    END IF;
    SELECT count(*), max(upper_bound) INTO partitions, upto
      FROM christmas_partitions
     WHERE parent_table = target AND upper_bound <= cutoff;
    -- Below the last partition to drop every row goes: the partitions' and the default's.
    IF upto IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM %I WHERE time < $1', target) INTO rows USING upto;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I WHERE time < $1 AND time >= $2', target || '_default')
       INTO stray USING cutoff, coalesce(upto, '-infinity');
    rows := rows + stray;
END
$$;

REVOKE ALL ON FUNCTION christmas_retention_preview(text, interval) FROM PUBLIC;
