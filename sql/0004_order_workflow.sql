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

-- The transactional outbox of order.accepted events: one row per committed group of orders,
-- written in the same statement as the orders and deleted once their events are in the
-- Redis stream, so events Redis missed (or a crash between commit and publish) are sent
-- later. One narrow row per group, instead of a flag rewriting every wide order row.
CREATE TABLE order_outbox (
    group_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_ids  bigint[]    NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_account_created_idx ON orders (account, created_at DESC);
