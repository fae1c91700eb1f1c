//! An asynchronous order worker: takes `order.accepted` events from the Redis stream with a
//! consumer group, or from the RabbitMQ queue when `CHRISTMAS_ORDERS_EVENTS_URL` is
//! `amqp://…` or `amqps://…` (trusting the CA in `CHRISTMAS_ORDERS_EVENTS_TLS_CA` besides the
//! system's roots, as the daemon does; the old names `ORDER_EVENTS_URL` and
//! `ORDER_EVENTS_TLS_CA` are read too, for one release), moves each order accepted → working → filled (market orders, and limit
//! orders) and acknowledges the events. Start several with different names; events whose
//! worker dies before acknowledging are claimed by another after 30 s.
//!
//! Events come in batches of up to 256: each step of a batch is one `UPDATE` and the
//! acknowledgement one `XACK`, so a busy stream costs a few round trips per batch rather
//! than five per order.
//!
//! ```sh
//! eval "$(bash scripts/services.sh env)"
//! cargo run --release -p christmas-core --example order_worker -- worker-1
//! ```

use christmas_core::orders::{OrderStatus, OrderWorker, OrderWorkerConfig};

/// The steps this worker walks each order through, as (from, to).
const LIFECYCLE: [(OrderStatus, OrderStatus); 2] = [
    (OrderStatus::Accepted, OrderStatus::Working),
    (OrderStatus::Working, OrderStatus::Filled),
];

#[tokio::main]
async fn main() -> christmas_core::Result<()> {
    // The daemon's own precedence: `CHRISTMAS_ORDERS_EVENTS_URL`, else `REDIS_URL`.
    let redis = std::env::var("CHRISTMAS_ORDERS_EVENTS_URL")
        .or_else(|_| std::env::var("ORDER_EVENTS_URL"))
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:56379/".into());
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://christmas@127.0.0.1:55432/christmas".into());
    let name = std::env::args().nth(1).unwrap_or_else(|| "worker-1".into());
    let tls_ca = std::env::var_os("CHRISTMAS_ORDERS_EVENTS_TLS_CA")
        .or_else(|| std::env::var_os("ORDER_EVENTS_TLS_CA"))
        .filter(|p| !p.is_empty())
        .map(Into::into);
    let mut worker = OrderWorker::connect(OrderWorkerConfig {
        tls_ca,
        ..OrderWorkerConfig::new(redis, db, &name)
    })
    .await?;
    eprintln!("{name}: waiting for order events (Ctrl-C to stop)");
    loop {
        let events = tokio::select! {
            e = worker.next_batch(256) => e?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if events.is_empty() {
            continue;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
        // Each step moves an order only from the status it expects, so events handled
        // twice (claimed after a crash) change nothing the second time; `filled` keeps the
        // orders every step moved.
        let mut filled = ids.clone();
        for (from, to) in LIFECYCLE {
            let moved = worker.transition_many(&ids, &[from], to).await?;
            filled.retain(|id| moved.contains(id));
        }
        worker.ack_many(&events).await?;
        for e in &events {
            println!(
                "{name}: order {} ({} {} {}) {}{}",
                e.order_id,
                e.order["side"],
                e.order["quantity"],
                e.order["symbol"],
                if filled.contains(&e.order_id) {
                    "filled"
                } else {
                    "already handled"
                },
                if e.claimed {
                    " [claimed from a dead worker]"
                } else {
                    ""
                },
            );
        }
    }
}
