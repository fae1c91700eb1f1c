//! The spool stage of a shard's pipeline: between the batcher and the writer, on a
//! blocking thread. Appends each sealed batch to the shard's spool, fsyncs by policy,
//! answers durable receipts, and hands the batch on (in memory, or as a file position once
//! the memory budget is spent). See [`crate::spool`].

use std::sync::Arc;

use tokio::sync::mpsc;

use std::sync::atomic::Ordering;

use crate::batcher::{Sealed, Spooled};
use crate::ingestor::Shared;
use crate::record::Record;
use crate::spool::{encode_entry, Appender, Entry, Placed, ShardSpool};
use crate::writer::BatchReport;
use crate::Error;

/// Runs until the batcher hangs up; then syncs, answers and lets the writer finish.
pub(crate) fn run<R: Record>(
    shared: Arc<Shared<R>>,
    spool: Arc<ShardSpool>,
    mut appender: Appender,
    shard: usize,
    mut rx: mpsc::Receiver<Sealed<R>>,
    tx: mpsc::UnboundedSender<Sealed<R>>,
) {
    let owner = shard;
    let stream = shared.stream.clone();
    let queued = &shared.rings[shard].spool_queued;
    let send = |sealed: Sealed<R>| {
        queued.fetch_add(1, Ordering::Relaxed);
        tx.send(sealed).is_ok()
    };
    let handle = tokio::runtime::Handle::current();
    // Durable receipts waiting for the next fsync (interval policy).
    let mut unsynced: Vec<(
        u64,
        Vec<tokio::sync::oneshot::Sender<crate::Result<BatchReport>>>,
    )> = Vec::new();
    loop {
        let next = match appender.sync_in() {
            None => rx.blocking_recv(),
            Some(wait) if wait.is_zero() => rx.try_recv().ok(),
            Some(wait) => handle
                .block_on(tokio::time::timeout(wait, rx.recv()))
                .unwrap_or_default(),
        };
        let closed = next.is_none() && rx.is_closed() && rx.is_empty();
        match next {
            Some(mut sealed) if sealed.batch.rows() == 0 => {
                // Only receipts: they wait for the batches before them, nothing to append.
                let waiters = std::mem::take(&mut sealed.batch.durable_waiters);
                if !waiters.is_empty() {
                    unsynced.push((sealed.batch.seq, waiters));
                }
                if !send(sealed) {
                    return;
                }
            }
            Some(mut sealed) => {
                let rows = sealed.batch.rows() as u64;
                // The batcher's buffers can have up to twice the room the batch used (they
                // double as it grows); what travels on (and may wait long for PostgreSQL) is
                // cut to size.
                let entry = Entry {
                    stream: stream.to_string(),
                    shard: shard as u32,
                    seq: sealed.batch.seq,
                    row_ends: std::mem::take(&mut sealed.batch.row_ends),
                    body: sealed.batch.body.to_vec(),
                };
                let encoded = encode_entry(&entry);
                sealed.batch.body = bytes::Bytes::from(entry.body);
                sealed.batch.row_ends = entry.row_ends;
                sealed.batch.row_ends.shrink_to_fit();
                sealed.batch.pushed_at.shrink_to_fit();
                if let Some(f) = sealed.fanout.as_mut() {
                    f.ticks.shrink_to_fit();
                }
                match encoded.and_then(|e| appender.append(&e)) {
                    Ok(placed) => {
                        let (entry, memory_bytes, on_disk) = match placed {
                            Placed::Memory { entry, bytes } => (entry, bytes, None),
                            Placed::Disk(at) => {
                                // The writer reads it back: free the memory now.
                                sealed.batch.body = bytes::Bytes::new();
                                sealed.batch.row_ends = Vec::new();
                                sealed.batch.pushed_at = Vec::new();
                                if let (Some(f), Some(q)) =
                                    (sealed.fanout.take(), shared.fanout.as_deref())
                                {
                                    crate::metrics::add(&q.counters.spilled, f.ticks.len() as u64);
                                }
                                (at.entry, 0, Some(at))
                            }
                        };
                        sealed.batch.spooled = Some(Spooled {
                            owner,
                            entry,
                            memory_bytes,
                            on_disk,
                        });
                        let waiters = std::mem::take(&mut sealed.batch.durable_waiters);
                        if !waiters.is_empty() {
                            unsynced.push((sealed.batch.seq, waiters));
                        }
                    }
                    Err(e) => {
                        // The batch still goes to PostgreSQL; only the durable promise failed.
                        tracing::error!(shard, seq = sealed.batch.seq, rows, error = %e, "spool append failed; the batch goes on unspooled");
                        for w in sealed.batch.durable_waiters.drain(..) {
                            let _ = w.send(Err(Error::Spool {
                                reason: e.to_string(),
                            }));
                        }
                    }
                }
                if !send(sealed) {
                    tracing::error!(
                        shard,
                        "writer stopped; spooled batches wait for the next start"
                    );
                    return;
                }
            }
            None => {}
        }
        // Receipts with nothing unsynced before them are answered by a no-op sync.
        let answerable = !unsynced.is_empty() && appender.sync_in().is_none();
        if appender.sync_due() || answerable || (closed && appender.sync_in().is_some()) {
            let synced = appender.sync();
            for (seq, waiters) in unsynced.drain(..) {
                for w in waiters {
                    let _ = w.send(match &synced {
                        Ok(()) => Ok(BatchReport {
                            shard,
                            seq,
                            ..BatchReport::default()
                        }),
                        Err(e) => Err(Error::Spool {
                            reason: e.to_string(),
                        }),
                    });
                }
            }
            if let Err(e) = synced {
                tracing::error!(shard, error = %e, "spool fsync failed");
            }
        }
        if closed {
            if let Err(e) = appender.close() {
                tracing::error!(shard, error = %e, "closing the spool segment failed");
            }
            drop(spool);
            return;
        }
    }
}
