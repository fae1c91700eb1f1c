//! [`ShardContext`]: what each stage of one shard is handed (its ring, counters,
//! histograms, spool and settings) instead of the whole engine and an index.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::PipelineClock;
use crate::config::IngestorConfig;
use crate::fanout::publisher::FanoutQueue;
use crate::fanout::PublishPoint;
use crate::metrics::{ShardCounters, ShardHistograms};
use crate::pg::ledger::BatchOrigin;
use crate::pipeline::batch::BufferPool;
use crate::pipeline::ring::ShardRing;
use crate::spool::shard_spool::ShardSpool;

/// When the batcher seals a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Seal at this many rows.
    pub max_rows: usize,
    /// Seal before the COPY body passes this many bytes.
    pub max_bytes: usize,
    /// Seal when the first row has waited this long (and the writer is free).
    pub linger: Duration,
}

impl BatchLimits {
    /// The limits `config` sets.
    pub fn of(config: &IngestorConfig) -> Self {
        BatchLimits {
            max_rows: config.batch_max_rows,
            max_bytes: config.batch_max_bytes,
            linger: config.linger,
        }
    }
}

/// Spooled batches handed on to the writer and not yet taken by it: with a spool, the
/// batcher's "writer free" test for group commit.
#[derive(Debug, Default)]
pub(crate) struct SpoolBacklog(AtomicUsize);

impl SpoolBacklog {
    /// The spool stage handed a batch on.
    pub fn handed_on(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The writer took a batch.
    pub fn taken(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// True when the writer has taken every batch handed on.
    pub fn is_empty(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

/// One shard's share of the pipeline: everything its batcher, spool stage and writer use.
#[derive(Debug)]
pub(crate) struct ShardContext<R> {
    /// This run's stream name and this shard's index: the ledger key of its batches.
    pub origin: BatchOrigin,
    /// The shard's ring; producers push into it, the batcher drains it.
    pub ring: ShardRing<R>,
    /// Counters the writer keeps.
    pub counters: ShardCounters,
    /// Latencies, locked once per batch.
    pub histograms: Mutex<ShardHistograms>,
    /// The time base of push → commit latencies (shared by every shard).
    pub clock: PipelineClock,
    /// When to seal.
    pub limits: BatchLimits,
    /// The Redis fan-out queue, when fan-out is on.
    pub fanout: Option<Arc<FanoutQueue<R>>>,
    /// Fan-out publishes at seal (the batcher), not after commit (the writer).
    pub publish_sealed: bool,
    /// The shard's spool, when there is one.
    pub spool: Option<Arc<ShardSpool>>,
    /// Spooled batches waiting for the writer.
    pub spool_backlog: SpoolBacklog,
    /// Finished batches' buffers, for the batcher's next batches.
    pub buffers: BufferPool,
}

impl<R> ShardContext<R> {
    /// Shard `index` of a pipeline configured by `config`.
    pub fn new(
        index: usize,
        stream: Arc<str>,
        config: &IngestorConfig,
        clock: PipelineClock,
        fanout: Option<Arc<FanoutQueue<R>>>,
        spool: Option<Arc<ShardSpool>>,
    ) -> Self {
        ShardContext {
            origin: BatchOrigin {
                stream,
                shard: index,
            },
            ring: ShardRing::new(config.ring_capacity),
            counters: ShardCounters::default(),
            histograms: Mutex::new(ShardHistograms::new()),
            clock,
            limits: BatchLimits::of(config),
            publish_sealed: config
                .fanout
                .as_ref()
                .is_some_and(|f| f.publish == PublishPoint::Sealed),
            fanout,
            spool,
            spool_backlog: SpoolBacklog::default(),
            buffers: BufferPool::default(),
        }
    }

    /// The shard's index.
    pub fn index(&self) -> usize {
        self.origin.shard
    }
}
