//! The shard batcher: drains a ring, encodes records straight into a binary `COPY` body,
//! and seals batches on rows, bytes or linger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::Error;
use crate::fanout::publisher::{FanoutBatch, SymbolSequences};
use crate::pipeline::batch::{Chunk, OpenBatch, SealedBatch, Slot};
use crate::pipeline::shard::ShardContext;
use crate::record::Record;

/// The fewest rows a fresh batch has room for.
const MIN_BATCH_ROWS: usize = 1024;

/// Records drained per loop before the batcher checks linger and wakes waiting producers.
const DRAIN_BUDGET: usize = 4096;

/// How long a batcher with rows open sleeps at most before looking at its linger again.
const IDLE_WAIT: Duration = Duration::from_millis(1);

/// How long a batcher with nothing open sleeps before looking again. A push always wakes it
/// (the ring's wake-up cannot be lost: see `ShardRing::batcher_wait`), so this only bounds
/// the cost of a bug there; at 1 ms, the batchers of an idle daemon (two kinds × its
/// shards) woke its runtime over a thousand times a second.
const EMPTY_WAIT: Duration = Duration::from_millis(20);

/// How often a lingered batch checks whether the writer has become free.
const WRITER_POLL: Duration = Duration::from_micros(250);

/// The longest a batch holding a durable waiter lingers, whatever `linger` is: a durable
/// ack waits for the spool's fsync, not for PostgreSQL, and a linger chosen to make commits
/// big should not slow it down.
const DURABLE_LINGER: Duration = Duration::from_millis(5);

/// A batch someone waits on for its commit is sealed (when the writer is free) once
/// nothing has arrived for this long, linger or not: its clients are most likely waiting
/// for the answer before they send more (request/response clients, a TCP window that is
/// full), so lingering on would only add to their latency. A feed whose pushes come closer
/// together than this still lingers and commits in big batches; and since the ring must
/// have been quiet this long, these seals come at most 500 times a second per shard (and no
/// faster than the writer commits), at loads where commits cost little. It is short because
/// a request-response client alone (the last connection of a bulk load) pays it on every
/// request.
const QUIET: Duration = Duration::from_millis(2);

/// One shard's batcher: the batch being filled and where sealed ones go.
struct Batcher<R: Record> {
    shard: Arc<ShardContext<R>>,
    tx: mpsc::Sender<SealedBatch<R>>,
    open: OpenBatch<R>,
    /// Sequence of the last batch sealed.
    seq: u64,
    symbol_seqs: SymbolSequences,
    /// Seal at this many rows.
    max_rows: usize,
    /// The most a batch's body may grow to.
    max_bytes: usize,
    /// Seal before a row could push the body past `max_bytes`.
    byte_limit: usize,
    /// Fan-out is on: each record is kept for Redis too.
    fanout_on: bool,
    /// When the ring last gave anything (the [`QUIET`] seal counts from it).
    last_input: Instant,
    /// When the current drain of the ring began (ns since the ingestor started): the
    /// drain time of every row it gives.
    drained_at: u64,
}

/// What one drain of the ring found.
#[derive(Default)]
struct Drained {
    slots: usize,
    records: u64,
    barriers: u64,
}

impl<R: Record> Batcher<R> {
    fn new(shard: Arc<ShardContext<R>>, tx: mpsc::Sender<SealedBatch<R>>) -> Self {
        let limits = shard.limits;
        let mut batcher = Batcher {
            open: OpenBatch::new(0, 0, 0, None),
            max_rows: limits.max_rows,
            max_bytes: limits.max_bytes,
            byte_limit: limits.max_bytes.saturating_sub(R::MAX_ROW_BYTES),
            fanout_on: shard.fanout.is_some(),
            shard,
            tx,
            seq: 0,
            symbol_seqs: SymbolSequences::default(),
            last_input: Instant::now(),
            drained_at: 0,
        };
        batcher.open = batcher.fresh(0);
        batcher
    }

    /// A fresh batch sized for the rows the last one sealed with (plus a quarter), not for
    /// `max_rows`: at the defaults that is about 9 MiB of buffers per batch, most of it
    /// never touched when group commit seals a few thousand rows, and allocated and freed
    /// hundreds of times a second. A batch that outgrows its buffers doubles them.
    fn fresh(&self, expect_rows: usize) -> OpenBatch<R> {
        let max_rows = self.max_rows;
        let rows = (expect_rows + expect_rows / 4).clamp(MIN_BATCH_ROWS.min(max_rows), max_rows);
        let bytes = self.max_bytes.min(rows.saturating_mul(R::MAX_ROW_BYTES));
        let fanout_rows = if self.fanout_on { rows } else { 0 };
        OpenBatch::new(bytes, rows, fanout_rows, self.shard.buffers.take(bytes))
    }

    /// Drains up to [`DRAIN_BUDGET`] slots, sealing full batches on the way. `None` when
    /// the writer is gone.
    async fn drain(&mut self) -> Option<Drained> {
        let mut drained = Drained::default();
        while drained.slots < DRAIN_BUDGET {
            let Some(slot) = self.shard.ring.pop() else {
                break;
            };
            if drained.slots == 0 {
                self.drained_at = self.shard.clock.now();
            }
            drained.slots += 1;
            match slot {
                Slot::Record { record, pushed_at } => {
                    drained.records += 1;
                    if self.add(record, pushed_at) {
                        self.seal(self.max_rows).await?;
                    }
                }
                Slot::Chunk(chunk) => {
                    drained.records += chunk.records.len() as u64;
                    if self.add_chunk(*chunk) {
                        self.seal(self.max_rows).await?;
                    }
                }
                Slot::Barrier { waiter, durable } => {
                    if durable {
                        self.open.durable_waiters.push(waiter);
                    } else {
                        self.open.waiters.push(waiter);
                    }
                    drained.barriers += 1;
                }
            }
        }
        if drained.slots > 0 {
            self.last_input = Instant::now();
        }
        // Barriers are receipts' markers, not records: `accepted` counts records only.
        self.shard.ring.drained(drained.slots, drained.records);
        Some(drained)
    }

    /// Encodes `record` into the open batch; true when the batch is now full.
    #[inline]
    fn add(&mut self, record: R, pushed_at: u64) -> bool {
        let open = &mut self.open;
        if open.row_ends.is_empty() {
            open.opened = Some(Instant::now());
        }
        if open.body.capacity() - open.body.len() < R::MAX_ROW_BYTES {
            // Double, within the byte limit (sealing keeps a row's room below it).
            let more = open
                .body
                .capacity()
                .min(self.max_bytes.saturating_sub(open.body.len()))
                .max(R::MAX_ROW_BYTES);
            open.body.reserve(more);
        }
        record.encode_row(&mut open.body);
        open.drains
            .note(open.row_ends.len() as u32, self.drained_at);
        open.row_ends.push(open.body.len() as u32);
        open.pushed_at.push(pushed_at);
        if self.fanout_on {
            let s = self.symbol_seqs.next(*record.symbol());
            open.fanout.push((record, s));
        }
        open.row_ends.len() >= self.max_rows || open.body.len() > self.byte_limit
    }

    /// Encodes a producer's chunk into the open batch, all of it (a batch may outgrow
    /// `max_rows` by one chunk: its rows and their claim commit together). Rows the batch
    /// already holds for their key are resends and are left out. True when the batch is now
    /// full.
    fn add_chunk(&mut self, chunk: Chunk<R>) -> bool {
        let mut full = false;
        let by = self.open.claims.claimant(&chunk.producer, &chunk.outcome);
        for (record, seq) in chunk.records {
            let row = self.open.row_ends.len() as u32;
            let fresh = self
                .open
                .claims
                .add_for(by, *record.symbol(), seq, &chunk.outcome, row);
            if fresh {
                full |= self.add(record, chunk.pushed_at);
            }
        }
        full
    }

    /// Seals the open batch (the next one is sized for `expect_rows`) and hands it on,
    /// waiting while the writer is busy (that wait is the backpressure that fills the
    /// ring). `None` when the writer is gone.
    async fn seal(&mut self, expect_rows: usize) -> Option<()> {
        self.seq += 1;
        let next = self.fresh(expect_rows);
        let (batch, ticks) =
            std::mem::replace(&mut self.open, next).seal(self.seq, self.shard.clock.now());
        // Publishing at seal goes straight to the fan-out queue; after commit, via the writer.
        let fanout = match self.shard.fanout.as_deref() {
            Some(q) if self.shard.publish_sealed => {
                q.push(FanoutBatch { ticks });
                None
            }
            Some(_) => Some(FanoutBatch { ticks }),
            None => None,
        };
        match self.tx.send(SealedBatch { batch, fanout }).await {
            Ok(()) => Some(()),
            Err(mpsc::error::SendError(SealedBatch { mut batch, .. })) => {
                tracing::error!(seq = batch.seq, "writer stopped; batch not written");
                batch.answer_all(|| Err(Error::Task("writer stopped".into())));
                None
            }
        }
    }

    /// True when nothing sealed is waiting for the writer (group commit seals a lingered
    /// batch only then).
    fn writer_free(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity() && self.shard.spool_backlog.is_empty()
    }

    /// Runs until the ring is closed and empty and everything in it is sealed and sent.
    async fn run(mut self) {
        let linger = self.shard.limits.linger;
        loop {
            let Some(drained) = self.drain().await else {
                return;
            };
            let ring = &self.shard.ring;
            let closing = ring.is_closed();
            let age = self.open.opened.map(|t| t.elapsed());
            // Someone waits for this batch's commit and the ring has gone quiet: see QUIET.
            let quiet = !self.open.waiters.is_empty() && self.last_input.elapsed() >= QUIET;
            let lingered = age.is_some_and(|a| a >= linger) || quiet;
            // Group commit: a lingered batch is sealed only when no sealed batch is already
            // waiting, so it waits for at most the commit in progress. While the writer is
            // busy the batch keeps growing (up to max rows/bytes), and batch size follows
            // commit time.
            let writer_free = self.writer_free();
            // A barrier with no rows behind it only waits for earlier batches: pass it on now.
            let barrier_only = drained.barriers > 0 && self.open.row_ends.is_empty();
            let ring_empty = ring.is_empty();
            // Someone waits for the spool's fsync: seal at linger (at most DURABLE_LINGER)
            // even while PostgreSQL is busy (or away), so durable acks do not wait for
            // commits.
            let durable_wait = !self.open.durable_waiters.is_empty()
                && age.is_some_and(|a| a >= linger.min(DURABLE_LINGER));
            let seal_now = (lingered && writer_free)
                || durable_wait
                || barrier_only
                || (closing && ring_empty);
            if !self.open.is_empty() && seal_now {
                let rows = self.open.row_ends.len();
                if self.seal(rows).await.is_none() {
                    return;
                }
            }
            if closing && ring_empty && self.shard.ring.is_finished() {
                if self.open.is_empty() {
                    return;
                }
                continue;
            }
            if drained.slots == 0 {
                let wait = match self.open.opened {
                    Some(_) if lingered => WRITER_POLL,
                    Some(t) => linger.saturating_sub(t.elapsed()).min(IDLE_WAIT),
                    None => EMPTY_WAIT,
                };
                self.shard.ring.batcher_wait(wait).await;
            } else if drained.slots >= DRAIN_BUDGET {
                // Let other tasks on this worker run between large drains.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Runs one shard's batcher until its ring is closed and empty; sealed batches go to `tx`.
pub(crate) async fn run<R: Record>(shard: Arc<ShardContext<R>>, tx: mpsc::Sender<SealedBatch<R>>) {
    Batcher::new(shard, tx).run().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::sync::{mpsc, oneshot};

    use crate::clock::PipelineClock;
    use crate::config::IngestorConfig;
    use crate::pipeline::batch::{BatchReport, SealedBatch, Slot};
    use crate::pipeline::shard::ShardContext;
    use crate::pipeline::writer::{self, BatchSource};
    use crate::record::{Record, Side, Trade};
    use crate::symbol::Symbol;

    fn shard(config: &IngestorConfig) -> Arc<ShardContext<Trade>> {
        let clock = PipelineClock::new();
        Arc::new(ShardContext::new(
            0,
            "test-0".into(),
            config,
            clock,
            None,
            None,
        ))
    }

    fn trade(i: u64) -> Trade {
        Trade {
            time_ns: 1_719_878_400_000_000_000 + i as i64,
            symbol: Symbol::new("ESU4").expect("valid"),
            price: 5_512.25,
            volume: 1.0,
            side: Side::Buy,
            exchange_seq: i as i64,
        }
    }

    /// Pushes records `range`, each stamped with its number as push time.
    fn push(shard: &ShardContext<Trade>, range: std::ops::Range<u64>) {
        for i in range {
            let slot = Slot::Record {
                record: trade(i),
                pushed_at: i,
            };
            assert!(shard.ring.try_push(slot).is_ok(), "the ring has room");
        }
    }

    /// Runs the batcher until its ring is closed and drained; returns every batch sealed.
    async fn batches(shard: Arc<ShardContext<Trade>>) -> Vec<SealedBatch<Trade>> {
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(super::run(shard, tx));
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push(b);
        }
        task.await.expect("batcher");
        out
    }

    fn config() -> IngestorConfig {
        IngestorConfig {
            ring_capacity: 1024,
            linger: Duration::from_secs(3600),
            ..IngestorConfig::default()
        }
    }

    #[tokio::test]
    async fn seals_on_max_rows() {
        let shard = shard(&IngestorConfig {
            batch_max_rows: 10,
            ..config()
        });
        push(&shard, 0..25);
        shard.ring.close();
        let got = batches(shard.clone()).await;
        let rows: Vec<usize> = got.iter().map(|b| b.batch.rows()).collect();
        assert_eq!(rows, [10, 10, 5], "full batches, then the rest at close");
        let seqs: Vec<u64> = got.iter().map(|b| b.batch.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let order: Vec<u64> = got.iter().flat_map(|b| b.batch.pushed_at.clone()).collect();
        assert_eq!(order, (0..25).collect::<Vec<_>>(), "rows keep push order");
        assert_eq!(shard.ring.drained_records(), 25);
    }

    #[tokio::test]
    async fn seals_on_max_bytes() {
        let max_bytes = 4 * Trade::MAX_ROW_BYTES;
        let shard = shard(&IngestorConfig {
            batch_max_bytes: max_bytes,
            ..config()
        });
        push(&shard, 0..100);
        shard.ring.close();
        let got = batches(shard).await;
        assert!(got.len() > 1, "100 rows do not fit in {max_bytes} bytes");
        let total: usize = got.iter().map(|b| b.batch.rows()).sum();
        assert_eq!(total, 100);
        for b in &got {
            assert!(
                b.batch.rows.body.len() <= max_bytes,
                "a batch outgrew max_bytes"
            );
        }
        for b in &got[..got.len() - 1] {
            assert!(
                b.batch.rows.body.len() > max_bytes - Trade::MAX_ROW_BYTES,
                "sealed before the next row could pass max_bytes, not earlier"
            );
        }
    }

    #[tokio::test]
    async fn seals_on_linger() {
        let linger = Duration::from_millis(20);
        let shard = shard(&IngestorConfig { linger, ..config() });
        let (tx, mut rx) = mpsc::channel(4);
        let started = Instant::now();
        push(&shard, 0..5);
        let task = tokio::spawn(super::run(shard.clone(), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("sealed at linger")
            .expect("a batch");
        assert!(started.elapsed() >= linger, "sealed before linger");
        assert_eq!(first.batch.rows(), 5);
        assert!(!shard.ring.is_closed(), "sealed by linger, not by close");
        shard.ring.close();
        assert!(rx.recv().await.is_none(), "nothing left to seal");
        task.await.expect("batcher");
    }

    #[tokio::test]
    async fn a_batch_waited_on_seals_when_the_ring_goes_quiet_not_at_linger() {
        let linger = Duration::from_secs(3600);
        let shard = shard(&IngestorConfig { linger, ..config() });
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(super::run(shard.clone(), tx));
        // Rows nobody waits on keep lingering.
        push(&shard, 0..5);
        let early = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        assert!(early.is_err(), "sealed rows nobody waits on before linger");
        // A commit waiter behind them: sealed once nothing more comes.
        let (waiter, _answer) = oneshot::channel();
        let barrier = Slot::Barrier {
            waiter,
            durable: false,
        };
        assert!(shard.ring.try_push(barrier).is_ok());
        let sealed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("sealed when quiet, long before the hour's linger")
            .expect("a batch");
        assert_eq!(sealed.batch.rows(), 5);
        assert_eq!(sealed.batch.waiters.len(), 1);
        shard.ring.close();
        assert!(rx.recv().await.is_none(), "nothing left to seal");
        task.await.expect("batcher");
    }

    #[tokio::test]
    async fn barriers_answered() {
        let linger = Duration::from_millis(20);
        let shard = shard(&IngestorConfig { linger, ..config() });
        let (tx, rx) = mpsc::channel(2);
        let batcher = tokio::spawn(super::run(shard.clone(), tx));
        // The discard sink: batches count as committed as they arrive.
        let writer = tokio::spawn(writer::run(shard.clone(), BatchSource::Batcher(rx), None));
        let barrier = |durable| {
            let (waiter, answer) = oneshot::channel();
            let slot = Slot::Barrier { waiter, durable };
            assert!(shard.ring.try_push(slot).is_ok());
            answer
        };
        push(&shard, 0..3);
        let after_rows = barrier(false);
        let wait = |rx| tokio::time::timeout(Duration::from_secs(5), rx);
        let report = wait(after_rows).await.expect("answered").expect("sent");
        let report = report.expect("committed");
        let expected = BatchReport {
            shard: 0,
            seq: 1,
            rows_committed: 3,
            rows_dead_lettered: 0,
            answered_at: report.answered_at,
        };
        assert_eq!(report, expected);
        assert!(
            report.answered_at.is_some(),
            "the commit's time is reported"
        );
        // A barrier with no rows behind it has no linger to wait for: it is passed on at
        // once, in its own batch.
        let alone = barrier(true);
        let report = wait(alone).await.expect("answered").expect("sent");
        let report = report.expect("committed");
        assert_eq!((report.seq, report.rows_committed), (2, 0));
        shard.ring.close();
        batcher.await.expect("batcher");
        writer.await.expect("writer");
        let c = &shard.counters;
        assert_eq!(crate::metrics::load(&c.rows_committed), 3);
        assert_eq!(shard.ring.drained_records(), 3, "barriers are not records");
    }
}
