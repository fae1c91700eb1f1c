-- Version 11, plain PostgreSQL and TimescaleDB: christmas_compress_partitions(table), the
-- maintenance pass's step that the Citus variant uses to move old partitions to columnar
-- storage. Here it has nothing to do: plain PostgreSQL has no compressed storage, and
-- TimescaleDB compresses chunks in its own job (christmas_apply_policies()).
--
-- christmas_stale_prepared(): prepared transactions of this database older than a minute,
-- which the daemons export as a metric. The engine never prepares a transaction on these
-- variants, so any is someone else's, forgotten: it holds its locks and its xmin (vacuum
-- cannot remove dead rows behind it) until it is committed or rolled back.

CREATE FUNCTION christmas_compress_partitions_at(target text, at timestamptz,
                                                 OUT converted integer)
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$ SELECT 0 $$;

CREATE FUNCTION christmas_compress_partitions(target text, OUT converted integer)
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$ SELECT 0 $$;

REVOKE ALL ON FUNCTION christmas_compress_partitions_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_compress_partitions(text) FROM PUBLIC;

CREATE FUNCTION christmas_stale_prepared() RETURNS bigint
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$
    SELECT count(*) FROM pg_prepared_xacts
     WHERE database = current_database() AND prepared < now() - interval '1 minute'
$$;
REVOKE ALL ON FUNCTION christmas_stale_prepared() FROM PUBLIC;
