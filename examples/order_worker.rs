//! An asynchronous order worker: takes `order.accepted` events from the Redis stream with a
//! consumer group, moves each order accepted → working → filled (market orders, and limit
//! orders) and acknowledges the event. Start several with different names; an event whose
//! worker dies before acknowledging is claimed by another after 30 s.
//!
//! ```sh
//! eval "$(bash scripts/services.sh env)"
//! cargo run --release -p christmas-core --example order_worker -- worker-1
//! ```

use christmas_core::orders::{OrderStatus, OrderWorker, OrderWorkerConfig};

#[tokio::main]
async fn main() -> christmas_core::Result<()> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379/".into());
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://christmas@127.0.0.1:55432/christmas".into());
    let name = std::env::args().nth(1).unwrap_or_else(|| "worker-1".into());
    let mut worker = OrderWorker::connect(OrderWorkerConfig::new(redis, db, &name)).await?;
    eprintln!("{name}: waiting for order events (Ctrl-C to stop)");
    loop {
        let event = tokio::select! {
            e = worker.next() => e?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else { continue };
        // Each step moves the order only from the status it expects, so an event handled
        // twice (claimed after a crash) changes nothing the second time.
        let working = worker
            .transition(
                event.order_id,
                &[OrderStatus::Accepted],
                OrderStatus::Working,
            )
            .await?;
        let filled = worker
            .transition(event.order_id, &[OrderStatus::Working], OrderStatus::Filled)
            .await?;
        worker.ack(&event).await?;
        println!(
            "{name}: order {} ({} {} {}) {}{}",
            event.order_id,
            event.order["side"],
            event.order["quantity"],
            event.order["symbol"],
            if working && filled {
                "filled"
            } else {
                "already handled"
            },
            if event.claimed {
                " [claimed from a dead worker]"
            } else {
                ""
            },
        );
    }
}
