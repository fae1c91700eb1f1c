//! Order events over either broker: the same exactly-once test over a Redis stream and a
//! RabbitMQ queue (redelivery and dead letters over both: `either.rs`), and RabbitMQ's own
//! cases: a lost queue, and the broker stopped under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use christmas_core::orders::{OrderDesk, OrderEvent, OrderStatus, OrderWorker, OrderWorkerConfig};
use christmas_tests::{shared_amqp_url, shared_redis_url, unique_name, HttpClient, RabbitNode};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::daemon::Daemon;

use super::*;

/// 8,000 client order ids, 2,000 of them twice, shuffled.
fn ids_with_repeats() -> Vec<String> {
    let mut ids: Vec<String> = (0..8_000).map(|i| format!("c-{i}")).collect();
    ids.extend((0..2_000).map(|i| format!("c-{}", i * 4)));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.swap(i, (state % (i as u64 + 1)) as usize);
    }
    ids
}

/// Posts every id in `ids` from `clients` concurrent clients; each answer as
/// (client order id, status, order id).
pub(super) async fn post_orders(
    client: HttpClient,
    ids: Vec<String>,
    clients: usize,
) -> Vec<(String, u16, i64)> {
    let queue = Arc::new(Mutex::new(ids));
    let results = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (queue, results, client) = (queue.clone(), results.clone(), client.clone());
            tokio::spawn(async move {
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let body = order_json(&id, 2.0).to_string();
                    let answer = client.request("POST", "/api/orders", &[], body).await;
                    let (status, order_id) = match answer {
                        Ok(a) => (
                            a.status,
                            a.json().ok().and_then(|v| v["id"].as_i64()).unwrap_or(-1),
                        ),
                        Err(_) => (0, -1),
                    };
                    results.lock().unwrap().push((id, status, order_id));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let r = results.lock().unwrap().clone();
    r
}

/// Workers consuming `stream` at `events_url`, each moving its batch accepted → filled and
/// acknowledging it; every event they handled, by order id, in the order seen.
pub(super) struct Consumers {
    seen: Arc<Mutex<Vec<i64>>>,
    /// The ids each worker's transition moved (an event delivered twice moves its order once).
    moved: Arc<Mutex<Vec<i64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Consumers {
    async fn start(events_url: &str, db_url: &str, stream: &str, n: usize) -> Consumers {
        Self::start_trusting(events_url, None, db_url, stream, n).await
    }

    /// [`Consumers::start`], over `amqps://` trusting the CA in `tls_ca`.
    pub(super) async fn start_trusting(
        events_url: &str,
        tls_ca: Option<&std::path::Path>,
        db_url: &str,
        stream: &str,
        n: usize,
    ) -> Consumers {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let moved = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..n {
            let mut w = OrderWorker::connect(OrderWorkerConfig {
                stream: stream.into(),
                block: Duration::from_millis(200),
                tls_ca: tls_ca.map(Into::into),
                ..OrderWorkerConfig::new(events_url, db_url, format!("w-{i}"))
            })
            .await
            .unwrap();
            let (seen, moved, stop) = (seen.clone(), moved.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(events) = w.next_batch(256).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if events.is_empty() {
                        continue;
                    }
                    let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
                    let Ok(m) = w
                        .transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Filled)
                        .await
                    else {
                        continue;
                    };
                    moved.lock().unwrap().extend(m);
                    // Counted once acknowledged: an event whose ack failed comes again.
                    if w.ack_many(&events).await.is_ok() {
                        seen.lock().unwrap().extend(ids);
                    }
                }
            }));
        }
        Consumers {
            seen,
            moved,
            stop,
            tasks,
        }
    }

    /// Waits until `n` orders were moved (bounded by `within`), then `quiet` more for a
    /// duplicate to show; stops the workers and returns what they acknowledged and what
    /// they moved.
    pub(super) async fn wait_for(
        self,
        n: usize,
        within: Duration,
        quiet: Duration,
    ) -> (Vec<i64>, Vec<i64>) {
        let start = Instant::now();
        while self.moved.lock().unwrap().len() < n && start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(quiet).await;
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        let moved = self.moved.lock().unwrap().clone();
        (seen, moved)
    }
}

/// 10,000 orders over HTTP, a fifth repeated, events to `events_url`: exactly 8,000 events
/// handled and acknowledged, one per stored order, none twice.
async fn eight_thousand_events_each_once(events_url: String) {
    let stream = unique_name("orders:events");
    let d = Daemon::start(|c| {
        c.orders.events_url = Some(events_url.clone().into());
        c.orders.events_stream = stream.clone();
    })
    .await;
    let consumers = Consumers::start(&events_url, &d.db_url(), &stream, 2).await;
    let results = post_orders(d.client(), ids_with_repeats(), 64).await;
    let created = results.iter().filter(|r| r.1 == 201).count();
    let repeated = results.iter().filter(|r| r.1 == 200).count();
    assert_eq!((created, repeated), (8_000, 2_000));
    let (seen, moved) = consumers
        .wait_for(8_000, Duration::from_secs(60), Duration::from_secs(2))
        .await;
    assert_eq!(moved.len(), 8_000);
    let mut times: HashMap<i64, usize> = HashMap::new();
    for id in &seen {
        *times.entry(*id).or_default() += 1;
    }
    let stored = stored_ids(&d.db).await;
    assert_eq!(stored.len(), 8_000);
    assert_eq!(
        (seen.len(), times.len()),
        (8_000, 8_000),
        "every event once"
    );
    assert!(stored.values().all(|id| times.get(id) == Some(&1)));
    let row =
        d.db.query_one(
            "SELECT count(*) FILTER (WHERE status = 'filled' AND status_changes = 1), \
             (SELECT count(*) FROM order_outbox) FROM orders",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (8_000, 0));
    d.shutdown().await.unwrap();
    if events_url.starts_with("amqp://") {
        delete_queues(&events_url, &stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_orders_a_fifth_repeated_give_eight_thousand_events_each_once_over_redis() {
    eight_thousand_events_each_once(shared_redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_orders_a_fifth_repeated_give_eight_thousand_events_each_once_over_rabbitmq() {
    eight_thousand_events_each_once(shared_amqp_url()).await;
}

/// A fresh database (its URL and a client) and a desk publishing events to `queue` at
/// `amqp`, its config changed by `tune`.
pub(super) async fn amqp_desk(
    amqp: &str,
    queue: &str,
    tune: impl FnOnce(&mut OrderDeskConfig),
) -> (String, tokio_postgres::Client, OrderDesk) {
    let (url, db) = crate::support::fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let mut config = OrderDeskConfig {
        redis_url: Some(amqp.into()),
        events_stream: queue.into(),
        ..OrderDeskConfig::new(&url)
    };
    tune(&mut config);
    (url, db, OrderDesk::start(config).await.unwrap())
}

/// The next event `w` gets within 10 s.
pub(super) async fn next_event(w: &mut OrderWorker) -> OrderEvent {
    for _ in 0..50 {
        if let Some(e) = w.next().await.unwrap() {
            return e;
        }
    }
    panic!("no event within 10 s");
}

/// A channel on the broker at `url`, for looking at queues as a client would.
pub(super) async fn broker_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// Deletes `queue` and its dead-letter queue from the shared node, so runs leave nothing.
pub(super) async fn delete_queues(url: &str, queue: &str) {
    let (_conn, channel) = broker_channel(url).await;
    for q in [queue.to_string(), format!("{queue}.dead")] {
        channel
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .unwrap();
    }
}

/// How many messages wait in `queue`.
pub(super) async fn queue_depth(url: &str, queue: &str) -> u32 {
    let (_conn, channel) = broker_channel(url).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

/// How long the broker stays stopped under load (the figure).
const BROKER_STOPPED: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_under_order_load_loses_no_event_and_sends_none_twice() {
    let mut node = tokio::task::block_in_place(RabbitNode::start).unwrap();
    let amqp = node.url();
    let d = Daemon::start(|c| c.orders.events_url = Some(amqp.clone().into())).await;
    // Workers run across the stop: they reconnect by themselves.
    let consumers = Consumers::start(&amqp, &d.db_url(), "orders:events", 2).await;
    let load_on = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (client, load_on) = (d.client(), load_on.clone());
        // Paced: at most about 200 orders a second, from before the stop until after the
        // broker is back.
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut next = 0;
            while load_on.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (next..next + 20).map(|i| format!("s-{i}")).collect();
                next += 20;
                answers.extend(post_orders(client.clone(), ids, 4).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| node.stop_app()).unwrap();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ready = d.client().get("/ready").await.unwrap().json().unwrap();
    assert_eq!(
        ready["checks"]["order_events"],
        serde_json::json!({"backend": "amqp", "connected": false}),
        "{ready}"
    );
    tokio::time::sleep(BROKER_STOPPED.saturating_sub(stopped_at.elapsed())).await;
    tokio::task::block_in_place(|| node.start_app()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    load_on.store(false, std::sync::atomic::Ordering::Relaxed);
    let answers = load.await.unwrap();
    let created: Vec<i64> = answers.iter().filter(|a| a.1 == 201).map(|a| a.2).collect();
    assert!(answers.len() >= 3_000, "only {} orders sent", answers.len());
    assert_eq!(created.len(), answers.len(), "every order answered 201");
    // Every order answered 201 is stored.
    let stored = stored_ids(&d.db).await;
    let stored_ids: std::collections::HashSet<i64> = stored.values().copied().collect();
    assert_eq!(stored.len(), created.len());
    assert!(created.iter().all(|id| stored_ids.contains(id)));
    let (seen, moved) = consumers
        .wait_for(
            created.len(),
            Duration::from_secs(90),
            Duration::from_secs(2),
        )
        .await;
    // Delivery is at least once: a publish whose confirm the stop cut off is published
    // again from the outbox. Each order is handled once all the same.
    let mut times: HashMap<i64, usize> = HashMap::new();
    for id in &moved {
        *times.entry(*id).or_default() += 1;
    }
    eprintln!(
        "broker stopped for {} s: {} deliveries for {} orders",
        BROKER_STOPPED.as_secs(),
        seen.len(),
        created.len()
    );
    assert_eq!(
        (moved.len(), times.len()),
        (created.len(), created.len()),
        "each order moved once"
    );
    assert!(created.iter().all(|id| times.get(id) == Some(&1)));
    let unique_seen: std::collections::HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique_seen, stored_ids, "every event delivered");
    let left: i64 =
        d.db.query_one("SELECT count(*) FROM order_outbox", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(left, 0, "the outbox emptied");
    let metrics = d.client().get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("christmas_order_events_broker_up{backend=\"amqp\"} 1"),
        "{metrics}"
    );
    d.shutdown().await.unwrap();
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_lost_queue_is_declared_again_and_its_orders_announced_again() {
    let node = tokio::task::block_in_place(RabbitNode::start).unwrap();
    let amqp = node.url();
    let (url, db, desk) = amqp_desk(&amqp, "orders:events", |c| {
        c.events_recheck_after = Duration::from_millis(1_500);
    })
    .await;
    for i in 0..50 {
        desk.submit(new_order(i)).await.unwrap();
    }
    // Confirmed into the queue, then the broker loses the queue.
    let start = Instant::now();
    while desk.metrics().events_published < 50 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(desk.metrics().events_published, 50);
    tokio::task::block_in_place(|| node.delete_queue("orders:events")).unwrap();
    let consumers = Consumers::start(&amqp, &url, "orders:events", 1).await;
    let (seen, _moved) = consumers
        .wait_for(50, Duration::from_secs(20), Duration::from_secs(2))
        .await;
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (50, 50), "{seen:?}");
    assert_eq!(desk.metrics().events_reannounced, 50);
    let filled: i64 = db
        .query_one("SELECT count(*) FROM orders WHERE status = 'filled'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(filled, 50);
    desk.shutdown().await;
    drop(node);
}
