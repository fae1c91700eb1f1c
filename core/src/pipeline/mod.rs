//! The pipeline behind an [`Ingestor`](crate::Ingestor): per shard a ring, a batcher, an
//! optional spool stage and a writer, wired here.
//!
//! ```text
//! producers ─► ShardRing ─► batcher ─► (spool stage) ─► writer ─► CopySink (PostgreSQL)
//!              ring.rs      batcher.rs  spool_stage.rs  writer.rs  pg/copy_sink.rs
//! ```
//!
//! The travelling types (`Slot`, `OpenBatch`, `SealedBatch`, `BatchReport`) are in
//! `batch.rs`; each stage gets its shard's `ShardContext` (`shard.rs`) and its channels,
//! and depends only on what lies below it.

pub(crate) mod batch;
pub(crate) mod batcher;
pub(crate) mod partition_task;
pub(crate) mod ring;
pub(crate) mod shard;
pub(crate) mod spool_stage;
pub(crate) mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::PipelineClock;
use crate::config::{IngestorConfig, Sink};
use crate::error::Result;
use crate::fanout::publisher::{self, FanoutQueue};
use crate::pg::copy_sink::CopySink;
use crate::pg::ledger::BatchLedger;
use crate::record::Record;
use crate::router::ShardRouter;
use crate::spool::appender::Appender;
use crate::spool::config::SpoolConfig;
use crate::spool::shard_spool::{Recovered, ShardSpool};
use batch::{CopyBatch, SealedBatch};
use partition_task::{MaintenanceStatus, PartitionTask};
use shard::ShardContext;
use writer::BatchSource;

/// A running pipeline's state, shared by the ingestor's clones and its tasks.
#[derive(Debug)]
pub(crate) struct Pipeline<R> {
    /// The validated config it was started with.
    pub config: IngestorConfig,
    /// Which shard a symbol goes to.
    pub router: ShardRouter,
    /// Each shard's context: its ring, counters, histograms, spool.
    pub shards: Box<[Arc<ShardContext<R>>]>,
    /// The time base of push → commit latencies.
    pub clock: PipelineClock,
    /// Set once by [`Pipeline::close`].
    closed: AtomicBool,
    /// `<config.stream>-<boot id>`: this run's name in the ledger.
    pub stream: Arc<str>,
    /// The partition maintenance task's last report and stop signal.
    pub maintenance: Arc<MaintenanceStatus>,
    /// The Redis fan-out queue, when fan-out is on.
    pub fanout: Option<Arc<FanoutQueue<R>>>,
    /// Each shard's spool, then the spools of shards an earlier run had beyond this run's
    /// count (recovered only). Empty without a spool.
    pub spools: Box<[Arc<ShardSpool>]>,
}

/// A started pipeline and its tasks.
pub(crate) struct Started<R> {
    /// The pipeline's state.
    pub pipeline: Arc<Pipeline<R>>,
    /// Batchers, spool stages, writers and partition maintenance.
    pub tasks: Vec<JoinHandle<()>>,
    /// The fan-out publisher: stopped after the writers, so it sends their last batches.
    pub publisher: Option<JoinHandle<()>>,
}

impl<R: Record> Pipeline<R> {
    /// Validates `config`, reads back any spool, connects every shard's writer and starts
    /// the tasks. Must be called inside a Tokio runtime.
    pub async fn start(config: IngestorConfig) -> Result<Started<R>> {
        config.validate(R::MAX_ROW_BYTES)?;
        let fanout = match &config.fanout {
            Some(f) => Some((f.clone(), f.validate()?)),
            None => None,
        };
        let n = config.shards;
        let stream: Arc<str> = format!("{}-{:016x}", config.stream, boot_id()).into();
        // The spool is read back before anything new is accepted.
        let (spools, recovered) = match &config.spool {
            Some(sc) => open_spools(sc, R::KIND, n)?,
            None => (Vec::new(), Vec::new()),
        };
        let clock = PipelineClock::new();
        let queue = fanout
            .as_ref()
            .map(|(f, _)| Arc::new(FanoutQueue::new(f.queue_batches, f.queue_ticks)));
        let shards: Box<[Arc<ShardContext<R>>]> = (0..n)
            .map(|k| {
                let ctx = ShardContext::new(
                    k,
                    stream.clone(),
                    &config,
                    clock,
                    queue.clone(),
                    spools.get(k).cloned(),
                );
                Arc::new(ctx)
            })
            .collect();
        // The placement, the writers' connections and the first maintenance pass are round
        // trips to the database, each on its own connection: waited for together, not one
        // after another (a replay pushes nothing before they are done).
        let maintenance = Arc::new(MaintenanceStatus::default());
        let (router, sinks, maintenance_task) = tokio::join!(
            Self::router(&config),
            Self::connect_sinks(&config, &shards),
            Self::start_maintenance(&config, &maintenance),
        );
        let sinks = match sinks {
            Ok(sinks) => sinks,
            Err(e) => {
                maintenance.stop();
                return Err(e);
            }
        };
        let maintenance_task = maintenance_task?;
        let pipeline = Arc::new(Pipeline {
            router,
            shards,
            clock,
            closed: AtomicBool::new(false),
            stream,
            maintenance,
            fanout: queue,
            spools: spools.into(),
            config,
        });
        let publisher = match (&pipeline.fanout, fanout) {
            (Some(q), Some((f, target))) => Some(tokio::spawn(publisher::run(
                q.clone(),
                target,
                f,
                pipeline.stream.clone(),
            ))),
            _ => None,
        };
        let mut tasks = Vec::with_capacity(3 * n + 1);
        tasks.extend(maintenance_task);
        let mut replay = replay_per_shard(&pipeline.spools, &recovered, n);
        for (shard, sink) in pipeline.shards.iter().zip(sinks) {
            let old = std::mem::take(&mut replay[shard.index()]);
            let own = recovered.get(shard.index());
            let in_flight = pipeline.config.in_flight_batches;
            tasks.extend(spawn_shard(shard.clone(), sink, old, own, in_flight));
        }
        tracing::info!(stream = %pipeline.stream, kind = R::KIND, shards = n, "ingestor started");
        Ok(Started {
            pipeline,
            tasks,
            publisher,
        })
    }

    /// The shard router: on Citus, each shard takes the symbols of as few workers as it can;
    /// elsewhere the config's chosen symbols go where it says, the rest by the hash.
    async fn router(config: &IngestorConfig) -> ShardRouter {
        let router = match &config.sink {
            Some(Sink::Postgres(url)) => {
                let table = config.table.as_deref().unwrap_or(R::DEFAULT_TABLE);
                crate::pg::placement::router_for(url, table, config.shards).await
            }
            _ => ShardRouter::new(config.shards),
        };
        router.with_symbols(config.symbol_shards.clone())
    }

    /// Each shard's writer connection (none without a PostgreSQL sink), connected side by side.
    async fn connect_sinks(
        config: &IngestorConfig,
        shards: &[Arc<ShardContext<R>>],
    ) -> Result<Vec<Option<CopySink>>> {
        if !matches!(config.sink, Some(Sink::Postgres(_))) {
            return Ok(shards.iter().map(|_| None).collect());
        }
        let connecting = shards
            .iter()
            .map(|shard| CopySink::connect::<R>(config, &shard.origin, &shard.counters));
        let sinks = futures_util::future::try_join_all(connecting).await?;
        Ok(sinks.into_iter().map(Some).collect())
    }

    /// Starts partition maintenance when the sink is PostgreSQL and it is on. The first
    /// pass's partitions are created now, so today's and the coming partitions exist before
    /// the first batch, and the rest of it runs at once in the task; its failure is not
    /// fatal (the default partition holds rows).
    async fn start_maintenance(
        config: &IngestorConfig,
        status: &Arc<MaintenanceStatus>,
    ) -> Result<Option<JoinHandle<()>>> {
        let (Some(Sink::Postgres(url)), Some(every)) = (&config.sink, config.partition_maintenance)
        else {
            return Ok(None);
        };
        let table = config
            .table
            .clone()
            .unwrap_or_else(|| R::DEFAULT_TABLE.to_string());
        let ledger = BatchLedger::new(&config.ledger_table);
        let status = status.clone();
        match PartitionTask::connect(url, table.clone(), ledger.clone()).await {
            Ok(Some(mut task)) => {
                if let Err(e) = task.prepare().await {
                    tracing::warn!(error = %e, "first partition maintenance pass failed");
                }
                Ok(Some(tokio::spawn(task.run(status, every))))
            }
            Ok(None) => Ok(None),
            // With a spool the pipeline starts without PostgreSQL; maintenance starts when it
            // is back.
            Err(e) if config.spool.is_some() => {
                tracing::warn!(error = %e, "partition maintenance waits for PostgreSQL");
                let url = url.clone();
                Ok(Some(tokio::spawn(async move {
                    while status.sleep(every).await {
                        match PartitionTask::connect(&url, table.clone(), ledger.clone()).await {
                            Ok(Some(task)) => return task.run(status, every).await,
                            Ok(None) => return,
                            Err(_) => {}
                        }
                    }
                })))
            }
            Err(e) => Err(e),
        }
    }

    /// Stops accepting records: every ring closes (its batcher drains it and stops) and
    /// partition maintenance stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.maintenance.stop();
        for shard in self.shards.iter() {
            shard.ring.close();
        }
    }

    /// True once [`Pipeline::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Spawns one shard's batcher, spool stage (with a spool) and writer. `replay` are batches
/// an earlier run spooled, written before new ones; `recovered` is what this shard's own
/// spool held (the appender numbers entries after it); `in_flight` sealed batches queue
/// between the batcher and the writer.
fn spawn_shard<R: Record>(
    shard: Arc<ShardContext<R>>,
    sink: Option<CopySink>,
    replay: Vec<SealedBatch<R>>,
    recovered: Option<&Recovered>,
    in_flight: usize,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(3);
    let (tx, rx) = mpsc::channel(in_flight);
    tasks.push(tokio::spawn(batcher::run(shard.clone(), tx)));
    let source = match (&shard.spool, recovered) {
        (Some(spool), Some(recovered)) => {
            let (to_writer, from_spool) = mpsc::unbounded_channel();
            for sealed in replay {
                shard.spool_backlog.handed_on();
                let _ = to_writer.send(sealed);
            }
            let appender = Appender::new(spool.clone(), recovered);
            let (shard, spool) = (shard.clone(), spool.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                spool_stage::run(shard, spool, appender, rx, to_writer)
            }));
            BatchSource::SpoolStage(from_spool)
        }
        _ => BatchSource::Batcher(rx),
    };
    tasks.push(tokio::spawn(writer::run(shard, source, sink)));
    tasks
}

/// Opens every shard spool: this run's shards, and any beyond them an earlier run with
/// more shards left segments in. Returns each spool and what it held.
fn open_spools(
    config: &SpoolConfig,
    kind: &str,
    shards: usize,
) -> Result<(Vec<Arc<ShardSpool>>, Vec<Recovered>)> {
    let dir = config.dir.join(kind);
    let left = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_prefix("shard-")?.parse::<usize>().ok()
        })
        .map(|k| k + 1)
        .max()
        .unwrap_or(0);
    let mut spools = Vec::new();
    let mut recovered = Vec::new();
    for k in 0..shards.max(left) {
        let (spool, r) = ShardSpool::open(config, kind, k)?;
        spools.push(Arc::new(spool));
        recovered.push(r);
    }
    Ok((spools, recovered))
}

/// Recovered batches, each to the writer of its old shard (modulo this run's count).
fn replay_per_shard<R>(
    spools: &[Arc<ShardSpool>],
    recovered: &[Recovered],
    shards: usize,
) -> Vec<Vec<SealedBatch<R>>> {
    let mut replay: Vec<Vec<SealedBatch<R>>> = (0..shards).map(|_| Vec::new()).collect();
    for (owner, r) in recovered.iter().enumerate() {
        for at in &r.entries {
            replay[owner % shards].push(SealedBatch {
                batch: CopyBatch::on_disk(spools[owner].clone(), at.clone()),
                fanout: None,
            });
        }
    }
    replay
}

/// A per-run random id, so two runs never share ledger batch ids.
fn boot_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
