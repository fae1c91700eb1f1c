//! The core pipeline when PostgreSQL misbehaves: killed connections, a restarted server,
//! a stalled table. Nothing acknowledged is lost, nothing is written twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use christmas_core::{Backpressure, Error, Ingestor, Trade};

use crate::support::{self, connect, count, fresh_core_db, symbols, trade};

/// Pushes `total` trades over `symbols` symbols at roughly `per_ms` trades per millisecond.
async fn paced_push(ingestor: Ingestor<Trade>, total: u64, per_ms: u64) {
    let syms = symbols(50);
    let mut next = vec![0u64; syms.len()];
    let mut sent = 0;
    while sent < total {
        for _ in 0..per_ms.min(total - sent) {
            let s = (sent as usize * 13) % syms.len();
            ingestor.push_async(trade(syms[s], next[s])).await.unwrap();
            next[s] += 1;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn assert_exactly(client: &tokio_postgres::Client, total: i64) {
    assert_eq!(
        count(client, "market_data").await,
        total,
        "rows lost or duplicated"
    );
    let (misordered, duplicates) = support::order_violations_and_duplicates(client).await;
    assert_eq!(duplicates, 0, "duplicated rows");
    assert_eq!(misordered, 0, "rows out of push order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_lose_and_duplicate_nothing() {
    const TOTAL: u64 = 200_000;
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    support::track_arrival(&client).await;
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .batch_max_rows(2_000)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let stream = ingestor.stream().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let done = done.clone();
        let admin = connect(&url).await;
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(37)).await;
                let n: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name LIKE 'christmas-' || $1 || '%') t",
                        &[&stream],
                    )
                    .await
                    .unwrap()
                    .get(0);
                killed += n;
            }
            killed
        })
    };
    paced_push(ingestor.clone(), TOTAL, 200).await;
    ingestor.flush().await.unwrap();
    done.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    let report = ingestor.shutdown().await.unwrap();
    assert!(killed >= 5, "the test killed only {killed} backends");
    assert!(
        report.connects() > report.shards.len() as u64,
        "the writers never reconnected after their backends were killed"
    );
    assert_eq!(report.rows_committed(), TOTAL);
    assert_exactly(&client, TOTAL as i64).await;
    // Every batch (including ones resolved by the ledger) has exactly one ledger row.
    let batches: i64 = client
        .query_one("SELECT count(*) FROM ingest_batches", &[])
        .await
        .unwrap()
        .get(0);
    let sum_rows: i64 = client
        .query_one("SELECT sum(rows)::bigint FROM ingest_batches", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(batches as u64, report.batches_committed());
    assert_eq!(sum_rows, TOTAL as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_lose_and_duplicate_nothing() {
    const TOTAL: u64 = 150_000;
    let mut server = christmas_tests::PgServer::start().expect("start a private PostgreSQL");
    let (url, client) = fresh_core_db(&server.url()).await;
    support::track_arrival(&client).await;
    drop(client);
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .batch_max_rows(2_000)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let pusher = tokio::spawn(paced_push(ingestor.clone(), TOTAL, 100));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A clean restart, then a crash (immediate stop) and recovery, both under load.
    tokio::task::block_in_place(|| server.restart()).expect("restart PostgreSQL");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| {
        server.kill()?;
        std::thread::sleep(Duration::from_millis(500));
        server.start_again()
    })
    .expect("crash and recover PostgreSQL");
    pusher.await.unwrap();
    ingestor.flush().await.unwrap();
    let report = ingestor.shutdown().await.unwrap();
    // Whether a commit was in flight at the very moment the server went is timing; that the
    // writers had to reconnect is not.
    assert!(
        report.connects() > 2,
        "the writers never reconnected: the outages missed the run"
    );
    assert_eq!(report.rows_committed(), TOTAL);
    let client = connect(&url).await;
    assert_exactly(&client, TOTAL as i64).await;
}

/// One shard, a ring of `ring` records, batches of 8, one batch in flight: a pipeline that
/// fills up fast.
async fn tiny_pipeline(url: &str, ring: usize, policy: Backpressure) -> Ingestor<Trade> {
    Ingestor::<Trade>::builder()
        .database_url(url)
        .shards(1)
        .ring_capacity(ring)
        .batch_max_rows(8)
        .in_flight_batches(1)
        .linger(Duration::from_millis(1))
        .backpressure(policy)
        .start()
        .await
        .unwrap()
}

/// Holds an exclusive lock on `market_data` so every COPY waits: a stalled database.
async fn stall(url: &str) -> tokio_postgres::Client {
    let locker = connect(url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_reject_and_block() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let ingestor = tiny_pipeline(&url, 16, Backpressure::Reject).await;
    let locker = stall(&url).await;
    let syms = symbols(4);
    // try_push fills the pipeline then reports Full; how much fits is bounded by the ring
    // plus the batches in flight, whatever the database does.
    let mut accepted = 0u64;
    let mut full = None;
    for k in 0..10_000u64 {
        match ingestor.try_push(trade(syms[k as usize % 4], k)) {
            Ok(()) => accepted += 1,
            Err(e) => {
                full = Some(e);
                break;
            }
        }
        if k % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert!(
        matches!(
            full,
            Some(Error::Full {
                shard: 0,
                capacity: 16,
                ..
            })
        ),
        "{full:?}"
    );
    assert!(
        accepted <= 16 + 3 * 8,
        "{accepted} records buffered past the bound"
    );
    // push under Reject refuses too; metrics count both.
    assert!(matches!(
        ingestor.push(trade(syms[0], 99_999)),
        Err(Error::Full { .. })
    ));
    let m = ingestor.metrics();
    assert!(m.rejected_full() >= 2);
    assert!(m.ring_depth() <= 16);

    drop(locker); // the lock's transaction ends with the connection
    ingestor.flush().await.unwrap();
    assert_eq!(count(&client, "market_data").await, accepted as i64);
    ingestor.shutdown().await.unwrap();

    // Block: push_async waits while the table is locked and completes once it is not.
    let blocking = tiny_pipeline(&url, 16, Backpressure::Block).await;
    let locker = stall(&url).await;
    let pusher = {
        let blocking = blocking.clone();
        let syms = syms.clone();
        tokio::spawn(async move {
            for k in 0..500u64 {
                blocking
                    .push_async(trade(syms[k as usize % 4], 100_000 + k))
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pusher.is_finished(), "push_async did not wait for space");
    assert!(blocking.metrics().ring_depth() <= 16);
    drop(locker);
    tokio::time::timeout(Duration::from_secs(30), pusher)
        .await
        .expect("push_async resumed")
        .unwrap();
    blocking.flush().await.unwrap();
    blocking.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, accepted as i64 + 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_drop_oldest_counts_every_drop() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let ingestor = tiny_pipeline(&url, 32, Backpressure::DropOldest).await;
    let locker = stall(&url).await;
    let syms = symbols(4);
    const PUSHED: u64 = 20_000;
    for k in 0..PUSHED {
        ingestor.push(trade(syms[k as usize % 4], k)).unwrap();
        assert!(ingestor.metrics().ring_depth() <= 32);
    }
    let during = ingestor.metrics();
    assert!(
        during.dropped() > PUSHED - 100,
        "only {} dropped",
        during.dropped()
    );
    drop(locker);
    let report = ingestor.shutdown().await.unwrap();
    // Every record pushed was either committed or counted as dropped.
    assert_eq!(report.accepted(), PUSHED);
    assert_eq!(report.rows_committed() + report.dropped(), PUSHED);
    assert_eq!(
        count(&client, "market_data").await as u64,
        report.rows_committed()
    );
    // The survivors are the newest records of the ring, so the very last push is in.
    let last: i64 = client
        .query_one("SELECT max(exchange_seq) FROM market_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last as u64, PUSHED - 1);
}
