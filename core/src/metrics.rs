//! Counters, gauges and latency histograms, readable at any time as a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Per-shard counters of the writer (the ring counts what it took in, dropped and refused).
/// Each is written by the writer only, so no counter is contended on the per-record path.
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    /// Rows committed to the database .
    pub rows_committed: AtomicU64,
    /// Batches committed .
    pub batches_committed: AtomicU64,
    /// Failed commit attempts that were retried .
    pub retries: AtomicU64,
    /// Connections (re)established .
    pub connects: AtomicU64,
    /// Rows sent to the dead-letter table .
    pub dead_lettered: AtomicU64,
    /// Batches whose commit was found in the ledger after an ambiguous failure .
    pub ledger_hits: AtomicU64,
    /// Producer ticks left out at commit as resends of ticks already stored .
    pub producer_resends: AtomicU64,
    /// Transactions that committed several queued batches together .
    pub grouped_commits: AtomicU64,
}

/// Latency histograms of one shard, locked once per batch (never per record).
#[derive(Debug)]
pub(crate) struct ShardHistograms {
    /// Push → commit, microseconds.
    pub push_to_commit_us: Histogram<u64>,
    /// Time to commit one batch (all attempts), microseconds.
    pub batch_commit_us: Histogram<u64>,
    /// Rows per committed batch.
    pub batch_rows: Histogram<u64>,
    /// Where a tick's push → commit time goes, stage by stage.
    pub stages: StageHistograms,
}

/// A tick's way to a commit, stage by stage, in microseconds: what
/// [`MetricsSnapshot::push_to_commit_us`] is made of. Per tick: `ring + linger = batching`;
/// per batch: `spool + queue` is the time from seal to the writer, then `copy` and `commit`.
#[derive(Debug, Clone)]
pub struct StageHistograms {
    /// Push → the batcher drained it from the ring, per row.
    pub ring_us: Histogram<u64>,
    /// Drained → its batch sealed, per row: the batch's linger as this tick saw it (the
    /// batch's first row waits the batch's whole linger).
    pub linger_us: Histogram<u64>,
    /// Push → its batch sealed, per row: `ring` and `linger` together.
    pub batching_us: Histogram<u64>,
    /// Sealed → handed on by the spool stage, per batch (with a spool): the wait for the
    /// spool's thread (an fsync of earlier batches included) and the append.
    pub spool_us: Histogram<u64>,
    /// One spool fsync, per fsync (with a spool).
    pub fsync_us: Histogram<u64>,
    /// Sealed (or handed on by the spool stage) → the writer takes the batch, per batch:
    /// the wait behind earlier batches.
    pub queue_us: Histogram<u64>,
    /// The writer's transaction up to the end of its `COPY` (`BEGIN`, the ledger row,
    /// producer claims, `COPY`), per batch, the successful attempt.
    pub copy_us: Histogram<u64>,
    /// The `COMMIT` round trip, per batch.
    pub commit_us: Histogram<u64>,
}

impl StageHistograms {
    fn new() -> Self {
        StageHistograms {
            ring_us: histogram(),
            linger_us: histogram(),
            batching_us: histogram(),
            spool_us: histogram(),
            fsync_us: histogram(),
            queue_us: histogram(),
            copy_us: histogram(),
            commit_us: histogram(),
        }
    }

    /// Each stage with its name, in pipeline order (`ring`, `linger`, `batching`,
    /// `spool`, `fsync`, `queue`, `copy`, `commit`).
    pub fn named(&self) -> [(&'static str, &Histogram<u64>); 8] {
        [
            ("ring", &self.ring_us),
            ("linger", &self.linger_us),
            ("batching", &self.batching_us),
            ("spool", &self.spool_us),
            ("fsync", &self.fsync_us),
            ("queue", &self.queue_us),
            ("copy", &self.copy_us),
            ("commit", &self.commit_us),
        ]
    }

    /// Adds `other`'s figures.
    pub fn add(&mut self, other: &StageHistograms) {
        let theirs = other.named();
        for (mine, (_, h)) in self.named_mut().into_iter().zip(theirs) {
            // Auto-resizing histograms of the same precision: adding cannot fail.
            let _ = mine.add(h);
        }
    }

    /// Each stage, in the order of [`StageHistograms::named`].
    fn named_mut(&mut self) -> [&mut Histogram<u64>; 8] {
        [
            &mut self.ring_us,
            &mut self.linger_us,
            &mut self.batching_us,
            &mut self.spool_us,
            &mut self.fsync_us,
            &mut self.queue_us,
            &mut self.copy_us,
            &mut self.commit_us,
        ]
    }
}

/// An empty histogram of 3 significant figures that grows to fit any value (auto-resizing,
/// so no value is ever rejected).
fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant figures is valid");
    h.auto(true);
    h
}

impl ShardHistograms {
    pub fn new() -> Self {
        ShardHistograms {
            push_to_commit_us: histogram(),
            batch_commit_us: histogram(),
            batch_rows: histogram(),
            stages: StageHistograms::new(),
        }
    }
}

pub(crate) fn lock_histograms(
    m: &Mutex<ShardHistograms>,
) -> std::sync::MutexGuard<'_, ShardHistograms> {
    // A panic while holding the lock cannot leave a histogram half-updated in a way that
    // matters for reporting, so a poisoned lock is still read.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One shard's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Records accepted into the ring (including those later dropped).
    pub accepted: u64,
    /// Records evicted by drop-oldest backpressure.
    pub dropped: u64,
    /// Pushes refused because the ring was full.
    pub rejected_full: u64,
    /// Records waiting in the ring now.
    pub ring_depth: u64,
    /// The ring's capacity.
    pub ring_capacity: u64,
    /// Rows committed.
    pub rows_committed: u64,
    /// Batches committed.
    pub batches_committed: u64,
    /// Commit attempts retried after a failure.
    pub retries: u64,
    /// Database connections made (the first one included).
    pub connects: u64,
    /// Rows the database rejected, now in the dead-letter table.
    pub dead_lettered: u64,
    /// Ambiguous failures resolved by the ledger as "already committed".
    pub ledger_hits: u64,
    /// Producer ticks left out at commit: resends of ticks already stored.
    pub producer_resends: u64,
    /// Transactions that committed several queued batches together.
    pub grouped_commits: u64,
}

/// A histogram's headline figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Summary {
    /// Summarises `h`.
    pub fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Everything the pipeline measured, at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Per-shard figures, index = shard.
    pub shards: Vec<ShardSnapshot>,
    /// Push → commit latency of every committed record, microseconds, all shards.
    pub push_to_commit_us: Histogram<u64>,
    /// Commit time per batch, microseconds, all shards.
    pub batch_commit_us: Histogram<u64>,
    /// Rows per batch, all shards.
    pub batch_rows: Histogram<u64>,
    /// Push → commit, stage by stage, all shards.
    pub stages: StageHistograms,
    /// The last partition maintenance pass over the target table (plain-PostgreSQL schema;
    /// `None` before the first pass or when maintenance is off). Its `rows_in_default`
    /// counts rows no time partition covers.
    pub maintenance: Option<crate::schema::MaintenanceReport>,
    /// The Redis fan-out's counters (`None` when fan-out is off).
    pub fanout: Option<crate::fanout::snapshot::FanoutSnapshot>,
    /// The spool's state and counters, when there is a spool.
    pub spool: Option<crate::spool::shard_spool::SpoolSnapshot>,
}

impl MetricsSnapshot {
    pub(crate) fn empty() -> Self {
        let h = ShardHistograms::new();
        MetricsSnapshot {
            shards: Vec::new(),
            push_to_commit_us: h.push_to_commit_us,
            batch_commit_us: h.batch_commit_us,
            batch_rows: h.batch_rows,
            stages: h.stages,
            maintenance: None,
            fanout: None,
            spool: None,
        }
    }

    fn sum(&self, f: impl Fn(&ShardSnapshot) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    /// Records accepted, all shards.
    pub fn accepted(&self) -> u64 {
        self.sum(|s| s.accepted)
    }
    /// Records dropped by drop-oldest, all shards.
    pub fn dropped(&self) -> u64 {
        self.sum(|s| s.dropped)
    }
    /// Pushes refused with `Full`, all shards.
    pub fn rejected_full(&self) -> u64 {
        self.sum(|s| s.rejected_full)
    }
    /// Records in the rings now, all shards.
    pub fn ring_depth(&self) -> u64 {
        self.sum(|s| s.ring_depth)
    }
    /// Rows committed, all shards.
    pub fn rows_committed(&self) -> u64 {
        self.sum(|s| s.rows_committed)
    }
    /// Batches committed, all shards.
    pub fn batches_committed(&self) -> u64 {
        self.sum(|s| s.batches_committed)
    }
    /// Retried commit attempts, all shards.
    pub fn retries(&self) -> u64 {
        self.sum(|s| s.retries)
    }
    /// Database connections made (first ones included), all shards.
    pub fn connects(&self) -> u64 {
        self.sum(|s| s.connects)
    }
    /// Rows dead-lettered, all shards.
    pub fn dead_lettered(&self) -> u64 {
        self.sum(|s| s.dead_lettered)
    }
    /// Ambiguous failures the ledger resolved as committed, all shards.
    pub fn ledger_hits(&self) -> u64 {
        self.sum(|s| s.ledger_hits)
    }
    /// Producer ticks left out at commit as resends, all shards.
    pub fn producer_resends(&self) -> u64 {
        self.sum(|s| s.producer_resends)
    }
    /// Transactions that committed several queued batches together, all shards.
    pub fn grouped_commits(&self) -> u64 {
        self.sum(|s| s.grouped_commits)
    }
}

/// Records every value of `values`, each run of equal consecutive values in one update:
/// the rows of one push share their times, and one update per row was about 3 % of a
/// replay's CPU.
pub(crate) fn record_runs(h: &mut Histogram<u64>, values: impl IntoIterator<Item = u64>) {
    let mut run: Option<(u64, u64)> = None;
    for v in values {
        match &mut run {
            Some((value, n)) if *value == v => *n += 1,
            _ => {
                if let Some((value, n)) = run.replace((v, 1)) {
                    let _ = h.record_n(value, n);
                }
            }
        }
    }
    if let Some((value, n)) = run {
        let _ = h.record_n(value, n);
    }
}

pub(crate) fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub(crate) fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_runs_counts_every_value_as_recording_each_does() {
        let values: Vec<u64> = [7, 7, 7, 3, 3, 900, 7, 7, 12_345_678, 1]
            .into_iter()
            .chain(std::iter::repeat_n(42, 1_000))
            .collect();
        let mut each = histogram();
        for &v in &values {
            each.record(v).unwrap();
        }
        let mut runs = histogram();
        record_runs(&mut runs, values.iter().copied());
        assert_eq!(runs.len(), values.len() as u64);
        assert_eq!(runs, each);
        record_runs(&mut runs, std::iter::empty());
        assert_eq!(runs.len(), values.len() as u64);
    }
}
