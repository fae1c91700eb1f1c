//! Orders: validated, group-committed, idempotent on `(account, client_order_id)`, and
//! announced to asynchronous workers after commit, through a Redis stream (the default) or
//! a RabbitMQ queue (an `amqp://` events URL, or `amqps://` over TLS).
//!
//! | piece | what |
//! |---|---|
//! | `types` | [`NewOrder`], [`Order`] and their enums: a request and a stored order |
//! | `desk` | [`OrderDesk`]: the API (submit, get, list, cancel, metrics) and its config |
//! | `group_commit` | the writers: one statement per group, a plain `INSERT` first, `ON CONFLICT` after a repeat |
//! | `outbox` | publishing `order.accepted` events from the outbox; the pause after a refusal; the sweep |
//! | `recheck` | the announced ids a desk holds, and the round that announces again orders Redis lost |
//! | `stream` | the events stream as Redis holds it: `XADD`, consumer groups' places, trimming |
//! | `amqp` | the events queue as RabbitMQ holds it: the URL and its TLS roots, quorum queue, pipelined publishes and confirms, the workers' consumer, the dead-letter queue |
//! | `queue` | which of the two an events URL names (`redis://…`, or `amqp://…` / `amqps://…`), behind one type |
//! | `stats` | the desk's counters and histograms |
//! | `worker` | [`OrderWorker`]: consumes `order.accepted` events with a consumer group, claims the ones a dead worker left, moves orders along once |
//!
//! The desk stands on the others; they stand on [`pg`](crate::pg) and
//! [`redis`](crate::redis), and never import the desk.
//!
//! Group commit: submissions queue in a channel; each of the desk's connections takes
//! everything waiting (up to `max_group`) and writes it with one statement,
//! `INSERT … SELECT FROM unnest(…) RETURNING …` (plus the events' outbox rows, in the same
//! statement). One commit (one fsync) answers the whole group, so throughput follows the
//! group size, not the fsync rate. All statements are unnamed (`query_typed`), so
//! PgBouncer in transaction mode works.
//!
//! Repeats: the first try is a plain `INSERT`, which PostgreSQL runs in about two thirds
//! of the time of `ON CONFLICT (account, client_order_id) DO NOTHING`. When a key in the
//! group is already stored, that statement fails as a whole and stores nothing; the group
//! is written again with `ON CONFLICT`, the rows that existed are read back, and the
//! writer keeps `ON CONFLICT` for a second. Repeats inside one group never reach the
//! database: only the first is inserted.

mod amqp;
mod desk;
mod group_commit;
mod outbox;
mod queue;
mod recheck;
mod stats;
mod stream;
mod types;
mod worker;

pub use desk::{CancelOutcome, OrderDesk, OrderDeskConfig, OrderDeskSnapshot, OrderFilter};
pub use types::{NewOrder, Order, OrderSide, OrderStatus, OrderType, SubmitOutcome, TimeInForce};
pub use worker::{OrderEvent, OrderWorker, OrderWorkerConfig};
