//! Idempotent producers through the daemon: an HTTP retry after a timed-out commit, the
//! retry sent to a second daemon while the first holds the batch, bad producer headers, and
//! a TCP feed handler that resends everything unacknowledged after the daemon was killed.

use std::time::Duration;

use christmas_core::frame::{self, AckLevel, FrameTrade, IngestFrame};
use christmas_ingest::config::DaemonConfig;
use christmas_tests::{free_addr, DaemonProcess, InProcessDaemon};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{connect, count, fresh_core_db};

/// `n` trades over 5 symbols as a JSON array.
fn trades(n: i64) -> Vec<u8> {
    let ticks: Vec<Value> = (0..n)
        .map(|k| {
            json!({"kind": "trade", "symbol": format!("P{}", k % 5), "time_ns": 1_795_600_000_000_000_000i64 + k,
                   "price": 100.0 + (k % 8) as f64 * 0.25, "volume": 1, "exchange_seq": k})
        })
        .collect();
    Value::Array(ticks).to_string().into_bytes()
}

async fn daemon_on(url: &str) -> InProcessDaemon {
    let config = DaemonConfig {
        database_url: Some(url.to_string().into()),
        ..DaemonConfig::default()
    };
    InProcessDaemon::start(config, false).await.unwrap()
}

/// Holds `market_data` so nothing commits until the returned transaction ends.
async fn lock_trades(client: &mut tokio_postgres::Client) -> tokio_postgres::Transaction<'_> {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE market_data IN EXCLUSIVE MODE")
        .await
        .unwrap();
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_timed_out_commit_is_stored_once() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let d = daemon_on(&url).await;
    let body = trades(3_000);
    let mut locker = connect(&url).await;
    let lock = lock_trades(&mut locker).await;
    let headers = [("Idempotency-Key", "order-book-load-7f3a")];
    // The client gives up after 500 ms: the commit is held past its timeout.
    let first = tokio::time::timeout(
        Duration::from_millis(500),
        d.client()
            .request("POST", "/api/ticks?ack=committed", &headers, body.clone()),
    )
    .await;
    assert!(first.is_err(), "the commit should still be held");
    // It retries the same request; the lock goes while the retry waits.
    let client2 = d.client();
    let body2 = body.clone();
    let retry = tokio::spawn(async move {
        client2
            .request("POST", "/api/ticks?ack=committed", &headers, body2)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    let retry = retry.await.unwrap();
    assert_eq!(retry.status, 201, "{}", retry.text());
    let v = retry.json().unwrap();
    assert_eq!(
        (v["committed"].as_i64(), v["duplicates"].as_i64()),
        (Some(3_000), Some(3_000))
    );
    // And once more, later: still nothing new.
    let r = d
        .client()
        .request("POST", "/api/ticks?ack=committed", &headers, body)
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["duplicates"], 3_000);
    d.stop().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_to_a_second_daemon_while_the_first_holds_the_batch_is_stored_once() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let (a, b) = (daemon_on(&url).await, daemon_on(&url).await);
    let mut locker = connect(&url).await;
    let lock = lock_trades(&mut locker).await;
    let post = |d: &InProcessDaemon, from: &'static str| {
        let c = d.client();
        tokio::spawn(async move {
            let headers = [("Producer-Id", "feed-nyc-1"), ("Producer-Seq", from)];
            c.request("POST", "/api/ticks?ack=committed", &headers, trades(2_000))
                .await
                .unwrap()
        })
    };
    let first = post(&a, "1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = post(&b, "1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished() && !second.is_finished());
    lock.rollback().await.unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.status, second.status), (201, 201));
    let dup = |r: &christmas_tests::HttpResponse| r.json().unwrap()["duplicates"].as_i64().unwrap();
    assert_eq!(dup(&first) + dup(&second), 2_000);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 2_000);
    let stored: i64 = client
        .query_one("SELECT sum(exchange_seq)::bigint FROM market_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, (0..2_000).sum::<i64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_producer_headers_are_400s_naming_the_header() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let d = daemon_on(&url).await;
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("Producer-Id", "feed")], "Producer-Seq"),
        (&[("Producer-Seq", "1")], "Producer-Id"),
        (
            &[("Producer-Id", "feed"), ("Producer-Seq", "0")],
            "Producer-Seq",
        ),
        (
            &[("Producer-Id", "feed"), ("Producer-Seq", "x")],
            "Producer-Seq",
        ),
        (&[("Producer-Id", "a b"), ("Producer-Seq", "1")], "producer"),
        (
            &[("Idempotency-Key", "k"), ("Producer-Id", "feed")],
            "Idempotency-Key",
        ),
    ];
    for (headers, field) in cases {
        let r = d
            .client()
            .request("POST", "/api/ticks?ack=committed", headers, trades(10))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
        assert_eq!(r.json().unwrap()["field"], field, "{headers:?}");
    }
    d.stop().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 0);
}

fn frame_of(seq: u64, producer_seq: u64, n: u64) -> IngestFrame {
    IngestFrame {
        seq,
        ack: AckLevel::Committed.code(),
        producer: "feed-handler-kill".into(),
        producer_seq,
        trades: (0..n)
            .map(|i| {
                let k = (producer_seq + i) as i64;
                FrameTrade {
                    symbol: format!("K{}", k % 3),
                    time_ns: 1_795_600_000_000_000_000 + k,
                    price: 100.0,
                    volume: 1.0,
                    side: b'B',
                    exchange_seq: k,
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// Sends `frames` of the feed (500 ticks each, pipelined) and returns the frames
/// acknowledged before the connection ended.
async fn feed(tcp: std::net::SocketAddr, frames: Vec<u64>) -> Vec<u64> {
    let stream = TcpStream::connect(tcp).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let expected = frames.len();
    let sender = tokio::spawn(async move {
        for f in frames {
            let bytes = frame::encode_ingest(&frame_of(f, 1 + f * 500, 500)).unwrap();
            if w.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < expected {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).await.is_err() {
            break;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if r.read_exact(&mut body).await.is_err() {
            break;
        }
        let ack = frame::decode_ack(&body).unwrap();
        assert!(ack.ok, "{}", ack.error);
        acked.push(ack.seq);
    }
    sender.abort();
    acked
}

fn spawn_daemon(url: &str, spool: Option<&std::path::Path>) -> DaemonProcess {
    DaemonProcess::spawn(
        &DaemonProcess::binary().unwrap(),
        free_addr(),
        Some(free_addr()),
        |cmd| {
            cmd.env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .env("CHRISTMAS_LINGER_MS", "5");
            if let Some(dir) = spool {
                cmd.env("CHRISTMAS_SPOOL_DIR", dir);
            }
        },
    )
    .unwrap()
}

/// Every one of the feed's 20,000 ticks is stored once.
async fn all_stored_once(client: &tokio_postgres::Client) {
    assert_eq!(count(client, "market_data").await, 20_000);
    let row = client
        .query_one(
            "SELECT count(DISTINCT exchange_seq), sum(exchange_seq)::bigint FROM market_data",
            &[],
        )
        .await
        .unwrap();
    let (distinct, sum): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((distinct, sum), (20_000, (1..=20_000).sum::<i64>()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_handler_resending_what_a_killed_daemon_had_spooled_is_stored_once() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let spool =
        std::env::temp_dir().join(format!("christmas-producer-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let mut locker = connect(&url).await;
    let lock = lock_trades(&mut locker).await;
    let mut first = spawn_daemon(&url, Some(&spool));
    first.wait_ready(Duration::from_secs(30)).await.unwrap();
    // Nothing can commit: the frames are spooled, none is acknowledged as committed, and
    // the daemon is killed with all of them on disk.
    let tcp = first.tcp().unwrap();
    let handler = tokio::spawn(async move { feed(tcp, (0..40).collect()).await });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    first.signal("KILL").unwrap();
    first.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(handler.await.unwrap().is_empty());
    lock.rollback().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 0);
    // The next run recovers the spool while the handler resends all 40 frames.
    let mut second = spawn_daemon(&url, Some(&spool));
    second.wait_ready(Duration::from_secs(30)).await.unwrap();
    let resent = feed(second.tcp().unwrap(), (0..40).collect()).await;
    assert_eq!(resent.len(), 40);
    second.stop().unwrap();
    all_stored_once(&client).await;
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_handler_resending_after_a_kill_9_is_stored_once() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let mut first = spawn_daemon(&url, None);
    first.wait_ready(Duration::from_secs(30)).await.unwrap();
    // 10 frames of 500 ticks acknowledged; then 30 more pipelined while the table is held,
    // and the daemon is killed with them in flight, without a spool: they are lost.
    let acked = feed(first.tcp().unwrap(), (0..10).collect()).await;
    assert_eq!(acked.len(), 10);
    let mut locker = connect(&url).await;
    let lock = lock_trades(&mut locker).await;
    let tcp = first.tcp().unwrap();
    let in_flight = tokio::spawn(async move { feed(tcp, (10..40).collect()).await });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    first.signal("KILL").unwrap();
    first.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(in_flight.await.unwrap().is_empty());
    lock.rollback().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 5_000);
    // It reconnects to a new daemon and resends, under the same producer and in order,
    // every frame not acknowledged and the last five it had (a handler whose bookkeeping
    // of acks lagged): those are stored already and must not be stored again.
    let mut second = spawn_daemon(&url, None);
    second.wait_ready(Duration::from_secs(30)).await.unwrap();
    let resent = feed(second.tcp().unwrap(), (5..40).collect()).await;
    assert_eq!(resent.len(), 35);
    second.stop().unwrap();
    all_stored_once(&client).await;
}
