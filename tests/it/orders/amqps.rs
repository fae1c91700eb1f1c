//! Order events over `amqps://`: the daemon publishes through RabbitMQ's TLS listener and
//! workers consume there, trusting a private CA; a CA that did not sign the broker's
//! certificate fails at once with a TLS error, and a CA file that cannot serve is refused
//! before anything connects.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use christmas_core::orders::{OrderWorker, OrderWorkerConfig, SubmitOutcome};
use christmas_core::{AmqpErrorKind, Error};
use christmas_tests::{shared_amqps, unique_name};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;

use super::brokers::{post_orders, Consumers};
use super::*;
use crate::daemon::Daemon;

/// The certificate of a CA that signed nothing the tests use.
fn unrelated_ca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/unrelated-ca.pem")
}

/// A channel on the broker's TLS listener, trusting `ca`.
async fn tls_channel(url: &str, ca: &Path) -> (lapin::Connection, lapin::Channel) {
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: Some(std::fs::read_to_string(ca).unwrap()),
    };
    let conn = lapin::Connection::connect_with_config(
        url,
        lapin::ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// How many events wait in `queue`; then deletes it and its dead-letter queue.
async fn drain_and_delete(url: &str, ca: &Path, queue: &str) -> u32 {
    let (_conn, channel) = tls_channel(url, ca).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let waiting = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap()
        .message_count();
    for q in [queue.to_string(), format!("{queue}.dead")] {
        channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_orders_events_reach_workers_over_tls_each_once() {
    let (amqps, ca) = shared_amqps();
    let stream = unique_name("orders:events");
    let d = Daemon::start(|c| {
        c.orders.events_url = Some(amqps.clone().into());
        c.orders.events_tls_ca = Some(ca.display().to_string());
        c.orders.events_stream = stream.clone();
    })
    .await;
    let consumers = Consumers::start_trusting(&amqps, Some(&ca), &d.db_url(), &stream, 2).await;
    let ids: Vec<String> = (0..500).map(|i| format!("t-{i}")).collect();
    let answers = post_orders(d.client(), ids, 16).await;
    assert!(
        answers.iter().all(|a| a.1 == 201),
        "every order answered 201"
    );
    let (seen, moved) = consumers
        .wait_for(500, Duration::from_secs(30), Duration::from_secs(1))
        .await;
    let stored = stored_ids(&d.db).await;
    assert_eq!(stored.len(), 500);
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!((seen.len(), unique.len(), moved.len()), (500, 500, 500));
    assert!(stored.values().all(|id| unique.binary_search(id).is_ok()));
    let ready = d.client().get("/ready").await.unwrap().json().unwrap();
    assert_eq!(
        ready["checks"]["order_events"],
        serde_json::json!({"backend": "amqp", "connected": true}),
        "{ready}"
    );
    d.shutdown().await.unwrap();
    assert_eq!(drain_and_delete(&amqps, &ca, &stream).await, 0);
}

/// What connecting a worker to the TLS listener trusting `tls_ca` comes to, and how long
/// it took.
async fn worker_trusting(
    tls_ca: Option<PathBuf>,
) -> (christmas_core::Result<OrderWorker>, Duration) {
    let (amqps, _ca) = shared_amqps();
    let (url, _db) = crate::support::fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let started = Instant::now();
    let w = OrderWorker::connect(OrderWorkerConfig {
        stream: unique_name("orders:events"),
        tls_ca,
        ..OrderWorkerConfig::new(&amqps, &url, "w")
    })
    .await;
    (w, started.elapsed())
}

/// Asserts `w` failed with a TLS error that says the certificate was not trusted.
fn assert_untrusted(w: christmas_core::Result<OrderWorker>, took: Duration) {
    match w {
        Err(Error::Amqp {
            kind: AmqpErrorKind::Tls,
            reason,
            ..
        }) => {
            assert!(reason.contains("certificate"), "{reason}");
            assert!(reason.contains("CA"), "{reason}");
        }
        Err(e) => panic!("not a TLS error: {e}"),
        Ok(_) => panic!("connected through a certificate nobody trusted"),
    }
    // Refused by the handshake, not by the 5 s connect timeout.
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_a_wrong_ca_fails_at_once_with_a_tls_error() {
    let (w, took) = worker_trusting(Some(unrelated_ca())).await;
    assert_untrusted(w, took);
    // The system's roots alone do not know the private CA either.
    let (w, took) = worker_trusting(None).await;
    assert_untrusted(w, took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_a_desk_with_a_wrong_ca_keeps_its_events_in_the_outbox() {
    let (amqps, ca) = shared_amqps();
    let stream = unique_name("orders:events");
    let (url, db) = crate::support::fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = OrderDesk::start(OrderDeskConfig {
        redis_url: Some(amqps.clone()),
        events_tls_ca: Some(unrelated_ca()),
        events_stream: stream.clone(),
        ..OrderDeskConfig::new(&url)
    })
    .await
    .unwrap();
    let SubmitOutcome::Created(_) = desk.submit(new_order(1)).await.unwrap() else {
        panic!("not created")
    };
    let start = Instant::now();
    while desk.metrics().event_failures == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = desk.metrics();
    assert!(m.event_failures > 0 && !m.events_broker_up, "{m:?}");
    assert_eq!(m.events_published, 0);
    let outbox: i64 = db
        .query_one("SELECT count(*) FROM order_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outbox, 1, "the event waits in the outbox");
    desk.shutdown().await;
    // Nothing reached the broker: the queue was never declared.
    let (_conn, channel) = tls_channel(&amqps, &ca).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(stream.as_str().into(), passive, FieldTable::default())
        .await;
    assert!(declared.is_err(), "the queue exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_a_ca_file_that_cannot_serve_is_refused_before_connecting() {
    let (amqps, ca) = shared_amqps();
    let db = christmas_tests::shared_pg_url();
    let refused = |url: &str, tls_ca: PathBuf| {
        let config = OrderWorkerConfig {
            tls_ca: Some(tls_ca),
            ..OrderWorkerConfig::new(url, &db, "w")
        };
        async move {
            match OrderWorker::connect(config).await {
                Err(Error::Config { field, reason }) => format!("{field}: {reason}"),
                Err(e) => panic!("not a config error: {e}"),
                Ok(_) => panic!("connected"),
            }
        }
    };
    let missing = refused(&amqps, PathBuf::from("/nonexistent/ca.pem")).await;
    assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
    let not_pem = refused(
        &amqps,
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .await;
    assert!(not_pem.contains("no PEM certificate"), "{not_pem}");
    let plain = refused("amqp://guest:guest@127.0.0.1:1/%2f", ca.clone()).await;
    assert!(plain.contains("amqps://"), "{plain}");
    let redis = refused("redis://127.0.0.1:1/", ca).await;
    assert!(redis.contains("amqps://"), "{redis}");
}
