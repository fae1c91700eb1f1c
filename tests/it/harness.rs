//! The harness itself: private servers really start, crash, recover and isolate; the HTTP
//! client and the in-process daemon work together.

use christmas_ingest::auth::{hash_key, ApiKey};
use christmas_ingest::config::DaemonConfig;
use christmas_tests::{fresh_database, HttpClient, InProcessDaemon, PgServer, RedisServer};
use serde_json::json;

use crate::support::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_server_survives_a_crash_with_its_data() {
    let mut server = tokio::task::block_in_place(PgServer::start).unwrap();
    let client = connect(&server.url()).await;
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    drop(client);
    tokio::task::block_in_place(|| {
        server.kill()?;
        server.start_again()
    })
    .unwrap();
    let client = connect(&server.url()).await;
    let sum: i64 = client
        .query_one("SELECT sum(x) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 6);
}

#[test]
fn redis_server_kill_and_restart() {
    use std::io::{Read, Write};
    let ping = |port: u16| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let mut server = RedisServer::start().unwrap();
    assert_eq!(ping(server.port()).as_deref(), Some("+PONG\r\n"));
    server.kill().unwrap();
    assert_eq!(ping(server.port()), None);
    server.start_again().unwrap();
    assert_eq!(ping(server.port()).as_deref(), Some("+PONG\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_databases_are_separate() {
    let base = christmas_tests::shared_pg_url();
    let a = fresh_database(&base).await.unwrap();
    let b = fresh_database(&base).await.unwrap();
    assert_ne!(a, b);
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_client_talks_to_the_in_process_daemon() {
    let (url, db) = crate::support::fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let config = DaemonConfig {
        database_url: Some(url.into()),
        api_keys: vec![ApiKey::parse(&format!("feed:{}:ingest", hash_key("feed-key"))).unwrap()],
        ..DaemonConfig::default()
    };
    let daemon = InProcessDaemon::start(config, false).await.unwrap();
    // A connection per request and a kept connection answer alike.
    for client in [daemon.client(), HttpClient::keep_alive(daemon.http())] {
        for _ in 0..3 {
            let health = client.get("/health").await.unwrap();
            assert_eq!(health.status, 200);
            assert_eq!(health.json().unwrap()["status"], "ok");
            assert!(health.header("x-request-id").is_some(), "{health:?}");
        }
    }
    // The bearer key goes with the request.
    let ticks = json!([{"kind": "trade", "symbol": "ESZ6", "time_ns": 1_795_600_000_000_000_000i64,
                        "price": 1, "volume": 1}]);
    let path = "/api/ticks?ack=committed";
    let refused = daemon.client().post_json(path, &ticks).await.unwrap();
    assert_eq!(refused.status, 401);
    let taken = daemon
        .client()
        .bearer("feed-key")
        .post_json(path, &ticks)
        .await
        .unwrap();
    assert_eq!(taken.status, 201, "{}", taken.text());
    let metrics = daemon.client().get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("christmas_rows_committed_total{kind=\"trade\"} 1"),
        "{metrics}"
    );
    daemon.stop().await.unwrap();
    assert_eq!(crate::support::count(&db, "market_data").await, 1);
}

#[test]
fn free_addresses_are_loopback_and_bindable() {
    let addr = christmas_tests::free_addr();
    assert!(addr.ip().is_loopback());
    std::net::TcpListener::bind(addr).unwrap();
}
