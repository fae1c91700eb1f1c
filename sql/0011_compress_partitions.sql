-- Version 11, plain PostgreSQL and TimescaleDB: christmas_compress_partitions(table), the
-- maintenance pass's step that the Citus variant uses to move old partitions to columnar
-- storage. Here it has nothing to do: plain PostgreSQL has no compressed storage, and
-- TimescaleDB compresses chunks in its own job (christmas_apply_policies()).

CREATE FUNCTION christmas_compress_partitions_at(target text, at timestamptz,
                                                 OUT converted integer)
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$ SELECT 0 $$;

CREATE FUNCTION christmas_compress_partitions(target text, OUT converted integer)
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$ SELECT 0 $$;

REVOKE ALL ON FUNCTION christmas_compress_partitions_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_compress_partitions(text) FROM PUBLIC;
