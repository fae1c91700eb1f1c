-- Version 5, both variants: storage settings of the two tables that are queues.
--
-- order_outbox and the ingest_batches ledger have rows deleted continually (the outbox
-- within milliseconds of the insert, the ledger by christmas_prune_ledger()). Left to the
-- defaults, autovacuum ends each run by truncating the empty pages at the table's end,
-- which takes an ACCESS EXCLUSIVE lock: every order insert (the outbox row is written in
-- the same statement) or every batch commit (its ledger row) waits behind it. The pages
-- are reused by the next inserts anyway, so they are never truncated, and the outbox is
-- vacuumed after a fixed number of deleted rows instead of a fraction of a table whose
-- size is always near zero.
ALTER TABLE order_outbox SET (
    vacuum_truncate = false,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000
);
ALTER TABLE ingest_batches SET (vacuum_truncate = false);
