//! The Citus variant under faults: worker and coordinator backends killed, a worker
//! restarted, while the engine ingests; every tick stored once. `#[ignore]`d like the rest of
//! the Citus tests (`citus.rs`), which make the databases these use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use christmas_core::schema;
use christmas_core::{Ingestor, MetricsSnapshot, Trade};
use tokio_postgres::Client;

use crate::support::{connect, count, symbols, trade};

use super::citus::{citus_keep_everything, duplicates, nodes_holding_market_data, CitusDb};

/// `db` migrated (retention off) and an ingestor of 2 shards, batches of at most 2,000 rows,
/// reconnecting within 10-200 ms.
async fn migrated_with_ingestor(db: &CitusDb) -> (Client, Ingestor<Trade>) {
    schema::migrate_url(&db.url, &citus_keep_everything())
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&db.url)
        .shards(2)
        .batch_max_rows(2_000)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    (connect(&db.url).await, ingestor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_ingests_exactly_once_while_worker_backends_are_killed() {
    const TOTAL: u64 = 100_000;
    let db = CitusDb::new().await;
    let (client, ingestor) = migrated_with_ingestor(&db).await;
    let stream = ingestor.stream().to_string();
    let done = Arc::new(AtomicBool::new(false));
    // Kills the coordinator's connections to the workers (every client backend of the
    // test database on each worker) and, every third round, the engine's own backends on
    // the coordinator: a batch fails before, during and after its two-phase commit.
    let killer = {
        let done = done.clone();
        let mut admins = Vec::new();
        for w in &db.workers {
            admins.push(connect(w).await);
        }
        let coordinator = connect(&db.url).await;
        tokio::spawn(async move {
            let (mut on_workers, mut on_coordinator) = (0i64, 0i64);
            let mut round = 0u64;
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(41)).await;
                round += 1;
                for admin in &admins {
                    let n: i64 = admin
                        .query_one(
                            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid)
                               FROM pg_stat_activity
                              WHERE datname = current_database() AND pid <> pg_backend_pid()
                                AND backend_type = 'client backend') t",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    on_workers += n;
                }
                if round.is_multiple_of(3) {
                    let n: i64 = coordinator
                        .query_one(
                            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid)
                               FROM pg_stat_activity
                              WHERE application_name LIKE 'christmas-' || $1 || '%') t",
                            &[&stream],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    on_coordinator += n;
                }
            }
            (on_workers, on_coordinator)
        })
    };
    let next = push_paced(&ingestor, TOTAL).await;
    ingestor.flush().await.unwrap();
    done.store(true, Ordering::SeqCst);
    let (on_workers, on_coordinator) = killer.await.unwrap();
    let report = ingestor.shutdown().await.unwrap();
    assert!(on_workers >= 5, "killed only {on_workers} worker backends");
    assert!(on_coordinator >= 1, "killed no coordinator backend");
    assert_stored_exactly(&db, &client, &[&report], &next).await;
}

/// Pushes `total` trades over 50 symbols, 100 per millisecond; how many each symbol got.
async fn push_paced(ingestor: &Ingestor<Trade>, total: u64) -> Vec<u64> {
    push_paced_from(ingestor, total, &[0; 50]).await
}

/// [`push_paced`] continuing from `start[s]` trades of each symbol; the new counts.
async fn push_paced_from(ingestor: &Ingestor<Trade>, total: u64, start: &[u64]) -> Vec<u64> {
    let syms = symbols(start.len());
    let mut next = start.to_vec();
    let mut sent = 0u64;
    while sent < total {
        for _ in 0..100 {
            let s = (sent as usize * 13) % syms.len();
            ingestor.push_async(trade(syms[s], next[s])).await.unwrap();
            next[s] += 1;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    next
}

/// Every pushed trade stored once (`next[s]` of symbol `s`, sequences 0 .. next[s]), one
/// ledger row per batch committed, and no prepared transaction left on a worker.
async fn assert_stored_exactly(
    db: &CitusDb,
    client: &Client,
    reports: &[&MetricsSnapshot],
    next: &[u64],
) {
    let total: u64 = next.iter().sum();
    let committed: u64 = reports.iter().map(|r| r.rows_committed()).sum();
    assert_eq!(committed, total);
    // A commit whose COMMIT PREPARED on a worker was cut off is decided (the coordinator
    // recorded it) but its rows show on that worker only once Citus recovers the prepared
    // transaction (every citus.recover_2pc_interval): recover now rather than wait.
    assert!(count(client, "market_data").await <= total as i64);
    client
        .batch_execute("SELECT recover_prepared_transactions()")
        .await
        .unwrap();
    assert_eq!(count(client, "market_data").await, total as i64);
    assert_eq!(duplicates(client).await, 0);
    let row = client
        .query_one(
            "SELECT count(*), coalesce(sum(rows), 0)::bigint FROM ingest_batches",
            &[],
        )
        .await
        .unwrap();
    let (batches, rows): (i64, i64) = (row.get(0), row.get(1));
    let batches_committed: u64 = reports.iter().map(|r| r.batches_committed()).sum();
    assert_eq!(batches as u64, batches_committed);
    assert_eq!(rows, total as i64);
    let syms = symbols(next.len());
    let per_symbol: Vec<(String, i64, i64)> = client
        .query(
            "SELECT symbol, count(*), max(exchange_seq) FROM market_data GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(per_symbol.len(), syms.len());
    for (i, (sym, n, max)) in per_symbol.iter().enumerate() {
        assert_eq!(sym, syms[i].as_str());
        assert_eq!(*n as u64, next[i], "{sym}");
        assert_eq!(*max as u64 + 1, next[i], "{sym}");
    }
    for w in &db.workers {
        let left: i64 = connect(w)
            .await
            .query_one(
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "prepared transactions left on {w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_ingests_exactly_once_through_a_worker_restart() {
    const TOTAL: u64 = 60_000;
    let Ok(restart) = std::env::var("CHRISTMAS_CITUS_RESTART_WORKER") else {
        println!("skipped: CHRISTMAS_CITUS_RESTART_WORKER (scripts/citus.sh env) is not set");
        return;
    };
    let db = CitusDb::alone().await;
    let (client, ingestor) = migrated_with_ingestor(&db).await;
    // A worker restarts (fast shutdown: its connections cut mid-COPY or mid-commit) a third
    // of the way in, and again two thirds in.
    let restarter = tokio::spawn(async move {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&restart)
                .status()
                .await
                .unwrap();
            assert!(status.success(), "{restart}: {status}");
        }
    });
    let next = push_paced(&ingestor, TOTAL).await;
    ingestor.flush().await.unwrap();
    restarter.await.unwrap();
    let report = ingestor.shutdown().await.unwrap();
    assert!(
        report.retries() > 0,
        "no batch was retried: the restarts missed the load"
    );
    assert_stored_exactly(&db, &client, &[&report], &next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_ingests_exactly_once_through_a_cut_link_to_a_worker() {
    const TOTAL: u64 = 60_000;
    let (Ok(cut), Ok(heal)) = (
        std::env::var("CHRISTMAS_CITUS_CUT_WORKER"),
        std::env::var("CHRISTMAS_CITUS_HEAL_WORKER"),
    ) else {
        println!(
            "skipped: CHRISTMAS_CITUS_CUT_WORKER and _HEAL_WORKER are not set (scripts/citus.sh \
             env sets them when the nodes run in network namespaces)"
        );
        return;
    };
    let db = CitusDb::alone().await;
    let (client, ingestor) = migrated_with_ingestor(&db).await;
    // A third of the way in, the worker's link goes down for 3 s: no reset, no refusal,
    // packets just stop, mid-COPY or mid-commit, then flow again.
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for command in [&cut, &heal] {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .status()
                .await
                .unwrap();
            assert!(status.success(), "{command}: {status}");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    let started = std::time::Instant::now();
    let next = push_paced(&ingestor, TOTAL).await;
    ingestor.flush().await.unwrap();
    // The last batches could not commit before the link came back.
    let flushed = started.elapsed();
    cutter.await.unwrap();
    assert!(
        flushed >= Duration::from_secs(3),
        "flushed in {flushed:?}: the cut missed the load"
    );
    let report = ingestor.shutdown().await.unwrap();
    assert_stored_exactly(&db, &client, &[&report], &next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_adds_a_worker_and_rebalances_while_the_engine_writes() {
    // The tables have no primary key, so Citus's default (logical replication where there
    // is one) refuses to move them; `block_writes` holds the writes to a shard while it is
    // copied, and the engine's batches wait for it.
    rebalance_while_writing("block_writes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_moves_shards_by_logical_replication_while_the_engine_writes() {
    // `force_logical` copies a shard while it takes writes and replays them after: the
    // engine only inserts, which needs no replica identity.
    rebalance_while_writing("force_logical").await;
}

/// A worker added and the shards rebalanced with `mode` (a `shard_transfer_mode`) while
/// trades keep coming; every trade stored once, on both workers.
async fn rebalance_while_writing(mode: &str) {
    // One worker at first; the other has the database and the extension, not yet added.
    let db = CitusDb::alone_adding(1).await;
    assert!(
        db.workers.len() >= 2,
        "needs a Citus cluster with two workers"
    );
    let base = std::env::var("CHRISTMAS_CITUS_URL").unwrap();
    let row = connect(&base)
        .await
        .query_one(
            "SELECT nodename, nodeport FROM pg_dist_node
              WHERE groupid > 0 AND noderole = 'primary'
              ORDER BY nodename, nodeport OFFSET 1 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (host, port): (String, i32) = (row.get(0), row.get(1));
    let (client, ingestor) = migrated_with_ingestor(&db).await;
    assert_eq!(nodes_holding_market_data(&client).await, 1);
    // The worker joins and takes half the shards while trades keep coming.
    let moved = AtomicBool::new(false);
    let rebalance = async {
        let admin = connect(&db.url).await;
        while count(&admin, "market_data").await < 10_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        admin
            .execute("SELECT citus_add_node($1, $2)", &[&host, &port])
            .await
            .unwrap();
        let job: Option<i64> = tokio::time::timeout(
            Duration::from_secs(120),
            admin.query_one(
                "SELECT citus_rebalance_start(shard_transfer_mode => $1::text::citus.shard_transfer_mode)",
                &[&mode],
            ),
        )
        .await
        .expect("citus_rebalance_start took over 2 minutes")
        .unwrap()
        .get(0);
        assert!(job.is_some(), "no rebalance job was scheduled");
        tokio::time::timeout(
            Duration::from_secs(120),
            admin.batch_execute("SELECT citus_rebalance_wait()"),
        )
        .await
        .expect("the rebalance took over 2 minutes")
        .unwrap();
        moved.store(true, Ordering::SeqCst);
    };
    let push = async {
        // Until the rebalance is done, then as many again as before it.
        let mut next = vec![0u64; 50];
        while !moved.load(Ordering::SeqCst) {
            next = push_paced_from(&ingestor, 5_000, &next).await;
        }
        let during: u64 = next.iter().sum();
        push_paced_from(&ingestor, during.min(50_000), &next).await
    };
    let ((), next) = tokio::join!(rebalance, push);
    ingestor.flush().await.unwrap();
    let report = ingestor.shutdown().await.unwrap();
    assert_eq!(
        nodes_holding_market_data(&client).await,
        2,
        "the shards did not spread"
    );
    assert_stored_exactly(&db, &client, &[&report], &next).await;
}
