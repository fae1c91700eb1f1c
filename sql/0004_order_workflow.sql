-- Version 4, both variants: what the order endpoint and its workers need.

-- The workflow: accepted (durable, answered 201) → working → partially_filled / filled,
-- or rejected / cancelled.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('new', 'accepted', 'working', 'partially_filled', 'filled', 'rejected',
                      'cancelled'));
ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'accepted';

-- A hash of the request: the same client_order_id with another body is a conflict (409).
ALTER TABLE orders ADD COLUMN request_hash text NOT NULL DEFAULT '';
-- How many status transitions the order went through (workers move it once per event).
ALTER TABLE orders ADD COLUMN status_changes integer NOT NULL DEFAULT 0;

-- The transactional outbox of order.accepted events: a row is written in the same statement
-- as its order and deleted once the event is in the Redis stream, so an event Redis missed
-- (or a crash between commit and publish) is sent later. A narrow table that stays small,
-- instead of a flag that would rewrite every wide order row.
CREATE TABLE order_outbox (
    order_id   bigint      PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_account_created_idx ON orders (account, created_at DESC);
