//! # christmas-core
//!
//! Lock-free, sharded batching of market-data ticks into PostgreSQL binary `COPY` streams,
//! exactly once.
//!
//! ## Quick start
//!
//! ```no_run
//! use christmas_core::{Ingestor, Side, Symbol, Trade};
//!
//! # async fn demo() -> christmas_core::Result<()> {
//! let url = "postgres://christmas@127.0.0.1:55432/christmas";
//! christmas_core::schema::migrate_url(url, &Default::default()).await?;
//! let trades = Ingestor::<Trade>::builder().database_url(url).start().await?;
//! let es = Symbol::new("ESU4")?;
//! for i in 0..1_000 {
//!     trades.push(Trade {
//!         time_ns: 1_719_878_400_000_000_000 + i,
//!         symbol: es,
//!         price: 5_512.25,
//!         volume: 1.0,
//!         side: Side::Buy,
//!         exchange_seq: i,
//!     })?;
//! }
//! trades.flush().await?; // every record pushed above is now committed
//! trades.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! | module | what it is |
//! |---|---|
//! | [`record`] | `Trade`, `Quote`, `Side` and the [`Record`] trait: validation, table, columns, COPY encoding |
//! | [`symbol`] | [`Symbol`]: inline, validated instrument names (no allocation per tick) |
//! | [`binary_copy`] | PostgreSQL binary COPY header, rows and trailer |
//! | [`router`] | [`ShardRouter`]: `fnv1a(symbol) % shards`, or by Citus placement ([`Placement`], [`pg_hashtext`]) |
//! | [`ingestor`] | [`Ingestor`]: the face — push, receipts, metrics, shutdown |
//! | [`ingress`] | [`Ingress`]: trades and quotes together; `push(ticks, AckLevel)` → one ack future; what HTTP, TCP, replay and demo call |
//! | [`producer`] | idempotent producers: a [`ProducerId`](producer::ProducerId) and sequence numbers (`Ingress::push_from`, `push_numbered`), claimed in each batch's transaction so a resend is stored once |
//! | `pipeline/` | the stages behind it, wired in `pipeline/mod.rs`: |
//! | `  batch.rs` | the travelling types: `Slot`, `OpenBatch`, `SealedBatch`, [`BatchReport`] |
//! | `  shard.rs` | `ShardContext`: one shard's ring, counters, histograms, spool, limits |
//! | `  ring.rs` | `ShardRing`: bounded lock-free queue (crossbeam `ArrayQueue`) that keeps its own wake-ups |
//! | `  batcher.rs` | drains a ring, encodes into a COPY body, seals on rows / bytes / linger |
//! | `  spool_stage.rs` | with a spool: appends each sealed batch, fsyncs, answers durable receipts |
//! | `  writer.rs` | commits batches in order through the COPY sink (batches queued behind a commit go in together), records metrics, answers receipts |
//! | `  partition_task.rs` | the ingestor's periodic partition maintenance and ledger pruning |
//! | [`spool`] | segment files on local disk: format, appender, scanner, recovery |
//! | [`pg`] | connect policy; `ledger.rs` (`BatchLedger`); `copy_sink.rs` (`BEGIN; ledger row; COPY; COMMIT`, exactly once, bad rows split into dead letters; `copy_sink/group.rs`: several queued batches in one transaction, a ledger row each) |
//! | [`metrics`] | counters, gauges and HdrHistogram latencies as a [`MetricsSnapshot`] |
//! | [`tls`] | TLS to PostgreSQL and Redis: libpq's [`SslMode`](tls::SslMode) and root certificates, typed failures ([`TlsErrorKind`]) |
//! | [`redis`] | [`RedisTarget`](redis::RedisTarget) (node, Sentinel, Cluster), the connection, typed error kinds ([`RedisErrorKind`]) |
//! | [`fanout`] | Redis fan-out: pub/sub, capped streams, latest hash; the subscriber helper (on [`redis`]) |
//! | [`orders`] | orders: group-committed and idempotent ([`OrderDesk`](orders::OrderDesk)), events to workers ([`OrderWorker`](orders::OrderWorker)) |
//! | [`frame`] | the daemon's TCP ingest protocol: length-prefixed rkyv frames and acks, read in place |
//! | [`sources`] | file readers for replay: CSV, Databento DBN (feature `dbn`); RFC 3339 timestamps |
//! | [`schema`] | the versioned schema (`sql/`), its migrator and partition maintenance |
//! | [`query`] | [`MarketDataReader`](query::MarketDataReader): latest tick, trades, quotes, OHLCV bars |
//!
//! Data flow, per shard: `push` → ring → batcher (encode, seal) → bounded channel →
//! spool stage when a spool is configured (append, fsync, durable receipts answered;
//! batches travel on in memory, or as a file position past the memory budget) → writer
//! (commit through the COPY sink while the next batch fills) → receipts resolved, metrics
//! recorded, committed ticks handed to the fan-out publisher.
//!
//! ## Guarantees
//!
//! - **Order**: all records of a symbol go through one shard and are committed in push
//!   order (for pushes from one producer; concurrent producers of one symbol interleave).
//! - **Exactly once**: each batch's transaction also inserts its id into the ledger table;
//!   after an ambiguous failure the writer reconnects with backoff and resends only when the
//!   ledger does not have the batch.
//! - **Bad rows** (SQLSTATE class 22/23) are isolated by splitting the batch and stored in the
//!   dead-letter table; the rest of the batch commits.
//! - **Time**: records carry nanoseconds; `timestamptz` keeps microseconds, so the last three
//!   digits are dropped (rounded toward negative infinity).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `dbn` | no | `sources::dbn`: Databento DBN (MBP-1) files read as trades and quotes |

#![warn(missing_docs)]

pub mod binary_copy;
pub mod clock;
pub mod config;
pub mod dead_letter;
mod error;
pub mod fanout;
pub mod frame;
pub mod ingestor;
pub mod ingress;
pub mod metrics;
pub mod orders;
pub mod pg;
mod pipeline;
pub mod producer;
pub mod query;
pub mod record;
pub mod redis;
pub mod router;
pub mod schema;
pub mod sources;
pub mod spool;
pub mod symbol;
pub mod synthetic;
pub mod tls;

pub use config::{Backpressure, IngestorConfig, Sink};
pub use dead_letter::DeadLetter;
pub use error::{AmqpErrorKind, Error, FieldError, Invalid, RedisErrorKind, Result, TlsErrorKind};
pub use ingestor::{CommitReport, Ingestor, IngestorBuilder, Receipt};
pub use ingress::{Ack, AckLevel, Acked, Ingress, IngressMetrics, Ticks};
pub use metrics::{MetricsSnapshot, ShardSnapshot, Summary};
pub use pipeline::batch::BatchReport;
pub use record::{Quote, Record, Side, Tick, Trade};
pub use router::{pg_hashtext, Placement, ShardRouter, SymbolShards};
pub use symbol::Symbol;

/// The DBN reader's former path; [`sources::dbn`] is its home.
#[cfg(feature = "dbn")]
pub use sources::dbn as dbn_file;
