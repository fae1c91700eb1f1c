//! The shard writer stage: takes sealed batches in order, has the [`CopySink`] commit each
//! exactly once, records commit metrics, publishes committed ticks and resolves receipts.
//! The PostgreSQL side (transaction, ledger, COPY, retries, dead letters) is
//! `pg/copy_sink.rs`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

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

/// Runs one shard's writer until the batcher (or the spool stage) hangs up. Without a
/// `sink` (the discard sink) batches count as committed as they arrive.
pub(crate) async fn run<R: Record>(
    shard: Arc<ShardContext<R>>,
    mut source: BatchSource<R>,
    mut sink: Option<CopySink>,
) {
    while let Some(SealedBatch { mut batch, fanout }) = source.recv(&shard.spool_backlog).await {
        if !load_spooled(&shard, &mut batch) {
            batch.rows.row_ends.clear();
        }
        let started = Instant::now();
        let taken_at = shard.clock.now();
        let rows = batch.rows() as u64;
        let mut report = BatchReport {
            shard: shard.index(),
            seq: batch.seq,
            rows_committed: rows,
            rows_dead_lettered: 0,
            answered_at: None,
        };
        // Rows the database rejected, and producer resends left out (indexes in the
        // batch): not published after commit.
        let mut dead_rows = Vec::new();
        if rows > 0 {
            if let Some(sink) = sink.as_mut() {
                let to_write = BatchToWrite {
                    origin: batch.earlier_run.as_ref().unwrap_or(&shard.origin),
                    seq: batch.seq,
                    rows: &batch.rows,
                    check_ledger_first: batch.earlier_run.is_some(),
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
            }
            let timing = sink.as_mut().and_then(|s| s.take_timing());
            record_commit(&shard, &batch, &report, started);
            record_stages(&shard, &batch, taken_at, timing);
        }
        if let (Some(q), Some(f)) = (shard.fanout.as_deref(), fanout) {
            q.push(without_rows(f, &dead_rows));
        }
        if let Some(sp) = &batch.spooled {
            sp.spool.committed(sp.entry, sp.memory_bytes);
        }
        // Without a spool, committed is the strongest point there is.
        report.answered_at = Some(Instant::now());
        batch.answer_all(|| Ok(report));
    }
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
