//! Orders over HTTP and through the library: group commit, idempotency under concurrency,
//! validation, reads and cancels, rate limits, a killed connection mid-commit, and workers
//! that crash before acknowledging.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use christmas_core::orders::{
    NewOrder, OrderDesk, OrderDeskConfig, OrderSide, OrderType, OrderWorker, OrderWorkerConfig,
    TimeInForce,
};
use christmas_core::Symbol;
use christmas_tests::RedisServer;
use serde_json::{json, Value};

use crate::support::fresh_core_db;

fn order_json(id: &str, quantity: f64) -> Value {
    json!({"client_order_id": id, "symbol": "ESZ6", "side": "buy", "type": "limit",
           "quantity": quantity, "limit_price": 6000.25, "time_in_force": "gtc"})
}

mod amqps;
mod brokers;
mod commit;
mod either;
mod events;
mod http;

/// Entries in the order-events stream.
fn events_len(redis: &RedisServer) -> u64 {
    redis
        .cli(&["XLEN", "orders:events"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Asserts the workers' consumer group holds no event unacknowledged.
fn assert_nothing_pending(redis: &RedisServer) {
    let pending = redis
        .cli(&["XPENDING", "orders:events", "order-workers"])
        .unwrap();
    assert!(pending.starts_with('0'), "{pending}");
}

/// A Redis of its own, a fresh database (its URL and a client on it) and a desk with events
/// on, its config changed by `tune`.
async fn fresh_tuned_desk(
    tune: impl FnOnce(&mut OrderDeskConfig),
) -> (RedisServer, String, tokio_postgres::Client, OrderDesk) {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let mut config = OrderDeskConfig {
        redis_url: Some(redis.url()),
        ..OrderDeskConfig::new(&url)
    };
    tune(&mut config);
    let desk = OrderDesk::start(config).await.unwrap();
    (redis, url, db, desk)
}

/// A Redis of its own, a fresh database, and a desk with the default config and events on.
async fn fresh_desk_with_events() -> (RedisServer, tokio_postgres::Client, Arc<OrderDesk>) {
    let (redis, _url, db, desk) = fresh_tuned_desk(|_| {}).await;
    (redis, db, Arc::new(desk))
}

/// Every stored order's id, by `client_order_id`.
async fn stored_ids(db: &tokio_postgres::Client) -> HashMap<String, i64> {
    db.query("SELECT client_order_id, id FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Worker `name`, reads blocking at most `block_ms`.
async fn worker(redis: &RedisServer, url: &str, name: &str, block_ms: u64) -> OrderWorker {
    OrderWorker::connect(OrderWorkerConfig {
        block: Duration::from_millis(block_ms),
        ..OrderWorkerConfig::new(redis.url(), url, name)
    })
    .await
    .unwrap()
}

fn new_order(i: usize) -> NewOrder {
    NewOrder {
        account: "desk".into(),
        client_order_id: format!("k-{i}"),
        symbol: Symbol::new("ESZ6").unwrap(),
        side: if i.is_multiple_of(2) {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        },
        order_type: OrderType::Market,
        quantity: 1.0 + (i % 5) as f64,
        limit_price: None,
        time_in_force: TimeInForce::Ioc,
    }
}
