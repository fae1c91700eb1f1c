//! The shard batcher: drains a ring, encodes records straight into a binary `COPY` body,
//! and seals batches on rows, bytes or linger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::Error;
use crate::fanout::publisher::{FanoutBatch, SymbolSequences};
use crate::pipeline::batch::{OpenBatch, SealedBatch, Slot};
use crate::pipeline::shard::ShardContext;
use crate::record::Record;

/// The fewest rows a fresh batch has room for.
const MIN_BATCH_ROWS: usize = 1024;

/// Records drained per loop before the batcher checks linger and wakes waiting producers.
const DRAIN_BUDGET: usize = 4096;

/// How long an idle batcher sleeps before looking again (bounds a lost wake-up).
const IDLE_WAIT: Duration = Duration::from_millis(1);

/// How often a lingered batch checks whether the writer has become free.
const WRITER_POLL: Duration = Duration::from_micros(250);

/// The longest a batch holding a durable waiter lingers, whatever `linger` is: a durable
/// ack waits for the spool's fsync, not for PostgreSQL, and a linger chosen to make commits
/// big should not slow it down.
const DURABLE_LINGER: Duration = Duration::from_millis(5);

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
}

/// What one drain of the ring found.
#[derive(Default)]
struct Drained {
    slots: usize,
    barriers: u64,
}

impl<R: Record> Batcher<R> {
    fn new(shard: Arc<ShardContext<R>>, tx: mpsc::Sender<SealedBatch<R>>) -> Self {
        let limits = shard.limits;
        let mut batcher = Batcher {
            open: OpenBatch::new(0, 0, 0),
            max_rows: limits.max_rows,
            max_bytes: limits.max_bytes,
            byte_limit: limits.max_bytes.saturating_sub(R::MAX_ROW_BYTES),
            fanout_on: shard.fanout.is_some(),
            shard,
            tx,
            seq: 0,
            symbol_seqs: SymbolSequences::default(),
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
        OpenBatch::new(bytes, rows, fanout_rows)
    }

    /// Drains up to [`DRAIN_BUDGET`] slots, sealing full batches on the way. `None` when
    /// the writer is gone.
    async fn drain(&mut self) -> Option<Drained> {
        let mut drained = Drained::default();
        while drained.slots < DRAIN_BUDGET {
            let Some(slot) = self.shard.ring.pop() else {
                break;
            };
            drained.slots += 1;
            match slot {
                Slot::Record { record, pushed_at } => {
                    if self.add(record, pushed_at) {
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
        // Barriers are receipts' markers, not records: `accepted` counts records only.
        let records = (drained.slots as u64) - drained.barriers;
        self.shard.ring.drained(drained.slots, records);
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
        open.row_ends.push(open.body.len() as u32);
        open.pushed_at.push(pushed_at);
        if self.fanout_on {
            let s = self.symbol_seqs.next(*record.symbol());
            open.fanout.push((record, s));
        }
        open.row_ends.len() >= self.max_rows || open.body.len() > self.byte_limit
    }

    /// Seals the open batch (the next one is sized for `expect_rows`) and hands it on,
    /// waiting while the writer is busy (that wait is the backpressure that fills the
    /// ring). `None` when the writer is gone.
    async fn seal(&mut self, expect_rows: usize) -> Option<()> {
        self.seq += 1;
        let next = self.fresh(expect_rows);
        let (batch, ticks) = std::mem::replace(&mut self.open, next).seal(self.seq);
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
            let lingered = age.is_some_and(|a| a >= linger);
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
                    None => IDLE_WAIT,
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
