//! [`Ingestor`]: the public face of the pipeline — push records, wait for commits, read
//! metrics, shut down. The stages and their wiring are in `pipeline/`.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Backpressure, DeadLetterHook, IngestorConfig, Sink};
use crate::error::{Error, Result};
use crate::fanout::FanoutConfig;
use crate::metrics::{lock_histograms, MetricsSnapshot, ShardSnapshot};
use crate::pipeline::batch::BatchReport;
use crate::pipeline::batch::{Chunk, Slot};
use crate::pipeline::ring::ShardRing;
use crate::pipeline::{Pipeline, Started};
use crate::producer::{ProducerId, PushOutcome};
use crate::record::Record;
use crate::spool::config::SpoolConfig;

/// The owner of the pipeline's tasks; when the last [`Ingestor`] clone is dropped without
/// `shutdown`, the batchers still flush what they hold.
#[derive(Debug)]
struct PipelineTasks<R: Record> {
    pipeline: Arc<Pipeline<R>>,
    handles: Mutex<Option<Vec<JoinHandle<()>>>>,
    /// The fan-out publisher: stopped after the writers, so it sends their last batches.
    publisher: Mutex<Option<JoinHandle<()>>>,
}

impl<R: Record> Drop for PipelineTasks<R> {
    fn drop(&mut self) {
        self.pipeline.close();
        if let Some(q) = &self.pipeline.fanout {
            // Not shut down: publish what is queued (within drain_timeout) and stop.
            q.finish();
        }
    }
}

/// What a [`Receipt`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Fsynced in the spool.
    Spooled,
    /// Committed to PostgreSQL.
    Committed,
}

/// A running pipeline for one record kind: `S` shards, each a lock-free ring, a batcher
/// and a PostgreSQL writer with its own connection.
///
/// Cheap to clone; clones share the pipeline. Push from any thread or task.
///
/// ```no_run
/// # async fn demo() -> christmas_core::Result<()> {
/// use christmas_core::{Ingestor, Side, Symbol, Trade};
/// let ingestor = Ingestor::<Trade>::builder()
///     .database_url("postgres://christmas@127.0.0.1:55432/christmas")
///     .shards(2)
///     .start()
///     .await?;
/// ingestor.push(Trade {
///     time_ns: 1_719_878_400_000_000_000,
///     symbol: Symbol::new("ESU4")?,
///     price: 5_512.25,
///     volume: 3.0,
///     side: Side::Buy,
///     exchange_seq: 1,
/// })?;
/// let report = ingestor.shutdown().await?;
/// println!("{} rows committed", report.rows_committed());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Ingestor<R: Record> {
    pipeline: Arc<Pipeline<R>>,
    tasks: Arc<PipelineTasks<R>>,
}

impl<R: Record> Clone for Ingestor<R> {
    fn clone(&self) -> Self {
        Ingestor {
            pipeline: self.pipeline.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

/// Builds an [`Ingestor`]. Every setter documents its default.
#[derive(Debug)]
pub struct IngestorBuilder<R> {
    config: IngestorConfig,
    _kind: PhantomData<fn() -> R>,
}

impl<R: Record> IngestorBuilder<R> {
    /// Starts from a whole config.
    pub fn from_config(config: IngestorConfig) -> Self {
        IngestorBuilder {
            config,
            _kind: PhantomData,
        }
    }

    /// PostgreSQL URL; one connection per shard.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.config.sink = Some(Sink::Postgres(url.into()));
        self
    }

    /// Discard sealed batches instead of writing them (a null sink for benchmarks).
    pub fn discard(mut self) -> Self {
        self.config.sink = Some(Sink::Discard);
        self
    }

    /// Number of shards, 1–256 (default 2).
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }

    /// Records per shard ring (default 65,536).
    pub fn ring_capacity(mut self, n: usize) -> Self {
        self.config.ring_capacity = n;
        self
    }

    /// Seal a batch at this many rows (default 50,000).
    pub fn batch_max_rows(mut self, n: usize) -> Self {
        self.config.batch_max_rows = n;
        self
    }

    /// Seal a batch before its COPY body passes this many bytes (default 8 MiB).
    pub fn batch_max_bytes(mut self, n: usize) -> Self {
        self.config.batch_max_bytes = n;
        self
    }

    /// Seal a batch when its first row has waited this long (default 5 ms).
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.linger = d;
        self
    }

    /// What a full ring does to producers (default [`Backpressure::Block`]).
    pub fn backpressure(mut self, b: Backpressure) -> Self {
        self.config.backpressure = b;
        self
    }

    /// Sealed batches queued per shard while one commits (default 2).
    pub fn in_flight_batches(mut self, n: usize) -> Self {
        self.config.in_flight_batches = n;
        self
    }

    /// Target table (default: the record kind's, `market_data` or `quotes`).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.config.table = Some(name.into());
        self
    }

    /// Ledger table (default `ingest_batches`).
    pub fn ledger_table(mut self, name: impl Into<String>) -> Self {
        self.config.ledger_table = name.into();
        self
    }

    /// Dead-letter table (default `ingest_dead_letters`).
    pub fn dead_letter_table(mut self, name: impl Into<String>) -> Self {
        self.config.dead_letter_table = name.into();
        self
    }

    /// Stream name in the ledger (default `christmas`; a boot id is appended).
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.config.stream = name.into();
        self
    }

    /// Reconnect backoff bounds (defaults 50 ms and 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.reconnect_min = min;
        self.config.reconnect_max = max;
        self
    }

    /// How often partition maintenance runs on the target table (default 60 s; `None`:
    /// never). See [`IngestorConfig::partition_maintenance`].
    pub fn partition_maintenance(mut self, every: Option<Duration>) -> Self {
        self.config.partition_maintenance = every;
        self
    }

    /// Publishes every batch to Redis as well (default: off). See [`crate::fanout`].
    pub fn fanout(mut self, config: FanoutConfig) -> Self {
        self.config.fanout = Some(config);
        self
    }

    /// Spools sealed batches on local disk before PostgreSQL (default: off): enables
    /// [`Ingestor::push_durable`] and accepting while the database is away. See
    /// [`crate::spool`].
    pub fn spool(mut self, config: SpoolConfig) -> Self {
        self.config.spool = Some(config);
        self
    }

    /// Called for every dead-lettered row, after it is stored.
    pub fn on_dead_letter(mut self, hook: DeadLetterHook) -> Self {
        self.config.on_dead_letter = Some(hook);
        self
    }

    /// Validates the config, connects every shard's writer and starts the tasks. Must be
    /// called inside a Tokio runtime.
    pub async fn start(self) -> Result<Ingestor<R>> {
        Ingestor::start(self.config).await
    }
}
impl<R: Record> Ingestor<R> {
    /// A builder with the default config.
    pub fn builder() -> IngestorBuilder<R> {
        IngestorBuilder::from_config(IngestorConfig::default())
    }

    async fn start(config: IngestorConfig) -> Result<Ingestor<R>> {
        let Started {
            pipeline,
            tasks,
            publisher,
        } = Pipeline::start(config).await?;
        Ok(Ingestor {
            tasks: Arc::new(PipelineTasks {
                pipeline: pipeline.clone(),
                handles: Mutex::new(Some(tasks)),
                publisher: Mutex::new(publisher),
            }),
            pipeline,
        })
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.pipeline.router.shards()
    }

    /// The shard `record` goes through.
    pub fn shard_for(&self, record: &R) -> usize {
        self.pipeline.router.shard_for(record.symbol())
    }

    /// This run's stream name in the ledger (`<stream>-<boot id>`).
    pub fn stream(&self) -> &str {
        &self.pipeline.stream
    }

    #[inline]
    fn ring(&self, shard: usize) -> &ShardRing<R> {
        &self.pipeline.shards[shard].ring
    }

    #[inline]
    fn slot(&self, record: R) -> Slot<R> {
        Self::slot_at(record, self.pipeline.clock.now())
    }

    /// A record's slot stamped `pushed_at`: a push of many records reads the clock once
    /// (a clock read per record was a few percent of the daemon's CPU).
    #[inline]
    fn slot_at(record: R, pushed_at: u64) -> Slot<R> {
        Slot::Record { record, pushed_at }
    }

    #[inline]
    fn full(&self, shard: usize, accepted: usize) -> Error {
        Error::Full {
            shard,
            capacity: self.pipeline.config.ring_capacity,
            accepted,
        }
    }

    /// Enqueues without waiting: `Err(Full)` when the shard's ring is full, whatever the
    /// backpressure policy.
    #[inline]
    pub fn try_push(&self, record: R) -> Result<()> {
        let shard = self.pipeline.router.shard_for(record.symbol());
        let ring = self.ring(shard);
        let _in = ring.enter().ok_or(Error::Closed)?;
        ring.try_push(self.slot(record))
            .map_err(|_| self.full(shard, 0))
    }

    /// Enqueues following the backpressure policy: `Block` waits on this thread, `Reject`
    /// returns `Err(Full)`, `DropOldest` evicts and counts. From async code prefer
    /// [`Ingestor::push_async`], which does not block the executor.
    #[inline]
    pub fn push(&self, record: R) -> Result<()> {
        let shard = self.pipeline.router.shard_for(record.symbol());
        let _in = self.ring(shard).enter().ok_or(Error::Closed)?;
        self.push_entered(shard, self.slot(record))
            .map_err(|_| self.full(shard, 0))
    }

    /// Pushes into a ring already entered. `Err` only under `Reject`.
    #[inline]
    fn push_entered(&self, shard: usize, slot: Slot<R>) -> std::result::Result<(), ()> {
        let ring = self.ring(shard);
        match self.pipeline.config.backpressure {
            Backpressure::Block => {
                ring.push_blocking(slot);
                Ok(())
            }
            Backpressure::Reject => ring.try_push(slot).map_err(|_| ()),
            Backpressure::DropOldest => {
                if let Some(Slot::Barrier { waiter, .. }) = ring.force_push(slot) {
                    let _ = waiter.send(Err(Error::Dropped { shard }));
                }
                Ok(())
            }
        }
    }

    /// Pushes every record following the policy. Under `Reject` it stops at the first record
    /// that does not fit and returns `Err(Full { accepted, .. })`: the first `accepted`
    /// records are in.
    pub fn push_batch(&self, records: &[R]) -> Result<()> {
        let pushed_at = self.pipeline.clock.now();
        for (i, record) in records.iter().enumerate() {
            let shard = self.pipeline.router.shard_for(record.symbol());
            let _in = self.ring(shard).enter().ok_or(Error::Closed)?;
            self.push_entered(shard, Self::slot_at(*record, pushed_at))
                .map_err(|_| self.full(shard, i))?;
        }
        Ok(())
    }

    /// Enqueues following the policy, awaiting space under `Block` without blocking the
    /// executor.
    pub async fn push_async(&self, record: R) -> Result<()> {
        let shard = self.pipeline.router.shard_for(record.symbol());
        let slot = self.slot(record);
        self.push_async_to(shard, slot, 0).await
    }

    async fn push_async_to(&self, shard: usize, slot: Slot<R>, accepted: usize) -> Result<()> {
        let ring = self.ring(shard);
        let _in = ring.enter().ok_or(Error::Closed)?;
        match self.pipeline.config.backpressure {
            Backpressure::Block => {
                ring.push_waiting(slot).await;
                Ok(())
            }
            _ => self
                .push_entered(shard, slot)
                .map_err(|_| self.full(shard, accepted)),
        }
    }

    /// [`Ingestor::push_async`] for every record, in order.
    pub async fn push_batch_async(&self, records: &[R]) -> Result<()> {
        self.push_all_async(records).await.map(|_| ())
    }

    /// [`Ingestor::push_async`] for every record, in order; returns the shards touched.
    async fn push_all_async(&self, records: &[R]) -> Result<ShardSet> {
        let mut touched = ShardSet::default();
        let pushed_at = self.pipeline.clock.now();
        for (i, record) in records.iter().enumerate() {
            let shard = self.pipeline.router.shard_for(record.symbol());
            touched.insert(shard);
            self.push_async_to(shard, Self::slot_at(*record, pushed_at), i)
                .await?;
        }
        Ok(touched)
    }

    /// Pushes a named producer's `records`, numbered by `seqs`, as one chunk per
    /// shard (each waits for ring space whatever the backpressure policy: a chunk is all
    /// or nothing); then a [`Receipt`] at `ack` (none for `Accepted`). The caller holds the
    /// producer's lock, so its chunks reach each shard in sequence order.
    pub(crate) async fn push_produced(
        &self,
        producer: &ProducerId,
        records: &[R],
        seqs: crate::producer::Seqs<'_>,
        outcome: &Arc<PushOutcome>,
        receipt: Option<Durability>,
    ) -> Result<Option<Receipt>> {
        if records.is_empty() {
            return Ok(None);
        }
        // Room for an even share and a quarter more: a replay's 4,096-tick chunks otherwise
        // grow each shard's vector a dozen times, copying it and faulting in new pages.
        let share = records.len() / self.shards() + records.len() / (4 * self.shards()) + 8;
        let mut per_shard: Vec<Vec<(R, u64)>> = (0..self.shards())
            .map(|_| Vec::with_capacity(share))
            .collect();
        for (i, record) in records.iter().enumerate() {
            let shard = self.pipeline.router.shard_for(record.symbol());
            per_shard[shard].push((*record, seqs.of(i)));
        }
        let pushed_at = self.pipeline.clock.now();
        let mut touched = ShardSet::default();
        for (shard, records) in per_shard.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            touched.insert(shard);
            let ring = self.ring(shard);
            let _in = ring.enter().ok_or(Error::Closed)?;
            let chunk = Chunk {
                producer: producer.clone(),
                records,
                pushed_at,
                shard,
                outcome: outcome.clone(),
            };
            ring.push_waiting(Slot::Chunk(Box::new(chunk))).await;
        }
        match receipt {
            None => Ok(None),
            Some(Durability::Spooled) => self.barriers(touched.iter(), true).await.map(Some),
            Some(Durability::Committed) => self.barriers(touched.iter(), false).await.map(Some),
        }
    }

    /// Pushes `records` (as [`Ingestor::push_batch_async`]) and returns a [`Receipt`] that
    /// resolves once all of them are committed (or dead-lettered).
    pub async fn push_with_receipt(&self, records: &[R]) -> Result<Receipt> {
        let touched = self.push_all_async(records).await?;
        self.barriers(touched.iter(), false).await
    }

    /// Pushes `records` (as [`Ingestor::push_batch_async`]) and returns a [`Receipt`] that
    /// resolves once all of them are fsynced in the spool: they survive a crash of this
    /// process and are committed after the next start if not before. Needs a spool
    /// ([`IngestorBuilder::spool`]); without one, [`Error::Spool`] before anything is pushed.
    pub async fn push_durable(&self, records: &[R]) -> Result<Receipt> {
        if self.pipeline.spools.is_empty() {
            return Err(Error::Spool {
                reason: "the durable ack level needs a spool; none is configured".into(),
            });
        }
        let touched = self.push_all_async(records).await?;
        self.barriers(touched.iter(), true).await
    }

    /// A receipt for everything pushed so far by this caller, on every shard: resolves when
    /// all of it is committed.
    pub async fn receipt(&self) -> Result<Receipt> {
        self.barriers(0..self.shards(), false).await
    }

    /// Waits until everything pushed so far by this caller is committed.
    pub async fn flush(&self) -> Result<CommitReport> {
        self.receipt().await?.wait().await
    }

    async fn barriers(
        &self,
        shards: impl Iterator<Item = usize>,
        durable: bool,
    ) -> Result<Receipt> {
        let mut waits = Vec::new();
        for shard in shards {
            let ring = self.ring(shard);
            let _in = ring.enter().ok_or(Error::Closed)?;
            let (tx, rx) = oneshot::channel();
            // Barriers always wait for space: evicting a record for one would lose data.
            ring.push_waiting(Slot::Barrier {
                waiter: tx,
                durable,
            })
            .await;
            waits.push((shard, rx));
        }
        Ok(Receipt { waits })
    }

    /// Everything measured so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snap = MetricsSnapshot::empty();
        for shard in self.pipeline.shards.iter() {
            let (ring, c) = (&shard.ring, &shard.counters);
            let depth = ring.len() as u64;
            let dropped = ring.dropped_records();
            snap.shards.push(ShardSnapshot {
                accepted: ring.drained_records() + depth + dropped,
                dropped,
                rejected_full: ring.rejected_full(),
                ring_depth: depth,
                ring_capacity: ring.capacity() as u64,
                rows_committed: crate::metrics::load(&c.rows_committed),
                batches_committed: crate::metrics::load(&c.batches_committed),
                retries: crate::metrics::load(&c.retries),
                connects: crate::metrics::load(&c.connects),
                dead_lettered: crate::metrics::load(&c.dead_lettered),
                ledger_hits: crate::metrics::load(&c.ledger_hits),
                producer_resends: crate::metrics::load(&c.producer_resends),
                grouped_commits: crate::metrics::load(&c.grouped_commits),
            });
            let h = lock_histograms(&shard.histograms);
            // Histograms auto-resize, so adding cannot fail.
            let _ = snap.push_to_commit_us.add(&h.push_to_commit_us);
            let _ = snap.batch_commit_us.add(&h.batch_commit_us);
            snap.stages.add(&h.stages);
            let _ = snap.batch_rows.add(&h.batch_rows);
        }
        snap.fanout = self.pipeline.fanout.as_ref().map(|q| q.snapshot());
        if !self.pipeline.spools.is_empty() {
            let mut spool = crate::spool::shard_spool::SpoolSnapshot::default();
            for s in self.pipeline.spools.iter() {
                s.snapshot(&mut spool);
            }
            snap.spool = Some(spool);
        }
        snap.maintenance = self.pipeline.maintenance.last();
        snap
    }

    /// True once shutdown has begun.
    pub fn is_closed(&self) -> bool {
        self.pipeline.is_closed()
    }

    /// Stops accepting records, flushes every ring and batch to the database, waits for the
    /// writers and reports the totals. Later pushes fail with [`Error::Closed`]. Calling it
    /// again returns the same totals.
    pub async fn shutdown(&self) -> Result<MetricsSnapshot> {
        self.pipeline.close();
        let handles = self
            .tasks
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for h in handles.into_iter().flatten() {
            h.await.map_err(|e| Error::Task(e.to_string()))?;
        }
        // Every batch is committed and queued: let the publisher send them, then stop.
        if let Some(q) = &self.pipeline.fanout {
            q.finish();
        }
        let publisher = self
            .tasks
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = publisher {
            h.await.map_err(|e| Error::Task(e.to_string()))?;
        }
        let snap = self.metrics();
        tracing::info!(
            stream = %self.pipeline.stream,
            rows = snap.rows_committed(),
            batches = snap.batches_committed(),
            dead_lettered = snap.dead_lettered(),
            dropped = snap.dropped(),
            "ingestor stopped"
        );
        Ok(snap)
    }
}

/// Resolves when the records it covers are committed. Dropping it does not cancel anything.
#[derive(Debug)]
#[must_use = "a receipt does nothing unless waited on"]
pub struct Receipt {
    waits: Vec<(usize, oneshot::Receiver<Result<BatchReport>>)>,
}

/// What a [`Receipt`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// For each shard the receipt covered, the batch that closed it.
    pub batches: Vec<BatchReport>,
}

impl Receipt {
    /// Waits for every shard the receipt covers.
    pub async fn wait(self) -> Result<CommitReport> {
        let mut report = CommitReport::default();
        for (shard, rx) in self.waits {
            match rx.await {
                Ok(Ok(b)) => report.batches.push(b),
                Ok(Err(e)) => return Err(e),
                // The sender was dropped without an answer: the pipeline stopped.
                Err(_) => return Err(Error::Dropped { shard }),
            }
        }
        Ok(report)
    }
}

/// A small set of shard indexes (shards ≤ 256).
#[derive(Default)]
struct ShardSet([u64; 4]);

impl ShardSet {
    fn insert(&mut self, shard: usize) {
        debug_assert!(shard < 256);
        self.0[shard / 64] |= 1 << (shard % 64);
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..256).filter(|&s| self.0[s / 64] & (1 << (s % 64)) != 0)
    }
}
