//! The spool (`ack=durable`): durable receipts, accepting while PostgreSQL is away, what a
//! crash leaves written exactly once at the next start, torn tails, a full spool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use christmas_core::fanout::FanoutConfig;
use christmas_core::spool::{scan_segment, SpoolConfig};
use christmas_core::{Backpressure, Error, Ingestor, MetricsSnapshot, Trade};
use christmas_tests::{PgServer, RedisServer};

use crate::support::{self, connect, count, fresh_core_db, symbols, trade};

fn spool_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(christmas_tests::unique_name(name));
    std::fs::create_dir_all(&dir).expect("spool dir");
    dir
}

/// Every segment file under `dir`, sorted.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A PostgreSQL URL nothing listens on: every batch stays in the spool.
fn nowhere() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    format!("postgres://christmas@127.0.0.1:{port}/christmas?connect_timeout=1")
}

fn small_spool(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 1 << 20,
        max_bytes: 64 << 20,
        ..SpoolConfig::new(dir)
    }
}

/// `n` trades over 20 symbols, in push order per symbol.
fn trades(n: u64) -> Vec<Trade> {
    let syms = symbols(20);
    (0..n).map(|k| trade(syms[(k % 20) as usize], k)).collect()
}

/// Pushes `rows` with `ack=durable` in chunks of `chunk`, each acknowledged before the next.
async fn push_durably(ingestor: &Ingestor<Trade>, rows: &[Trade], chunk: usize) {
    for c in rows.chunks(chunk) {
        ingestor
            .push_durable(c)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
}

/// Sum of `exchange_seq` and count in `market_data`: with distinct seqs, equal sums and
/// counts mean the same rows.
async fn checksum(client: &tokio_postgres::Client) -> (i64, i64) {
    let r = client
        .query_one(
            "SELECT count(*), coalesce(sum(exchange_seq), 0)::bigint FROM market_data",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_receipts_resolve_and_committed_segments_are_deleted() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = spool_dir("spool-basic");
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .batch_max_rows(1_000)
        .spool(small_spool(&dir))
        .start()
        .await
        .unwrap();
    let all = trades(20_000);
    push_durably(&ingestor, &all, 500).await;
    let m = ingestor.metrics();
    let sp = m.spool.clone().expect("spool metrics");
    assert!(sp.appended >= 20, "appended {}", sp.appended);
    assert!(sp.fsyncs >= sp.appended, "every batch fsynced: {sp:?}");
    ingestor.flush().await.unwrap();
    let snap = ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 20_000);
    assert_eq!(
        checksum(&client).await,
        (20_000, (0..20_000).sum::<u64>() as i64)
    );
    let sp = snap.spool.expect("spool metrics");
    assert_eq!(sp.disk_bytes, 0, "committed segments deleted: {sp:?}");
    assert!(segments(&dir).is_empty(), "left: {:?}", segments(&dir));

    // Without a spool, durable is refused before anything is pushed.
    let plain = Ingestor::<Trade>::builder()
        .database_url(&url)
        .start()
        .await
        .unwrap();
    assert!(matches!(
        plain.push_durable(&all[..10]).await,
        Err(Error::Spool { .. })
    ));
    plain.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 20_000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A linger chosen for big commits holds rows nobody waits on for that long, but not
/// receipts: durable ones wait for the spool's fsync (their batch seals within 5 ms), and a
/// committed one's batch seals once the ring has been quiet for 10 ms, since its client
/// waits for the answer before it sends more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_linger_holds_unwaited_rows_but_not_receipts() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = spool_dir("spool-linger");
    let linger = Duration::from_secs(3);
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(1)
        .linger(linger)
        .spool(small_spool(&dir))
        .start()
        .await
        .unwrap();
    let all = trades(1_000);
    let started = std::time::Instant::now();
    push_durably(&ingestor, &all[..900], 100).await;
    let durable = started.elapsed();
    // Nine durable acks one after another: held for the linger, they would take 27 s.
    assert!(durable < linger, "9 durable acks took {durable:?}");
    // Rows nobody waits on stay in the open batch …
    ingestor.push_batch_async(&all[900..950]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early: i64 = client
        .query_one(
            "SELECT count(*) FROM market_data WHERE exchange_seq >= 900",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        early, 0,
        "rows nobody waits on were committed before the linger"
    );
    // … until a committed receipt behind them seals their batch when the ring goes quiet.
    let waited = std::time::Instant::now();
    ingestor
        .push_with_receipt(&all[950..])
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let committed = waited.elapsed();
    assert!(
        committed < linger,
        "a committed ack was held for the linger: {committed:?}"
    );
    ingestor.shutdown().await.unwrap();
    assert_eq!(
        checksum(&client).await,
        (1_000, (0..1_000).sum::<u64>() as i64)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ingestor_per_spool_directory() {
    let (url, _client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = spool_dir("spool-lock");
    let first = Ingestor::<Trade>::builder()
        .database_url(&url)
        .spool(small_spool(&dir))
        .start()
        .await
        .unwrap();
    let second = Ingestor::<Trade>::builder()
        .database_url(&url)
        .spool(small_spool(&dir))
        .start()
        .await;
    match second {
        Err(Error::Spool { reason }) => assert!(reason.contains("in use"), "{reason}"),
        other => panic!("a second ingestor on the same spool: {other:?}"),
    }
    first.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ingestor started on `dir`'s spool, so it writes what a crash left there, then flushed
/// and shut down; its last metrics.
async fn replay_spool(url: &str, dir: &Path) -> MetricsSnapshot {
    let next = Ingestor::<Trade>::builder()
        .database_url(url)
        .shards(2)
        .spool(small_spool(dir))
        .start()
        .await
        .unwrap();
    next.flush().await.unwrap();
    next.shutdown().await.unwrap()
}

/// Runs an ingestor on a runtime of its own, pushes `rows` with durable receipts (all
/// acknowledged), waits for their commit when `commit_first`, then drops the runtime
/// without shutting down: a crash, as far as the pipeline knows.
fn durable_then_crash(url: &str, dir: &Path, rows: &[Trade], commit_first: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ingestor = Ingestor::<Trade>::builder()
            .database_url(url)
            .shards(2)
            .batch_max_rows(1_000)
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
            .spool(small_spool(dir))
            .start()
            .await
            .unwrap();
        push_durably(&ingestor, rows, 700).await;
        if commit_first {
            ingestor.flush().await.unwrap();
        }
        // No shutdown: the runtime goes down with the tasks mid-flight.
        drop(ingestor);
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    // The spool's blocking threads let go of the directory lock.
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_crash_left_in_the_spool_is_written_exactly_once_at_the_next_start() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    support::track_arrival(&client).await;
    let dir = spool_dir("spool-crash");
    let all = trades(30_000);
    // The first half commits; then PostgreSQL is out of reach, so the second half is only
    // in the spool (acknowledged durable) when the process "dies".
    let first = all[..15_000].to_vec();
    let second = all[15_000..].to_vec();
    {
        let (url, dir) = (url.clone(), dir.clone());
        tokio::task::spawn_blocking(move || durable_then_crash(&url, &dir, &first, true))
            .await
            .unwrap();
    }
    let committed = count(&client, "market_data").await;
    assert_eq!(committed, 15_000, "the first run committed its rows");
    {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || durable_then_crash(&nowhere(), &dir, &second, false))
            .await
            .unwrap();
    }
    assert!(!segments(&dir).is_empty(), "the crash left segments");
    assert_eq!(count(&client, "market_data").await, 15_000);

    let snap = replay_spool(&url, &dir).await;
    let sp = snap.spool.clone().unwrap();
    assert!(sp.recovered > 0, "{sp:?}");
    assert_eq!(
        checksum(&client).await,
        (30_000, (0..30_000).sum::<u64>() as i64),
        "every acknowledged row exactly once"
    );
    let (misordered, duplicates) = support::order_violations_and_duplicates(&client).await;
    assert_eq!((misordered, duplicates), (0, 0));
    assert!(segments(&dir).is_empty(), "left: {:?}", segments(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_reported_and_the_rest_is_written() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = spool_dir("spool-torn");
    let nowhere = nowhere();
    let all = trades(10_000);
    {
        let (dir, rows) = (dir.clone(), all.clone());
        tokio::task::spawn_blocking(move || durable_then_crash(&nowhere, &dir, &rows, false))
            .await
            .unwrap();
    }
    let segs = segments(&dir);
    assert!(!segs.is_empty());
    // Tear the last entry of the last segment: a crash in the middle of an append.
    let victim = segs.last().unwrap();
    let bytes = std::fs::read(victim).unwrap();
    let (entries, valid) = scan_segment(&bytes);
    assert_eq!(valid, bytes.len(), "the segment was whole");
    let (offset, len) = *entries.last().unwrap();
    std::fs::write(victim, &bytes[..bytes.len() - 10]).unwrap();
    let torn = 8 + len as u64 - 10;
    assert_eq!(offset + 8 + len as u64, bytes.len() as u64);
    // And garbage after a whole segment's last entry.
    let other = &segs[0];
    if other != victim {
        let mut b = std::fs::read(other).unwrap();
        b.extend_from_slice(b"\x07\x00\x00\x00garbage!");
        std::fs::write(other, b).unwrap();
    }

    let snap = replay_spool(&url, &dir).await;
    let sp = snap.spool.unwrap();
    let garbage = if other != victim { 12 } else { 0 };
    assert_eq!(sp.truncated_bytes, torn + garbage, "{sp:?}");
    let stored = count(&client, "market_data").await;
    assert!(
        (10_000 - 1_000..10_000).contains(&stored),
        "only the torn batch is missing: {stored}"
    );
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) - count(DISTINCT (symbol, exchange_seq)) FROM market_data",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_the_spool_takes_ticks_until_full_then_everything_lands() {
    let mut pg = PgServer::start().unwrap();
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, client) = fresh_core_db(&pg.url()).await;
    drop(client);
    let dir = spool_dir("spool-down");
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig::new(redis.url()))
        .shards(1)
        .batch_max_rows(2_000)
        .batch_max_bytes(256 << 10)
        .ring_capacity(4_096)
        .backpressure(Backpressure::Reject)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .spool(SpoolConfig {
            segment_bytes: 1 << 20,
            max_bytes: 3 << 20,
            memory_bytes: 1 << 20,
            ..SpoolConfig::new(&dir)
        })
        .start()
        .await
        .unwrap();
    pg.stop().unwrap();
    // Push until the spool (3 MiB) and then the ring are full.
    let syms = symbols(20);
    let mut accepted: u64 = 0;
    let mut full = false;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let batch: Vec<Trade> = (accepted..accepted + 500)
            .map(|k| trade(syms[(k % 20) as usize], k))
            .collect();
        match ingestor.push_batch(&batch) {
            Ok(()) => accepted += 500,
            Err(Error::Full { accepted: a, .. }) => {
                accepted += a as u64;
                // The ring also fills when a busy machine leaves the batcher unscheduled
                // for a few milliseconds: full counts only once the spool is.
                if ingestor.metrics().spool.is_some_and(|sp| sp.full_waits > 0) {
                    full = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(full, "a 3 MiB spool cannot take a minute of ticks");
    let sp = ingestor.metrics().spool.unwrap();
    assert!(sp.full_waits > 0, "{sp:?}");
    assert!(sp.disk_bytes <= (3 << 20) + (256 << 10), "{sp:?}");
    // Far more than fits in the ring: the spool held them.
    assert!(accepted > 20_000, "accepted {accepted}");

    pg.start_again().unwrap();
    ingestor.flush().await.unwrap();
    let snap = ingestor.shutdown().await.unwrap();
    let client = connect(&url).await;
    assert_eq!(
        checksum(&client).await,
        (accepted as i64, (0..accepted).sum::<u64>() as i64),
        "everything accepted while PostgreSQL was down, exactly once"
    );
    let sp = snap.spool.unwrap();
    assert!(sp.read_back > 0, "the memory budget was exceeded: {sp:?}");
    assert_eq!(sp.disk_bytes, 0);
    // The batches read back from disk were not fanned out, and are counted as such; the
    // rest were published after their commit.
    let fanout = snap.fanout.unwrap();
    assert!(fanout.spilled > 0, "{fanout:?}");
    assert_eq!(
        fanout.published + fanout.spilled + fanout.dropped,
        accepted,
        "{fanout:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Durable pushes seal a batch every few milliseconds whether or not the writer keeps up.
/// Behind a locked table they queue up, and the writer then commits the queued batches
/// together, exactly once and in order, one ledger row per batch. A queued batch with a row
/// PostgreSQL refuses makes its group fall back to one batch at a time, which dead-letters
/// that row alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_batches_queued_behind_a_stall_commit_together_exactly_once() {
    const CHUNK: usize = 50;
    const CHUNKS: usize = 40;
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    client
        .batch_execute("ALTER TABLE market_data ADD CONSTRAINT positive_price CHECK (price >= 0)")
        .await
        .unwrap();
    support::track_arrival(&client).await;
    let dir = spool_dir("grouped");
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(1)
        .spool(small_spool(&dir))
        .start()
        .await
        .unwrap();
    let all = trades((2 * CHUNK * CHUNKS) as u64);
    let (first, second) = all.split_at(CHUNK * CHUNKS);
    let mut second = second.to_vec();
    let bad = CHUNK * 30 + 7;
    second[bad].price = -1.0;
    let stall = || async {
        let locker = connect(&url).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        locker
    };

    // Phase 1: good rows only. Every chunk is durable while nothing can commit.
    let locker = stall().await;
    push_durably(&ingestor, first, CHUNK).await;
    assert_eq!(
        ingestor.metrics().rows_committed(),
        0,
        "a COPY got past the lock"
    );
    drop(locker);
    ingestor.flush().await.unwrap();
    let m = ingestor.metrics();
    assert!(
        m.grouped_commits() >= 1,
        "no transaction committed queued batches together"
    );
    assert_eq!(m.rows_committed(), first.len() as u64);
    assert!(m.batches_committed() >= CHUNKS as u64);
    let grouped = m.grouped_commits();

    // Phase 2: one bad row among the queued batches.
    let locker = stall().await;
    push_durably(&ingestor, &second, CHUNK).await;
    drop(locker);
    ingestor.flush().await.unwrap();
    let report = ingestor.shutdown().await.unwrap();
    assert_eq!(report.dead_lettered(), 1);
    assert_eq!(report.rows_committed(), all.len() as u64 - 1);
    assert!(report.grouped_commits() >= grouped);
    // One ledger row per batch, whether it committed alone or in a group (the bad batch
    // has more: its split parts and its dead letter).
    let batches_in_ledger = count(
        &client,
        "(SELECT DISTINCT stream, shard, seq FROM ingest_batches) b",
    )
    .await;
    assert_eq!(batches_in_ledger as u64, report.batches_committed());
    assert_eq!(count(&client, "ingest_dead_letters").await, 1);
    // Exactly the good rows, each once, in push order per symbol.
    let good = all.len() as i64 - 1;
    assert_eq!(count(&client, "market_data").await, good);
    let (stored_count, stored_sum) = checksum(&client).await;
    let expected_sum: i64 = first
        .iter()
        .chain(second.iter())
        .filter(|t| t.price >= 0.0)
        .map(|t| t.exchange_seq)
        .sum();
    assert_eq!((stored_sum, stored_count), (expected_sum, good));
    let (misordered, duplicates) = support::order_violations_and_duplicates(&client).await;
    assert_eq!((misordered, duplicates), (0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}
