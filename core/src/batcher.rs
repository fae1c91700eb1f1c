//! The shard batcher: drains a ring, encodes records straight into a binary `COPY` body,
//! and seals batches on rows, bytes or linger.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use crate::fanout::publisher::{FanoutBatch, SymbolSequences};
use crate::fanout::PublishPoint;
use crate::ingestor::Shared;
use crate::metrics;
use crate::record::Record;
use crate::ring::Slot;
use crate::writer::BatchReport;
use crate::Result;

/// A sealed batch on its way to the writer.
#[derive(Debug)]
pub(crate) struct SealedBatch {
    /// Per-shard sequence; with the stream and shard, the batch's id in the ledger.
    pub seq: u64,
    /// The rows, binary COPY encoded, without the stream header and trailer.
    pub body: bytes::Bytes,
    /// End offset in `body` of each row.
    pub row_ends: Vec<u32>,
    /// Push time of each row (ns since the ingestor started).
    pub pushed_at: Vec<u64>,
    /// Producers waiting for this batch (and every earlier one) to commit.
    pub waiters: Vec<oneshot::Sender<Result<BatchReport>>>,
    /// Producers waiting for this batch (and every earlier one) to be fsynced in the spool.
    pub durable_waiters: Vec<oneshot::Sender<Result<BatchReport>>>,
    /// The ledger identity (stream, shard) when it is not this run's: a batch an earlier
    /// run spooled. Such a batch may have committed before the crash, so the writer asks
    /// the ledger first.
    pub foreign: Option<(Arc<str>, usize)>,
    /// Where the batch is in the spool, when there is one.
    pub spooled: Option<Spooled>,
}

/// A batch's place in the spool.
#[derive(Debug)]
pub(crate) struct Spooled {
    /// Index of the shard spool that holds it.
    pub owner: usize,
    /// Its entry number there.
    pub entry: u64,
    /// Bytes it holds in memory against the spool's memory budget (0 when on disk).
    pub memory_bytes: u64,
    /// Set when the body was left on disk: the writer reads it back from here.
    pub on_disk: Option<crate::spool::SpoolRef>,
}

impl SealedBatch {
    /// A batch an earlier run left in spool `owner`, read back by the writer.
    pub fn on_disk(owner: usize, at: crate::spool::SpoolRef) -> Self {
        SealedBatch {
            seq: 0,
            body: bytes::Bytes::new(),
            row_ends: Vec::new(),
            pushed_at: Vec::new(),
            waiters: Vec::new(),
            durable_waiters: Vec::new(),
            foreign: None,
            spooled: Some(Spooled {
                owner,
                entry: at.entry,
                memory_bytes: 0,
                on_disk: Some(at),
            }),
        }
    }

    pub fn rows(&self) -> usize {
        self.row_ends.len()
    }

    /// The bytes of rows `range`.
    pub fn rows_bytes(&self, range: std::ops::Range<usize>) -> bytes::Bytes {
        let start = if range.start == 0 {
            0
        } else {
            self.row_ends[range.start - 1] as usize
        };
        let end = if range.end == 0 {
            0
        } else {
            self.row_ends[range.end - 1] as usize
        };
        self.body.slice(start..end)
    }
}

/// A sealed batch and, when fan-out publishes after commit, its records for Redis.
#[derive(Debug)]
pub(crate) struct Sealed<R> {
    pub batch: SealedBatch,
    pub fanout: Option<FanoutBatch<R>>,
}

/// The batch being filled.
struct OpenBatch<R> {
    body: BytesMut,
    row_ends: Vec<u32>,
    pushed_at: Vec<u64>,
    waiters: Vec<oneshot::Sender<Result<BatchReport>>>,
    durable_waiters: Vec<oneshot::Sender<Result<BatchReport>>>,
    opened: Option<Instant>,
    /// The records and their fan-out sequences (empty when fan-out is off).
    fanout: Vec<(R, u64)>,
}

impl<R> OpenBatch<R> {
    fn new(bytes: usize, rows: usize, fanout_rows: usize) -> Self {
        OpenBatch {
            body: BytesMut::with_capacity(bytes),
            row_ends: Vec::with_capacity(rows),
            pushed_at: Vec::with_capacity(rows),
            waiters: Vec::new(),
            durable_waiters: Vec::new(),
            opened: None,
            fanout: Vec::with_capacity(fanout_rows),
        }
    }

    fn is_empty(&self) -> bool {
        self.row_ends.is_empty() && self.waiters.is_empty() && self.durable_waiters.is_empty()
    }
}

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

/// Runs one shard's batcher until the ingestor closes and the ring is empty.
pub(crate) async fn run<R: Record>(
    shared: Arc<Shared<R>>,
    shard: usize,
    tx: mpsc::Sender<Sealed<R>>,
) {
    let ring = &shared.rings[shard];
    let cfg = &shared.config;
    let max_rows = cfg.batch_max_rows;
    // Seal before a row could push the body past max_bytes.
    let byte_limit = cfg.batch_max_bytes.saturating_sub(R::MAX_ROW_BYTES);
    let fanout = shared.fanout.as_deref();
    let publish_sealed = cfg
        .fanout
        .as_ref()
        .is_some_and(|f| f.publish == PublishPoint::Sealed);
    // A fresh batch is sized for the rows the last one sealed with (plus a quarter), not for
    // `batch_max_rows`: at the defaults that is about 9 MiB of buffers per batch, most of it
    // never touched when group commit seals a few thousand rows, and allocated and freed
    // hundreds of times a second. A batch that outgrows its buffers doubles them.
    let fresh = |expect_rows: usize| {
        let rows = (expect_rows + expect_rows / 4).clamp(MIN_BATCH_ROWS.min(max_rows), max_rows);
        let bytes = cfg
            .batch_max_bytes
            .min(rows.saturating_mul(R::MAX_ROW_BYTES));
        OpenBatch::new(bytes, rows, if fanout.is_some() { rows } else { 0 })
    };
    let mut open = fresh(0);
    let mut seq: u64 = 0;
    let mut symbol_seqs = SymbolSequences::default();
    // Publishing at seal goes straight to the fan-out queue; after commit, via the writer.
    let seal = |open: OpenBatch<R>, seq: u64| {
        let (batch, ticks) = seal(open, seq);
        let fanout_batch = fanout.map(|_| FanoutBatch { ticks });
        match (fanout, fanout_batch) {
            (Some(q), Some(f)) if publish_sealed => {
                q.push(f);
                Sealed {
                    batch,
                    fanout: None,
                }
            }
            (_, f) => Sealed { batch, fanout: f },
        }
    };

    loop {
        let mut drained = 0usize;
        let mut barriers = 0u64;
        let mut barrier_seen = false;
        while drained < DRAIN_BUDGET {
            let Some(slot) = ring.queue.pop() else { break };
            drained += 1;
            match slot {
                Slot::Record { record, pushed_at } => {
                    if open.row_ends.is_empty() {
                        open.opened = Some(Instant::now());
                    }
                    if open.body.capacity() - open.body.len() < R::MAX_ROW_BYTES {
                        // Double, within the byte limit (sealing keeps a row's room below it).
                        let more = open
                            .body
                            .capacity()
                            .min(cfg.batch_max_bytes.saturating_sub(open.body.len()))
                            .max(R::MAX_ROW_BYTES);
                        open.body.reserve(more);
                    }
                    record.encode_row(&mut open.body);
                    open.row_ends.push(open.body.len() as u32);
                    open.pushed_at.push(pushed_at);
                    if fanout.is_some() {
                        let s = symbol_seqs.next(*record.symbol());
                        open.fanout.push((record, s));
                    }
                    if open.row_ends.len() >= max_rows || open.body.len() > byte_limit {
                        seq += 1;
                        let full = std::mem::replace(&mut open, fresh(max_rows));
                        if !send(&tx, seal(full, seq)).await {
                            return;
                        }
                    }
                }
                Slot::Barrier { waiter, durable } => {
                    if durable {
                        open.durable_waiters.push(waiter);
                    } else {
                        open.waiters.push(waiter);
                    }
                    barriers += 1;
                    barrier_seen = true;
                }
            }
        }
        if drained > 0 {
            ring.after_drain();
        }
        // Barriers are receipts' markers, not records: `accepted` counts records only.
        metrics::add(&ring.counters.drained, drained as u64 - barriers);

        let closing = shared.closed.load(Ordering::SeqCst);
        let age = open.opened.map(|t| t.elapsed());
        let lingered = age.is_some_and(|a| a >= cfg.linger);
        // Group commit: a lingered batch is sealed only when no sealed batch is already
        // waiting, so it waits for at most the commit in progress. While the writer is busy
        // the batch keeps growing (up to max rows/bytes), and batch size follows commit time.
        let writer_free =
            tx.capacity() == tx.max_capacity() && ring.spool_queued.load(Ordering::Relaxed) == 0;
        // A barrier with no rows behind it only waits for earlier batches: pass it on now.
        let barrier_only = barrier_seen && open.row_ends.is_empty();
        let ring_empty = ring.queue.is_empty();
        // Someone waits for the spool's fsync: seal at linger (at most DURABLE_LINGER) even
        // while PostgreSQL is busy (or away), so durable acks do not wait for commits.
        let durable_wait = !open.durable_waiters.is_empty()
            && age.is_some_and(|a| a >= cfg.linger.min(DURABLE_LINGER));
        let seal_now =
            (lingered && writer_free) || durable_wait || barrier_only || (closing && ring_empty);
        if !open.is_empty() && seal_now {
            seq += 1;
            let rows = open.row_ends.len();
            let batch = std::mem::replace(&mut open, fresh(rows));
            if !send(&tx, seal(batch, seq)).await {
                return;
            }
        }
        if closing && ring_empty && ring.no_pushers() && ring.queue.is_empty() {
            if open.is_empty() {
                return;
            }
            continue;
        }
        if drained == 0 {
            let wait = match open.opened {
                Some(_) if lingered => WRITER_POLL,
                Some(t) => cfg.linger.saturating_sub(t.elapsed()).min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            ring.batcher_wait(wait).await;
        } else if drained >= DRAIN_BUDGET {
            // Let other tasks on this worker run between large drains.
            tokio::task::yield_now().await;
        }
    }
}

fn seal<R>(open: OpenBatch<R>, seq: u64) -> (SealedBatch, Vec<(R, u64)>) {
    let batch = SealedBatch {
        seq,
        body: open.body.freeze(),
        row_ends: open.row_ends,
        pushed_at: open.pushed_at,
        waiters: open.waiters,
        durable_waiters: open.durable_waiters,
        foreign: None,
        spooled: None,
    };
    (batch, open.fanout)
}

/// Hands a batch to the writer, waiting while it is busy (that wait is the backpressure
/// that fills the ring). False when the writer is gone.
async fn send<R>(tx: &mpsc::Sender<Sealed<R>>, sealed: Sealed<R>) -> bool {
    match tx.send(sealed).await {
        Ok(()) => true,
        Err(mpsc::error::SendError(Sealed { batch, .. })) => {
            tracing::error!(seq = batch.seq, "writer stopped; batch not written");
            for w in batch.waiters.into_iter().chain(batch.durable_waiters) {
                let _ = w.send(Err(crate::Error::Task("writer stopped".into())));
            }
            false
        }
    }
}
