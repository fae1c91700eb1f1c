-- Version 8 (both variants): maintenance on the server's clock.
--
-- The maintenance functions run as the schema owner (SECURITY DEFINER) and took the time
-- to act "as of" from their caller, so the least-privilege role could pass 'infinity' and
-- have retention drop every partition and the ledger pruned empty. They are renamed to
-- *_at (owner only: tests and operators that move time) and the names the daemon calls
-- become functions of the table alone that act as of the server's now().

ALTER FUNCTION christmas_prune_ledger(timestamptz) RENAME TO christmas_prune_ledger_at;
ALTER FUNCTION christmas_partitions_needed(text, timestamptz)
    RENAME TO christmas_partitions_needed_at;
ALTER FUNCTION christmas_apply_retention(text, timestamptz) RENAME TO christmas_apply_retention_at;
ALTER FUNCTION christmas_tune_autovacuum(text, timestamptz) RENAME TO christmas_tune_autovacuum_at;

-- Grants follow a renamed function: take back every one but the owner's.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS f, a.grantee
               FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a
              WHERE p.pronamespace = 'public'::regnamespace
                AND p.proname IN ('christmas_prune_ledger_at', 'christmas_partitions_needed_at',
                                  'christmas_apply_retention_at', 'christmas_tune_autovacuum_at')
                AND a.grantee <> p.proowner AND a.grantee <> 0
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', r.f, r.grantee::regrole);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION christmas_prune_ledger_at(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_partitions_needed_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_apply_retention_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_tune_autovacuum_at(text, timestamptz) FROM PUBLIC;

CREATE FUNCTION christmas_prune_ledger() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT christmas_prune_ledger_at(now()) $$;

CREATE FUNCTION christmas_partitions_needed(target text) RETURNS SETOF timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT christmas_partitions_needed_at(target, now()) $$;

CREATE FUNCTION christmas_apply_retention(target text, OUT dropped integer, OUT expired bigint)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT * FROM christmas_apply_retention_at(target, now()) $$;

CREATE FUNCTION christmas_tune_autovacuum(target text, OUT held integer, OUT released integer)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT * FROM christmas_tune_autovacuum_at(target, now()) $$;

REVOKE ALL ON FUNCTION christmas_prune_ledger() FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_partitions_needed(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_apply_retention(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION christmas_tune_autovacuum(text) FROM PUBLIC;
