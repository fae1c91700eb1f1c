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
-- The order.accepted event is in the Redis stream (an outbox flag: unpublished rows are
-- published again until they are).
ALTER TABLE orders ADD COLUMN published boolean NOT NULL DEFAULT false;
-- How many status transitions the order went through (workers move it once per event).
ALTER TABLE orders ADD COLUMN status_changes integer NOT NULL DEFAULT 0;

CREATE INDEX orders_unpublished_idx ON orders (created_at) WHERE NOT published;
CREATE INDEX orders_account_created_idx ON orders (account, created_at DESC);
