//! The workers' guarantees with one body over either broker: an event a worker dies
//! holding is redelivered and moves its order once; a poison event lands in the
//! dead-letter stream or queue after N attempts with its reason.

use std::time::Duration;

use christmas_core::orders::{OrderStatus, OrderWorker, OrderWorkerConfig, SubmitOutcome};
use christmas_tests::{shared_amqp_url, unique_name};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;

use super::brokers::{amqp_desk, broker_channel, delete_queues, next_event, queue_depth};
use super::*;

/// An events broker of one test's own: a Redis server, or a queue of its own on the shared
/// RabbitMQ node; with what differs between them.
enum Broker {
    Redis(RedisServer),
    Amqp { url: String, queue: String },
}

/// A dead-lettered event: (order id, reason, attempts).
type DeadLetter = (i64, String, i64);

impl Broker {
    fn redis() -> Broker {
        Broker::Redis(tokio::task::block_in_place(RedisServer::start).unwrap())
    }

    fn amqp() -> Broker {
        Broker::Amqp {
            url: shared_amqp_url(),
            queue: unique_name("orders:events"),
        }
    }

    /// A fresh database (its URL and a client) and a desk publishing here.
    async fn desk(&self) -> (String, tokio_postgres::Client, OrderDesk) {
        match self {
            Broker::Redis(redis) => {
                let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
                let config = OrderDeskConfig {
                    redis_url: Some(redis.url()),
                    ..OrderDeskConfig::new(&url)
                };
                (url, db, OrderDesk::start(config).await.unwrap())
            }
            Broker::Amqp { url, queue } => amqp_desk(url, queue, |_| {}).await,
        }
    }

    /// Worker `name` dead-lettering after `attempts`. On Redis it claims what a dead worker
    /// held once idle 300 ms; RabbitMQ redelivers as the dead worker's connection closes.
    async fn worker(&self, db_url: &str, name: &str, attempts: u32) -> OrderWorker {
        let (events_url, stream) = match self {
            Broker::Redis(redis) => (redis.url(), "orders:events".to_string()),
            Broker::Amqp { url, queue } => (url.clone(), queue.clone()),
        };
        OrderWorker::connect(OrderWorkerConfig {
            stream,
            claim_idle: Duration::from_millis(300),
            block: Duration::from_millis(200),
            max_attempts: attempts,
            ..OrderWorkerConfig::new(events_url, db_url, name)
        })
        .await
        .unwrap()
    }

    /// Waits until an event a worker let go of may be taken again.
    async fn until_claimable(&self) {
        if let Broker::Redis(_) = self {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }

    /// Asserts no event waits undelivered or unacknowledged.
    async fn assert_drained(&self) {
        match self {
            Broker::Redis(redis) => assert_nothing_pending(redis),
            Broker::Amqp { url, queue } => assert_eq!(queue_depth(url, queue).await, 0),
        }
    }

    /// The dead-lettered events, taken off the dead-letter stream or queue.
    async fn dead_letters(&self) -> Vec<DeadLetter> {
        match self {
            Broker::Redis(redis) => {
                // redis-cli prints an entry's id, then each field and value on a line.
                let out = redis
                    .cli(&["XRANGE", "orders:events:dead", "-", "+"])
                    .unwrap();
                let lines: Vec<&str> = out.lines().collect();
                let field = |entry: &[&str], name: &str| {
                    let at = entry.iter().position(|l| *l == name).unwrap();
                    entry[at + 1].to_string()
                };
                lines
                    .split(|l| l.contains('-') && l.chars().all(|c| c.is_ascii_digit() || c == '-'))
                    .filter(|entry| !entry.is_empty())
                    .map(|entry| {
                        (
                            field(entry, "order_id").parse().unwrap(),
                            field(entry, "reason"),
                            field(entry, "attempts").parse().unwrap(),
                        )
                    })
                    .collect()
            }
            Broker::Amqp { url, queue } => {
                let (_conn, channel) = broker_channel(url).await;
                let dead = format!("{queue}.dead");
                let mut out = Vec::new();
                while let Some(m) = channel
                    .basic_get(dead.as_str().into(), BasicGetOptions::default())
                    .await
                    .unwrap()
                {
                    let headers = m.delivery.properties.headers().clone().unwrap();
                    let h = headers.inner();
                    let int = |k: &str| match h.get(k) {
                        Some(AMQPValue::LongLongInt(n)) => *n,
                        other => panic!("{k}: {other:?}"),
                    };
                    let reason = match h.get("x-christmas-reason") {
                        Some(AMQPValue::LongString(s)) => {
                            String::from_utf8_lossy(s.as_bytes()).into_owned()
                        }
                        other => panic!("x-christmas-reason: {other:?}"),
                    };
                    let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
                    assert_eq!(
                        body["id"].as_i64(),
                        Some(int("order_id")),
                        "the order's JSON"
                    );
                    out.push((int("order_id"), reason, int("x-christmas-attempts")));
                    m.delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .unwrap();
                }
                out
            }
        }
    }

    /// Removes what the test left on a shared broker.
    async fn clean_up(self) {
        if let Broker::Amqp { url, queue } = &self {
            delete_queues(url, queue).await;
        }
    }
}

async fn an_event_a_worker_dies_holding_is_redelivered_and_moves_the_order_once(broker: Broker) {
    let (url, db, desk) = broker.desk().await;
    let mut a = broker.worker(&url, "a", 5).await;
    let SubmitOutcome::Created(order) = desk.submit(new_order(1)).await.unwrap() else {
        panic!("not created")
    };
    let event = next_event(&mut a).await;
    assert_eq!(
        (event.order_id, event.kind.as_str(), event.claimed),
        (order.id, "order.accepted", false)
    );
    assert_eq!(event.order["client_order_id"], "k-1");
    assert!(a
        .transition(order.id, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap());
    drop(a); // dies mid-task, before acknowledging

    let mut b = broker.worker(&url, "b", 5).await;
    broker.until_claimable().await;
    let again = next_event(&mut b).await;
    assert_eq!((again.order_id, again.claimed), (order.id, true));
    // The step the dead worker already made does not happen twice.
    assert!(!b
        .transition(order.id, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap());
    assert!(b
        .transition(order.id, &[OrderStatus::Working], OrderStatus::Filled)
        .await
        .unwrap());
    b.ack(&again).await.unwrap();
    broker.until_claimable().await;
    assert!(
        b.next().await.unwrap().is_none(),
        "an acknowledged event came back"
    );
    let row = db
        .query_one(
            "SELECT status, status_changes, (SELECT count(*) = 0 FROM order_outbox) \
             FROM orders WHERE id = $1",
            &[&order.id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0).as_str(),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        ("filled", 2, true)
    );
    broker.assert_drained().await;
    desk.shutdown().await;
    broker.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_event_a_worker_dies_holding_is_redelivered_and_moves_the_order_once() {
    an_event_a_worker_dies_holding_is_redelivered_and_moves_the_order_once(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_an_event_a_worker_dies_holding_is_redelivered_and_moves_the_order_once() {
    an_event_a_worker_dies_holding_is_redelivered_and_moves_the_order_once(Broker::amqp()).await;
}

async fn a_poison_event_is_dead_lettered_after_n_attempts(broker: Broker) {
    let (url, _db, desk) = broker.desk().await;
    let mut w = broker.worker(&url, "w", 3).await;
    let SubmitOutcome::Created(order) = desk.submit(new_order(7)).await.unwrap() else {
        panic!("not created")
    };
    let mut attempts = 0;
    loop {
        let e = next_event(&mut w).await;
        assert_eq!(e.order_id, order.id);
        attempts += 1;
        if w.reject(&e, "venue refuses symbol ESZ6").await.unwrap() {
            break;
        }
        assert!(
            attempts < 3,
            "still not dead-lettered after {attempts} attempts"
        );
        broker.until_claimable().await;
    }
    assert_eq!(attempts, 3);
    broker.until_claimable().await;
    assert!(
        w.next().await.unwrap().is_none(),
        "the poison event came back"
    );
    broker.assert_drained().await;
    assert_eq!(
        broker.dead_letters().await,
        vec![(order.id, "venue refuses symbol ESZ6".to_string(), 3)]
    );
    desk.shutdown().await;
    broker.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_poison_event_lands_in_the_dead_letter_stream_after_n_attempts() {
    a_poison_event_is_dead_lettered_after_n_attempts(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_poison_event_lands_in_the_dead_letter_queue_after_n_attempts() {
    a_poison_event_is_dead_lettered_after_n_attempts(Broker::amqp()).await;
}
