//! The whole pipeline on the null sink ([`IngestorBuilder::discard`]): what goes in comes
//! out, counted, with receipts answered. No PostgreSQL needed.

use std::time::Duration;

use christmas_core::spool::SpoolConfig;
use christmas_core::{Backpressure, Error, Ingestor, IngestorBuilder, Side, Symbol, Trade};

fn trades(n: u64, symbols: usize) -> Vec<Trade> {
    let names: Vec<Symbol> = (0..symbols)
        .map(|k| Symbol::new(&format!("SYM{k}")).expect("valid"))
        .collect();
    (0..n)
        .map(|i| Trade {
            time_ns: 1_719_878_400_000_000_000 + i as i64,
            symbol: names[i as usize % symbols],
            price: 100.0 + i as f64,
            volume: 1.0,
            side: Side::Buy,
            exchange_seq: i as i64,
        })
        .collect()
}

fn discard() -> IngestorBuilder<Trade> {
    Ingestor::<Trade>::builder()
        .discard()
        .linger(Duration::from_millis(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_pushed_is_committed_once() {
    let ingestor = discard()
        .shards(4)
        .ring_capacity(1024)
        .batch_max_rows(500)
        .start()
        .await
        .expect("start");
    let records = trades(20_000, 16);
    for r in &records {
        ingestor.push(*r).expect("push");
    }
    let report = ingestor.flush().await.expect("flush");
    assert_eq!(report.batches.len(), 4, "one closing batch per shard");
    let snap = ingestor.shutdown().await.expect("shutdown");
    assert_eq!(snap.accepted(), 20_000);
    assert_eq!(snap.rows_committed(), 20_000);
    assert_eq!((snap.dropped(), snap.rejected_full()), (0, 0));
    assert_eq!(snap.ring_depth(), 0);
    let per_shard: u64 = snap.shards.iter().map(|s| s.rows_committed).sum();
    assert_eq!(per_shard, 20_000);
    assert!(
        snap.batches_committed() >= 20_000 / 500,
        "batches hold at most 500 rows: {}",
        snap.batches_committed()
    );
    assert!(matches!(ingestor.push(records[0]), Err(Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_cover_the_shards_pushed_to() {
    let ingestor = discard().shards(8).start().await.expect("start");
    let one_symbol = trades(1_000, 1);
    let report = ingestor
        .push_with_receipt(&one_symbol)
        .await
        .expect("push")
        .wait()
        .await
        .expect("committed");
    assert_eq!(report.batches.len(), 1, "one symbol goes through one shard");
    let shard = ingestor.shard_for(&one_symbol[0]);
    assert_eq!(report.batches[0].shard, shard);
    let snap = ingestor.shutdown().await.expect("shutdown");
    assert_eq!(snap.shards[shard].rows_committed, 1_000);
    assert_eq!(snap.rows_committed(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_counts_what_it_refused() {
    // Two slots: the ring refuses whenever the batcher falls two records behind.
    let ingestor = discard()
        .shards(1)
        .ring_capacity(2)
        .backpressure(Backpressure::Reject)
        .start()
        .await
        .expect("start");
    let records = trades(10_000, 1);
    let mut refused = 0u64;
    for r in &records {
        match ingestor.try_push(*r) {
            Ok(()) => {}
            Err(Error::Full { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let snap = ingestor.shutdown().await.expect("shutdown");
    assert_eq!(snap.rejected_full(), refused);
    assert_eq!(snap.accepted(), 10_000 - refused);
    assert_eq!(
        snap.rows_committed(),
        10_000 - refused,
        "every accepted row is committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_needs_a_spool_and_answers_with_one() {
    let without = discard().start().await.expect("start");
    let some = trades(100, 4);
    assert!(matches!(
        without.push_durable(&some).await,
        Err(Error::Spool { .. })
    ));
    without.shutdown().await.expect("shutdown");

    let dir = std::env::temp_dir().join(format!("christmas-core-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let with = discard()
        .shards(2)
        .spool(SpoolConfig::new(&dir))
        .start()
        .await
        .expect("start");
    let report = with
        .push_durable(&some)
        .await
        .expect("push")
        .wait()
        .await
        .expect("fsynced");
    assert!(!report.batches.is_empty());
    let snap = with.shutdown().await.expect("shutdown");
    assert_eq!(snap.rows_committed(), 100);
    let spool = snap.spool.expect("a spool snapshot");
    assert!(spool.appended >= 1 && spool.fsyncs >= 1, "{spool:?}");
    assert_eq!(
        spool.disk_bytes, 0,
        "committed segments are deleted: {spool:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
