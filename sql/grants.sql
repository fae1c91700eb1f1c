-- Privileges of the daemon's least-privilege role, applied by the migrator on every run when
-- it connects with a role allowed to create roles. {{role}} is replaced by the quoted role
-- name. The role may insert and read what the pipeline writes, read and update orders, and
-- run the maintenance functions (which run as the schema owner, on the server's clock: the
-- *_at twins that take a time are the owner's alone); it cannot create, alter or drop
-- anything, nor expire rows before their time.

GRANT USAGE ON SCHEMA public TO {{role}};
GRANT SELECT, INSERT ON market_data, quotes, ingest_batches, ingest_dead_letters TO {{role}};
GRANT SELECT, INSERT, UPDATE ON orders, ingest_producers TO {{role}};
GRANT SELECT, INSERT, DELETE ON order_outbox TO {{role}};
GRANT SELECT ON market_data_1m, christmas_settings, christmas_migrations TO {{role}};
GRANT USAGE ON SEQUENCE ingest_dead_letters_id_seq TO {{role}};
GRANT EXECUTE ON FUNCTION christmas_prune_ledger(),
                          christmas_partitions_needed(text),
                          christmas_create_partition(text, timestamptz),
                          christmas_apply_retention(text),
                          christmas_default_rows(text),
                          christmas_tune_autovacuum(text),
                          christmas_compress_partitions(text),
                          christmas_stale_prepared(),
                          christmas_bars(text, interval, timestamptz, timestamptz),
                          christmas_claim_producers(text[], text[], text[], bigint[], bigint[])
   TO {{role}};
