//! The shard writer stage: takes sealed batches in order, has the [`CopySink`] commit each
//! exactly once, records commit metrics, publishes committed ticks and resolves receipts.
//! The PostgreSQL side (transaction, ledger, COPY, retries, dead letters) is
//! `pg/copy_sink.rs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::binary_copy::CopyRows;
use crate::config::valid_stream;
use crate::fanout::publisher::FanoutBatch;
use crate::metrics::{self, lock_histograms};
use crate::pg::copy_sink::{BatchToWrite, CopySink};
use crate::pg::ledger::BatchOrigin;
use crate::pipeline::batch::{BatchReport, CopyBatch, SealedBatch};
use crate::pipeline::shard::{ShardContext, SpoolBacklog};
use crate::producer::BatchClaims;
use crate::record::Record;

/// Where a writer's batches come from: the batcher, or the spool stage.
#[derive(Debug)]
pub(crate) enum BatchSource<R> {
    /// Straight from the batcher (no spool): bounded, so a busy writer pushes back.
    Batcher(mpsc::Receiver<SealedBatch<R>>),
    /// From the spool stage, which bounds itself by the spool's size.
    SpoolStage(mpsc::UnboundedReceiver<SealedBatch<R>>),
}

impl<R> BatchSource<R> {
    /// A batch already waiting, if there is one.
    fn try_recv(&mut self, backlog: &SpoolBacklog) -> Option<SealedBatch<R>> {
        match self {
            BatchSource::Batcher(rx) => rx.try_recv().ok(),
            BatchSource::SpoolStage(rx) => {
                let got = rx.try_recv().ok();
                if got.is_some() {
                    backlog.taken();
                }
                got
            }
        }
    }

    async fn recv(&mut self, backlog: &SpoolBacklog) -> Option<SealedBatch<R>> {
        match self {
            BatchSource::Batcher(rx) => rx.recv().await,
            BatchSource::SpoolStage(rx) => {
                let got = rx.recv().await;
                if got.is_some() {
                    backlog.taken();
                }
                got
            }
        }
    }
}

/// Brings a batch left on disk by the spool back into memory, with its origin when an
/// earlier run wrote it. False when it cannot be read (reported; skipped).
fn load_spooled<R>(shard: &ShardContext<R>, batch: &mut CopyBatch) -> bool {
    let Some(sp) = &batch.spooled else {
        return true;
    };
    let Some(at) = &sp.on_disk else { return true };
    match sp.spool.read(at) {
        Ok(entry) => {
            if *entry.stream != *shard.origin.stream {
                if !valid_stream(&entry.stream) {
                    tracing::error!(segment = %at.path.display(), offset = at.offset, "spool entry names an invalid stream; skipped");
                    return false;
                }
                batch.earlier_run = Some(BatchOrigin {
                    stream: entry.stream.as_str().into(),
                    shard: entry.shard as usize,
                });
                batch.seq = entry.seq;
                batch.claims = BatchClaims::from_spooled(&entry.claims);
            }
            batch.rows.body = Bytes::from(entry.body);
            batch.rows.row_ends = entry.row_ends;
            true
        }
        Err(e) => {
            tracing::error!(segment = %at.path.display(), offset = at.offset, error = %e, "spooled batch unreadable; skipped");
            false
        }
    }
}

/// The most batches one transaction commits together (its ledger insert names each).
const MAX_GROUP: usize = 256;

/// Whether a batch may be committed together with others: rows, no producer claims (their
/// refusals are handled batch by batch), and sealed by this run (an earlier run's may be in
/// already, so the ledger is asked first).
fn groupable(batch: &CopyBatch) -> bool {
    batch.rows() > 0 && batch.claims.is_empty() && batch.earlier_run.is_none()
}

/// Runs one shard's writer until the batcher (or the spool stage) hangs up. Without a
/// `sink` (the discard sink) batches count as committed as they arrive.
///
/// Batches that queued up behind a commit are committed together, in one transaction
/// (up to the batch limits and [`MAX_GROUP`] batches): a writer that fell behind, for
/// example behind the small batches `ack=durable` seals every few milliseconds, catches
/// up instead of paying a transaction per batch. If that transaction fails, each batch is
/// written alone, asking the ledger first.
pub(crate) async fn run<R: Record>(
    shard: Arc<ShardContext<R>>,
    mut source: BatchSource<R>,
    mut sink: Option<CopySink>,
) {
    // A batch taken while gathering a group that could not join it (already prepared).
    let mut next: Option<SealedBatch<R>> = None;
    loop {
        let first = match next.take() {
            Some(b) => b,
            None => match source.recv(&shard.spool_backlog).await {
                Some(b) => prepared(&shard, b),
                None => return,
            },
        };
        let mut group = vec![first];
        if sink.is_some() && groupable(&group[0].batch) {
            let limits = shard.limits;
            let (mut rows, mut bytes) = (group[0].batch.rows(), group[0].batch.rows.body.len());
            while group.len() < MAX_GROUP {
                let Some(more) = source.try_recv(&shard.spool_backlog) else {
                    break;
                };
                let more = prepared(&shard, more);
                let (r, b) = (more.batch.rows(), more.batch.rows.body.len());
                if !groupable(&more.batch)
                    || rows + r > limits.max_rows
                    || bytes + b > limits.max_bytes
                {
                    next = Some(more);
                    break;
                }
                (rows, bytes) = (rows + r, bytes + b);
                group.push(more);
            }
        }
        let taken_at = shard.clock.now();
        let started = Instant::now();
        let mut ask_ledger = false;
        if let (Some(s), true) = (sink.as_mut(), group.len() > 1) {
            let parts: Vec<(u64, &CopyRows)> =
                group.iter().map(|b| (b.batch.seq, &b.batch.rows)).collect();
            if s.write_group(&shard.origin, &parts).await {
                metrics::add(&shard.counters.grouped_commits, 1);
                let mut timing = s.take_timing();
                for SealedBatch { batch, fanout } in group {
                    let report = BatchReport {
                        shard: shard.index(),
                        seq: batch.seq,
                        rows_committed: batch.rows() as u64,
                        rows_dead_lettered: 0,
                        answered_at: None,
                    };
                    // The transaction's COPY and COMMIT times count once.
                    finish(
                        &shard,
                        batch,
                        fanout,
                        report,
                        &[],
                        started,
                        taken_at,
                        timing.take(),
                    );
                }
                continue;
            }
            ask_ledger = true;
        }
        for b in group {
            write_one(&shard, b, sink.as_mut(), ask_ledger, taken_at).await;
        }
    }
}

/// The batch with its rows in memory (a batch the spool left on disk is read back).
fn prepared<R>(shard: &ShardContext<R>, mut b: SealedBatch<R>) -> SealedBatch<R> {
    if !load_spooled(shard, &mut b.batch) {
        b.batch.rows.row_ends.clear();
    }
    b
}

/// Writes one batch exactly once (asking the ledger first when it may be in already) and
/// finishes it.
async fn write_one<R: Record>(
    shard: &ShardContext<R>,
    SealedBatch { mut batch, fanout }: SealedBatch<R>,
    sink: Option<&mut CopySink>,
    ask_ledger: bool,
    taken_at: u64,
) {
    let started = Instant::now();
    let rows = batch.rows() as u64;
    let mut report = BatchReport {
        shard: shard.index(),
        seq: batch.seq,
        rows_committed: rows,
        rows_dead_lettered: 0,
        answered_at: None,
    };
    // Rows the database rejected, and producer resends left out (indexes in the batch):
    // not published after commit.
    let mut dead_rows = Vec::new();
    let mut timing = None;
    if rows > 0 {
        if let Some(sink) = sink {
            let to_write = BatchToWrite {
                origin: batch.earlier_run.as_ref().unwrap_or(&shard.origin),
                seq: batch.seq,
                rows: &batch.rows,
                check_ledger_first: ask_ledger || batch.earlier_run.is_some(),
            };
            let written = sink
                .write(&shard.counters, to_write, &mut batch.claims)
                .await;
            let dead = written.dead.len() as u64;
            report.rows_committed = rows - dead - written.resent.len() as u64;
            report.rows_dead_lettered = dead;
            dead_rows = written.dead;
            if !written.resent.is_empty() {
                dead_rows.extend(written.resent);
                dead_rows.sort_unstable();
            }
            timing = sink.take_timing();
        }
    }
    finish(
        shard, batch, fanout, report, &dead_rows, started, taken_at, timing,
    );
}

/// After a batch's commit: its metrics and stages, its fan-out, its spool entry released,
/// and its waiters answered.
#[allow(clippy::too_many_arguments)]
fn finish<R: Record>(
    shard: &ShardContext<R>,
    mut batch: CopyBatch,
    fanout: Option<FanoutBatch<R>>,
    mut report: BatchReport,
    dead_rows: &[usize],
    started: Instant,
    taken_at: u64,
    timing: Option<(std::time::Duration, std::time::Duration)>,
) {
    if batch.rows() > 0 {
        record_commit(shard, &batch, &report, started);
        record_stages(shard, &batch, taken_at, timing);
    }
    if let (Some(q), Some(f)) = (shard.fanout.as_deref(), fanout) {
        q.push(without_rows(f, dead_rows));
    }
    if let Some(sp) = &batch.spooled {
        sp.spool.committed(sp.entry, sp.memory_bytes);
    }
    // Without a spool, committed is the strongest point there is.
    report.answered_at = Some(Instant::now());
    batch.answer_all(|| Ok(report));
    shard.buffers.keep(batch);
}

/// Counts a committed batch and records its latencies.
fn record_commit<R>(
    shard: &ShardContext<R>,
    batch: &CopyBatch,
    report: &BatchReport,
    started: Instant,
) {
    let committed_at = shard.clock.now();
    let c = &shard.counters;
    metrics::add(&c.rows_committed, report.rows_committed);
    metrics::add(&c.batches_committed, 1);
    let mut h = lock_histograms(&shard.histograms);
    metrics::record_runs(
        &mut h.push_to_commit_us,
        batch
            .pushed_at
            .iter()
            .map(|&p| committed_at.saturating_sub(p) / 1_000),
    );
    let _ = h
        .batch_commit_us
        .record(started.elapsed().as_micros() as u64);
    let _ = h.batch_rows.record(batch.rows() as u64);
}

/// Records where the batch's time went, stage by stage (not for an earlier run's batch,
/// whose push times are not this run's).
fn record_stages<R>(
    shard: &ShardContext<R>,
    batch: &CopyBatch,
    taken_at: u64,
    timing: Option<(std::time::Duration, std::time::Duration)>,
) {
    if batch.earlier_run.is_some() || batch.sealed_at == 0 {
        return;
    }
    let mut h = lock_histograms(&shard.histograms);
    let stages = &mut h.stages;
    let sealed = batch.sealed_at;
    let rows = batch.pushed_at.len();
    let pushed = || batch.pushed_at.iter().copied();
    metrics::record_runs(
        &mut stages.ring_us,
        pushed()
            .zip(batch.drains.per_row(rows))
            .map(|(p, d)| d.saturating_sub(p) / 1_000),
    );
    metrics::record_runs(
        &mut stages.linger_us,
        batch
            .drains
            .per_row(rows)
            .map(|d| sealed.saturating_sub(d) / 1_000),
    );
    metrics::record_runs(
        &mut stages.batching_us,
        pushed().map(|p| sealed.saturating_sub(p) / 1_000),
    );
    // Without a spool the batch goes from the batcher straight to the writer's queue.
    let queued = match batch.handed_on_at {
        0 => sealed,
        handed_on => {
            let _ = stages
                .spool_us
                .record(handed_on.saturating_sub(sealed) / 1_000);
            handed_on
        }
    };
    let _ = stages
        .queue_us
        .record(taken_at.saturating_sub(queued) / 1_000);
    if let Some((copy, commit)) = timing {
        let _ = stages.copy_us.record(copy.as_micros() as u64);
        let _ = stages.commit_us.record(commit.as_micros() as u64);
    }
}

/// The fan-out batch without the rows at `dead_rows` (ascending): their sequences become
/// gaps, so consumers see the ticks were not delivered.
fn without_rows<R>(mut f: FanoutBatch<R>, dead_rows: &[usize]) -> FanoutBatch<R> {
    if !dead_rows.is_empty() {
        let mut i = 0;
        f.ticks.retain(|_| {
            i += 1;
            dead_rows.binary_search(&(i - 1)).is_err()
        });
    }
    f
}
