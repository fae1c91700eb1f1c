//! The spool stage of a shard's pipeline: between the batcher and the writer, on a
//! blocking thread. Appends each sealed batch to the shard's spool, fsyncs by policy,
//! answers durable receipts, and hands the batch on (in memory, or as a file position once
//! the memory budget is spent). See [`crate::spool`].

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::metrics::lock_histograms;
use crate::pipeline::batch::{BatchReport, SealedBatch, SpoolPosition, Waiter};
use crate::pipeline::shard::ShardContext;
use crate::record::Record;
use crate::spool::appender::{Appender, Placed};
use crate::spool::format::{encode_entry, Entry};
use crate::spool::shard_spool::ShardSpool;

/// Durable receipts waiting for the next fsync: the batch each closes, and its waiters.
type Unsynced = Vec<(u64, Vec<Waiter>)>;

/// Runs until the batcher hangs up; then syncs, answers and lets the writer finish.
/// `spool` is the shard's own spool (`shard.spool`); `appender` writes to it.
pub(crate) fn run<R: Record>(
    shard: Arc<ShardContext<R>>,
    spool: Arc<ShardSpool>,
    mut appender: Appender,
    mut rx: mpsc::Receiver<SealedBatch<R>>,
    tx: mpsc::UnboundedSender<SealedBatch<R>>,
) {
    let index = shard.index();
    let send = |mut sealed: SealedBatch<R>| {
        sealed.batch.handed_on_at = shard.clock.now();
        shard.spool_backlog.handed_on();
        tx.send(sealed).is_ok()
    };
    let handle = tokio::runtime::Handle::current();
    let mut unsynced: Unsynced = Vec::new();
    loop {
        let next = match appender.sync_in() {
            None => rx.blocking_recv(),
            Some(wait) if wait.is_zero() => rx.try_recv().ok(),
            Some(wait) => handle
                .block_on(tokio::time::timeout(wait, rx.recv()))
                .unwrap_or_default(),
        };
        let closed = next.is_none() && rx.is_closed() && rx.is_empty();
        if let Some(mut sealed) = next {
            if sealed.batch.rows() > 0 {
                append(&shard, &spool, &mut appender, &mut sealed);
            }
            // Receipts wait for every batch before them: answered at the next fsync (for a
            // batch of receipts only, nothing is appended).
            let waiters = std::mem::take(&mut sealed.batch.durable_waiters);
            if !waiters.is_empty() {
                unsynced.push((sealed.batch.seq, waiters));
            }
            if !send(sealed) {
                tracing::error!(
                    shard = index,
                    "writer stopped; spooled batches wait for the next start"
                );
                return;
            }
        }
        // Receipts with nothing unsynced before them are answered by a no-op sync.
        let answerable = !unsynced.is_empty() && appender.sync_in().is_none();
        if appender.sync_due() || answerable || (closed && appender.sync_in().is_some()) {
            sync_and_answer(&shard, &mut appender, &mut unsynced);
        }
        if closed {
            if let Err(e) = appender.close() {
                tracing::error!(shard = index, error = %e, "closing the spool segment failed");
            }
            return;
        }
    }
}

/// Appends `sealed` to the spool and notes where it went. On failure the batch still goes
/// to PostgreSQL; only its durable promise failed (its durable waiters are answered so).
fn append<R: Record>(
    shard: &ShardContext<R>,
    spool: &Arc<ShardSpool>,
    appender: &mut Appender,
    sealed: &mut SealedBatch<R>,
) {
    let batch = &mut sealed.batch;
    let rows = batch.rows() as u64;
    // The batcher's buffers can have up to twice the room the batch used (they double as it
    // grows); what travels on (and may wait long for PostgreSQL) is cut to size.
    let entry = Entry {
        stream: shard.origin.stream.to_string(),
        shard: shard.index() as u32,
        seq: batch.seq,
        row_ends: std::mem::take(&mut batch.rows.row_ends),
        body: batch.rows.body.to_vec(),
        claims: batch.claims.to_spooled(),
    };
    let encoded = encode_entry(&entry);
    batch.rows.body = bytes::Bytes::from(entry.body);
    batch.rows.row_ends = entry.row_ends;
    batch.rows.row_ends.shrink_to_fit();
    batch.pushed_at.shrink_to_fit();
    if let Some(f) = sealed.fanout.as_mut() {
        f.ticks.shrink_to_fit();
    }
    match encoded.and_then(|e| appender.append(&e)) {
        Ok(placed) => {
            let (entry, memory_bytes, on_disk) = match placed {
                Placed::Memory { entry, bytes } => (entry, bytes, None),
                Placed::Disk(at) => {
                    // The writer reads it back: free the memory now.
                    batch.rows = Default::default();
                    batch.pushed_at = Vec::new();
                    if let (Some(f), Some(q)) = (sealed.fanout.take(), shard.fanout.as_deref()) {
                        crate::metrics::add(&q.counters.spilled, f.ticks.len() as u64);
                    }
                    (at.entry, 0, Some(at))
                }
            };
            batch.spooled = Some(SpoolPosition {
                spool: spool.clone(),
                entry,
                memory_bytes,
                on_disk,
            });
        }
        Err(e) => {
            tracing::error!(shard = shard.index(), seq = batch.seq, rows, error = %e, "spool append failed; the batch goes on unspooled");
            for w in batch.durable_waiters.drain(..) {
                let _ = w.send(Err(Error::Spool {
                    reason: e.to_string(),
                }));
            }
        }
    }
}

/// Fsyncs what was appended, records how long that took and answers the durable receipts
/// waiting for it.
fn sync_and_answer<R>(shard: &ShardContext<R>, appender: &mut Appender, unsynced: &mut Unsynced) {
    let dirty = appender.sync_in().is_some();
    let started = std::time::Instant::now();
    let synced = appender.sync();
    if dirty {
        let took = started.elapsed().as_micros() as u64;
        let _ = lock_histograms(&shard.histograms)
            .stages
            .fsync_us
            .record(took);
    }
    let shard = shard.index();
    let answered_at = std::time::Instant::now();
    for (seq, waiters) in unsynced.drain(..) {
        for w in waiters {
            let answer: Result<BatchReport> = match &synced {
                Ok(()) => Ok(BatchReport {
                    shard,
                    seq,
                    answered_at: Some(answered_at),
                    ..BatchReport::default()
                }),
                Err(e) => Err(Error::Spool {
                    reason: e.to_string(),
                }),
            };
            let _ = w.send(answer);
        }
    }
    if let Err(e) = synced {
        tracing::error!(shard, error = %e, "spool fsync failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::{mpsc, oneshot};

    use crate::clock::PipelineClock;
    use crate::config::IngestorConfig;
    use crate::pipeline::batch::{OpenBatch, SealedBatch};
    use crate::pipeline::shard::ShardContext;
    use crate::record::{Record, Side, Trade};
    use crate::spool::appender::Appender;
    use crate::spool::config::SpoolConfig;
    use crate::spool::scanner::scan_segment;
    use crate::spool::shard_spool::ShardSpool;
    use crate::symbol::Symbol;

    /// A sealed batch of `rows` trades with one durable waiter.
    fn sealed(
        seq: u64,
        rows: u64,
    ) -> (
        SealedBatch<Trade>,
        oneshot::Receiver<crate::Result<super::BatchReport>>,
    ) {
        let mut open = OpenBatch::<Trade>::new(1024, 16, 0, None);
        for i in 0..rows {
            let t = Trade {
                time_ns: 1_719_878_400_000_000_000 + i as i64,
                symbol: Symbol::new("ESU4").expect("valid"),
                price: 1.0 + i as f64,
                volume: 1.0,
                side: Side::Sell,
                exchange_seq: i as i64,
            };
            t.encode_row(&mut open.body);
            open.row_ends.push(open.body.len() as u32);
            open.pushed_at.push(i);
        }
        let (waiter, answer) = oneshot::channel();
        open.durable_waiters.push(waiter);
        let (batch, _) = open.seal(seq, 0);
        (
            SealedBatch {
                batch,
                fanout: None,
            },
            answer,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_answers_durable_and_hands_on() {
        let dir = std::env::temp_dir().join(format!(
            "christmas-spool-stage-{}-{}",
            std::process::id(),
            PipelineClock::new().now()
        ));
        let config = SpoolConfig::new(&dir);
        let (spool, recovered) = ShardSpool::open(&config, Trade::KIND, 0).expect("open");
        let spool = Arc::new(spool);
        let appender = Appender::new(spool.clone(), &recovered);
        let shard = Arc::new(ShardContext::<Trade>::new(
            0,
            "test-0".into(),
            &IngestorConfig::default(),
            PipelineClock::new(),
            None,
            Some(spool.clone()),
        ));
        let (tx, rx) = mpsc::channel(4);
        let (to_writer, mut from_stage) = mpsc::unbounded_channel();
        let stage = {
            let (shard, spool) = (shard.clone(), spool.clone());
            tokio::task::spawn_blocking(move || super::run(shard, spool, appender, rx, to_writer))
        };
        let mut answers = Vec::new();
        for (seq, rows) in [(1, 3), (2, 5), (3, 1)] {
            let (batch, answer) = sealed(seq, rows);
            tx.send(batch).await.expect("stage running");
            answers.push((seq, answer));
        }
        for (seq, answer) in answers {
            let report = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .expect("answered")
                .expect("sent")
                .expect("fsynced");
            assert_eq!(report.seq, seq, "each durable receipt names its batch");
        }
        let mut handed = Vec::new();
        for _ in 0..3 {
            let b = from_stage.recv().await.expect("handed on");
            let at = b.batch.spooled.as_ref().expect("spooled");
            handed.push((b.batch.seq, b.batch.rows(), at.entry));
        }
        assert_eq!(
            handed,
            [(1, 3, 0), (2, 5, 1), (3, 1, 2)],
            "in order, rows intact"
        );
        assert!(
            !shard.spool_backlog.is_empty(),
            "the writer has not taken them"
        );
        drop(tx);
        stage.await.expect("stage");
        let mut entries = 0;
        for file in std::fs::read_dir(dir.join(Trade::KIND).join("shard-0")).expect("dir") {
            let path = file.expect("entry").path();
            if path.extension().is_some_and(|e| e == "seg") {
                let bytes = std::fs::read(&path).expect("segment");
                let (found, valid) = scan_segment(&bytes);
                assert_eq!(valid, bytes.len(), "no torn tail");
                entries += found.len();
            }
        }
        assert_eq!(entries, 3, "every batch is on disk");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
