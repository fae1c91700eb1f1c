//! The types that travel through a shard's pipeline: a [`Slot`] in the ring, the
//! [`OpenBatch`] the batcher fills, the [`SealedBatch`] handed to the spool stage and the
//! writer, and the [`BatchReport`] a receipt gets back.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::oneshot;

use crate::binary_copy::CopyRows;
use crate::error::Result;
use crate::fanout::publisher::FanoutBatch;
use crate::pg::ledger::BatchOrigin;
use crate::producer::{BatchClaims, ProducerId, PushOutcome};
use crate::spool::shard_spool::{ShardSpool, SpoolRef};

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchReport {
    /// Shard of the batch.
    pub shard: usize,
    /// Sequence of the batch within its shard.
    pub seq: u64,
    /// Rows committed to the target table.
    pub rows_committed: u64,
    /// Rows the database rejected, now in the dead-letter table.
    pub rows_dead_lettered: u64,
    /// When the pipeline answered: the batch committed (or, for a durable receipt, was
    /// fsynced). What the ack's delivery is measured from.
    pub answered_at: Option<Instant>,
}

/// A producer waiting for a batch: answered with its report, or why it never got one.
pub(crate) type Waiter = oneshot::Sender<Result<BatchReport>>;

/// What travels through a ring.
#[derive(Debug)]
pub(crate) enum Slot<R> {
    /// A record and the time it was pushed (ns since the ingestor started).
    Record { record: R, pushed_at: u64 },
    /// A producer waiting until everything it pushed to this shard before is committed
    /// (`durable: false`) or fsynced in the spool (`durable: true`).
    Barrier { waiter: Waiter, durable: bool },
    /// A named producer's ticks for this shard from one push: one slot, so they land in one
    /// batch with their claims.
    Chunk(Box<Chunk<R>>),
}

/// A named producer's ticks for one shard from one push, each with its sequence number
/// (ascending).
#[derive(Debug)]
pub(crate) struct Chunk<R> {
    /// Who sent them.
    pub producer: ProducerId,
    /// The ticks and their sequences.
    pub records: Vec<(R, u64)>,
    /// When they were pushed (ns since the ingestor started).
    pub pushed_at: u64,
    /// The shard they go through.
    pub shard: usize,
    /// The push's outcome: told of resends and of eviction.
    pub outcome: Arc<PushOutcome>,
}

/// The batch a batcher is filling.
#[derive(Debug)]
pub(crate) struct OpenBatch<R> {
    /// The rows, binary COPY encoded.
    pub body: BytesMut,
    /// End offset in `body` of each row.
    pub row_ends: Vec<u32>,
    /// Push time of each row (ns since the ingestor started).
    pub pushed_at: Vec<u64>,
    /// When the batcher drained its rows from the ring: see [`Drains`].
    pub drains: Drains,
    /// Producers waiting for this batch to commit.
    pub waiters: Vec<Waiter>,
    /// Producers waiting for this batch to be fsynced in the spool.
    pub durable_waiters: Vec<Waiter>,
    /// When its first row arrived (none yet: `None`).
    pub opened: Option<Instant>,
    /// The records and their fan-out sequences (empty when fan-out is off).
    pub fanout: Vec<(R, u64)>,
    /// What it claims for named producers' rows.
    pub claims: BatchClaims,
}

/// The buffers of a batch the writer is done with, emptied, for a batch to come.
#[derive(Debug, Default)]
pub(crate) struct BatchBuffers {
    body: BytesMut,
    row_ends: Vec<u32>,
    pushed_at: Vec<u64>,
}

/// Buffers kept per shard: the batch being written hands its buffers to the next one the
/// batcher opens, and one more rides out a burst.
const KEPT_BUFFERS: usize = 2;

/// A kept body serves a batch that expects at least a quarter of its capacity (or of
/// [`SMALL_BODY`], for small batches); a larger one is freed instead, so that the buffers
/// of a burst's large batches do not stay resident while the daemon commits small ones.
const OVERSIZE: usize = 4;
const SMALL_BODY: usize = 256 * 1024;

/// The buffers of finished batches, kept for the shard's next ones (at most
/// [`KEPT_BUFFERS`]). A new batch then writes into memory already touched instead of fresh
/// pages, each of which costs a page fault: fresh batch bodies were a third of a replay's
/// page faults.
#[derive(Debug, Default)]
pub(crate) struct BufferPool(Mutex<Vec<BatchBuffers>>);

impl BufferPool {
    /// Buffers kept from a finished batch, for a batch that expects `bytes` of body; kept
    /// buffers far larger than that are freed on the way.
    pub fn take(&self, bytes: usize) -> Option<BatchBuffers> {
        let mut kept = self.0.lock().ok()?;
        while let Some(b) = kept.pop() {
            if b.body.capacity() <= OVERSIZE * bytes.max(SMALL_BODY) {
                return Some(b);
            }
        }
        None
    }

    /// Keeps `batch`'s buffers, emptied, unless the pool is full or something else still
    /// holds its body.
    pub fn keep(&self, batch: CopyBatch) {
        let CopyBatch {
            rows: CopyRows { body, mut row_ends },
            mut pushed_at,
            ..
        } = batch;
        let Ok(mut body) = body.try_into_mut() else {
            return;
        };
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        if kept.len() < KEPT_BUFFERS {
            body.clear();
            row_ends.clear();
            pushed_at.clear();
            kept.push(BatchBuffers {
                body,
                row_ends,
                pushed_at,
            });
        }
    }
}

impl<R> OpenBatch<R> {
    /// An empty batch with room for `bytes` of body, `rows` rows and `fanout_rows`
    /// fan-out records, in `reused` buffers when there are some.
    pub fn new(
        bytes: usize,
        rows: usize,
        fanout_rows: usize,
        reused: Option<BatchBuffers>,
    ) -> Self {
        let BatchBuffers {
            mut body,
            mut row_ends,
            mut pushed_at,
        } = reused.unwrap_or_default();
        body.reserve(bytes);
        row_ends.reserve(rows);
        pushed_at.reserve(rows);
        OpenBatch {
            body,
            row_ends,
            pushed_at,
            drains: Drains::default(),
            waiters: Vec::new(),
            durable_waiters: Vec::new(),
            opened: None,
            fanout: Vec::with_capacity(fanout_rows),
            claims: BatchClaims::default(),
        }
    }

    /// True when it holds neither rows nor waiters: nothing to seal.
    pub fn is_empty(&self) -> bool {
        self.row_ends.is_empty() && self.waiters.is_empty() && self.durable_waiters.is_empty()
    }

    /// Seals it as batch `seq` at `sealed_at` (ns since the ingestor started); the fan-out
    /// records come back separately.
    pub fn seal(self, seq: u64, sealed_at: u64) -> (CopyBatch, Vec<(R, u64)>) {
        let batch = CopyBatch {
            seq,
            sealed_at,
            rows: CopyRows {
                body: self.body.freeze(),
                row_ends: self.row_ends,
            },
            pushed_at: self.pushed_at,
            drains: self.drains,
            handed_on_at: 0,
            waiters: self.waiters,
            durable_waiters: self.durable_waiters,
            earlier_run: None,
            spooled: None,
            claims: self.claims,
        };
        (batch, self.fanout)
    }
}

/// When a batch's rows left the ring: one entry per drain of the ring that gave the batch
/// rows, `(first row, time)` (ns since the ingestor started), so the time is read once per
/// drain, not per row. A row's drain time is that of the last entry at or before it.
#[derive(Debug, Default)]
pub(crate) struct Drains(Vec<(u32, u64)>);

impl Drains {
    /// Notes that row `row` was drained at `at`; a new entry only when `at` differs from
    /// the last one's.
    #[inline]
    pub fn note(&mut self, row: u32, at: u64) {
        if self.0.last().is_none_or(|&(_, t)| t != at) {
            self.0.push((row, at));
        }
    }

    /// Each of `rows` rows' drain time, in row order (0 for rows before the first entry).
    pub fn per_row(&self, rows: usize) -> impl Iterator<Item = u64> + '_ {
        let mut next = 0;
        let mut at = 0;
        (0..rows as u32).map(move |row| {
            while let Some(&(first, t)) = self.0.get(next) {
                if first > row {
                    break;
                }
                at = t;
                next += 1;
            }
            at
        })
    }
}

/// A sealed batch's COPY rows, its waiters and where it is kept.
#[derive(Debug)]
pub(crate) struct CopyBatch {
    /// Per-shard sequence; with the stream and shard, the batch's id in the ledger.
    pub seq: u64,
    /// The rows, binary COPY encoded, without the stream header and trailer.
    pub rows: CopyRows,
    /// Push time of each row (ns since the ingestor started).
    pub pushed_at: Vec<u64>,
    /// When it was sealed (ns since the ingestor started; 0 for an earlier run's batch).
    pub sealed_at: u64,
    /// When its rows were drained from the ring.
    pub drains: Drains,
    /// When the spool stage handed it on to the writer (ns since the ingestor started; 0
    /// without a spool).
    pub handed_on_at: u64,
    /// Producers waiting for this batch (and every earlier one) to commit.
    pub waiters: Vec<Waiter>,
    /// Producers waiting for this batch (and every earlier one) to be fsynced in the spool.
    pub durable_waiters: Vec<Waiter>,
    /// Who sealed it, when not this run: a batch an earlier run spooled. Such a batch may
    /// have committed before the crash, so the writer asks the ledger first.
    pub earlier_run: Option<BatchOrigin>,
    /// Where the batch is in the spool, when there is one.
    pub spooled: Option<SpoolPosition>,
    /// What it claims for named producers' rows (empty without any).
    pub claims: BatchClaims,
}

/// A batch's place in the spool.
#[derive(Debug)]
pub(crate) struct SpoolPosition {
    /// The shard spool that holds it.
    pub spool: Arc<ShardSpool>,
    /// Its entry number there.
    pub entry: u64,
    /// Bytes it holds in memory against the spool's memory budget (0 when on disk).
    pub memory_bytes: u64,
    /// Set when the body was left on disk: the writer reads it back from here.
    pub on_disk: Option<SpoolRef>,
}

impl CopyBatch {
    /// A batch an earlier run left in `spool`, read back by the writer.
    pub fn on_disk(spool: Arc<ShardSpool>, at: SpoolRef) -> Self {
        CopyBatch {
            seq: 0,
            sealed_at: 0,
            rows: CopyRows::default(),
            pushed_at: Vec::new(),
            drains: Drains::default(),
            handed_on_at: 0,
            waiters: Vec::new(),
            durable_waiters: Vec::new(),
            earlier_run: None,
            claims: BatchClaims::default(),
            spooled: Some(SpoolPosition {
                spool,
                entry: at.entry,
                memory_bytes: 0,
                on_disk: Some(at),
            }),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Answers every waiter, committed and durable ones alike, with `answer`.
    pub fn answer_all(&mut self, answer: impl Fn() -> Result<BatchReport>) {
        for w in self.waiters.drain(..).chain(self.durable_waiters.drain(..)) {
            let _ = w.send(answer());
        }
    }
}

/// A sealed batch on its way to the writer and, when fan-out publishes after commit, its
/// records for Redis.
#[derive(Debug)]
pub(crate) struct SealedBatch<R> {
    /// The rows and waiters.
    pub batch: CopyBatch,
    /// The records to publish once committed (`None`: fan-out off, or published at seal).
    pub fanout: Option<FanoutBatch<R>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Trade;

    /// A sealed batch of `n` bytes of body, with room for `capacity`.
    fn sealed(n: usize, capacity: usize) -> CopyBatch {
        let mut open = OpenBatch::<Trade>::new(capacity, 4, 0, None);
        open.body.extend_from_slice(&vec![7u8; n]);
        open.row_ends.push(n as u32);
        open.pushed_at.push(1);
        open.seal(1, 0).0
    }

    #[test]
    fn a_finished_batch_hands_its_buffers_to_the_next_one() {
        let pool = BufferPool::default();
        let batch = sealed(1_000, 1 << 20);
        let at = batch.rows.body.as_ptr();
        pool.keep(batch);
        let reused = pool.take(1 << 20).expect("kept");
        // The same memory, emptied, and its capacity kept.
        assert_eq!(reused.body.as_ptr(), at);
        assert!(reused.body.is_empty() && reused.body.capacity() >= 1 << 20);
        assert!(reused.row_ends.is_empty() && reused.pushed_at.is_empty());
        let open = OpenBatch::<Trade>::new(4_096, 8, 0, Some(reused));
        assert_eq!(open.body.as_ptr(), at);
        assert!(pool.take(1 << 20).is_none());
    }

    #[test]
    fn a_burst_s_large_buffers_are_freed_when_batches_are_small_again() {
        let pool = BufferPool::default();
        pool.keep(sealed(100, 8 << 20));
        pool.keep(sealed(100, 64 << 10));
        // A small batch takes the small buffer; the large one is freed, not handed on.
        let small = pool.take(16 << 10).expect("the small one");
        assert!(small.body.capacity() < 1 << 20);
        pool.keep(sealed(100, 8 << 20));
        assert!(pool.take(16 << 10).is_none());
        assert!(pool.take(8 << 20).is_none(), "freed, not kept");
    }

    #[test]
    fn a_body_still_held_elsewhere_is_not_kept_nor_more_than_two() {
        let pool = BufferPool::default();
        let batch = sealed(100, 4_096);
        let held = batch.rows.body.clone();
        pool.keep(batch);
        assert!(pool.take(4_096).is_none());
        assert_eq!(held.len(), 100);
        for _ in 0..3 {
            pool.keep(sealed(100, 4_096));
        }
        assert!(pool.take(4_096).is_some() && pool.take(4_096).is_some());
        assert!(pool.take(4_096).is_none());
    }
}
