//! [`Ingress`]: trades and quotes together, the one way ticks enter the pipelines.
//!
//! Whatever carried the ticks (a JSON body, a TCP frame, a replayed file, a synthetic
//! market), the way in is the same:
//!
//! 1. the reader fills a [`Ticks`], which validates each record with its kind's
//!    `validate` as it goes in, so a [`Ticks`] only ever holds valid records;
//! 2. [`Ingress::push`] enqueues all of them, trades then quotes, each in order, and
//!    returns an [`Ack`];
//! 3. the [`Ack`] is a future that resolves once the ticks reached the [`AckLevel`]
//!    asked for: accepted (in the rings), durable (spooled and fsynced) or committed (in
//!    PostgreSQL).
//!
//! Enqueueing and waiting are two steps so a connection that pipelines requests (TCP) can
//! enqueue the next one while the previous is still on its way to PostgreSQL, keeping the
//! push order; a request-response caller (HTTP) awaits both at once:
//! `ingress.push(&ticks, ack).await?.await`.
//!
//! ```
//! use christmas_core::ingress::{AckLevel, Ingress, Ticks};
//! use christmas_core::{IngestorConfig, Side, Sink, Symbol, Trade};
//!
//! # async fn demo() -> christmas_core::Result<()> {
//! let ingress = Ingress::start(IngestorConfig {
//!     sink: Some(Sink::Discard), // or Sink::Postgres(url)
//!     ..IngestorConfig::default()
//! })
//! .await?;
//! let mut ticks = Ticks::default();
//! ticks.push_trade(Trade {
//!     time_ns: 1_719_878_400_000_000_000,
//!     symbol: Symbol::new("ESU4")?,
//!     price: 5_512.25,
//!     volume: 1.0,
//!     side: Side::Buy,
//!     exchange_seq: 1,
//! })?;
//! let acked = ingress.push(&ticks, AckLevel::Committed).await?.await?;
//! assert_eq!(acked.trades, 1);
//! ingress.shutdown().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod ack;

use std::sync::Arc;

pub use ack::{Ack, AckLevel, Acked};

use crate::config::IngestorConfig;
use crate::error::{Error, FieldError, Result};
use crate::ingestor::{Durability, Ingestor, IngestorBuilder, Receipt};
use crate::metrics::MetricsSnapshot;
use crate::producer::{ProducerId, ProducerLocks, PushOutcome, Seqs};
use crate::record::{Quote, Record, Tick, Trade};

/// Validated trades and quotes of one request, frame or file chunk, each kind in arrival
/// order.
///
/// Records go in only through the `push_*` methods, which validate them, so a `Ticks`
/// never holds an invalid record. Reuse one with [`Ticks::clear`] to read without
/// allocating once its vectors have grown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ticks {
    trades: Vec<Trade>,
    quotes: Vec<Quote>,
}

impl Ticks {
    /// Empty, with room for this many of each kind.
    pub fn with_capacity(trades: usize, quotes: usize) -> Self {
        Ticks {
            trades: Vec::with_capacity(trades),
            quotes: Vec::with_capacity(quotes),
        }
    }

    /// Adds a trade after [`Trade::validate`]; a refused trade is not added.
    #[inline]
    pub fn push_trade(&mut self, trade: Trade) -> Result<(), FieldError> {
        trade.validate()?;
        self.trades.push(trade);
        Ok(())
    }

    /// Adds a quote after [`Quote::validate`]; a refused quote is not added.
    #[inline]
    pub fn push_quote(&mut self, quote: Quote) -> Result<(), FieldError> {
        quote.validate()?;
        self.quotes.push(quote);
        Ok(())
    }

    /// Adds a tick of either kind, validated.
    #[inline]
    pub fn push(&mut self, tick: Tick) -> Result<(), FieldError> {
        match tick {
            Tick::Trade(t) => self.push_trade(t),
            Tick::Quote(q) => self.push_quote(q),
        }
    }

    /// The trades, in the order they were added.
    pub fn trades(&self) -> &[Trade] {
        &self.trades
    }

    /// The quotes, in the order they were added.
    pub fn quotes(&self) -> &[Quote] {
        &self.quotes
    }

    /// Trades and quotes held.
    pub fn len(&self) -> usize {
        self.trades.len() + self.quotes.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties it, keeping its capacity.
    pub fn clear(&mut self) {
        self.trades.clear();
        self.quotes.clear();
    }

    /// Empties it, and gives back the memory of a kind whose capacity grew past
    /// `max_records` (a reader reused across requests keeps small buffers, not its largest).
    pub fn clear_and_release_over(&mut self, max_records: usize) {
        self.clear();
        if self.trades.capacity() > max_records {
            self.trades = Vec::new();
        }
        if self.quotes.capacity() > max_records {
            self.quotes = Vec::new();
        }
    }

    /// The trades and the quotes, as vectors.
    pub fn into_parts(self) -> (Vec<Trade>, Vec<Quote>) {
        (self.trades, self.quotes)
    }
}

/// A trade pipeline and a quote pipeline with one push for both (or one of them:
/// [`Ingress::start_kinds`]).
///
/// Cloning is cheap (both pipelines are shared); every clone pushes into the same rings.
#[derive(Debug, Clone)]
pub struct Ingress {
    trades: Option<Ingestor<Trade>>,
    quotes: Option<Ingestor<Quote>>,
    /// Both pipelines spool, so [`AckLevel::Durable`] can be served.
    spooled: bool,
    /// One lock per named producer pushing now, so its pushes reach the rings in order.
    producers: Arc<ProducerLocks>,
}

/// The kinds of tick an [`Ingress`] takes, each its own pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    /// Trades (`market_data`).
    pub trades: bool,
    /// Quotes (`quotes`).
    pub quotes: bool,
}

impl Kinds {
    /// Trades and quotes.
    pub const BOTH: Kinds = Kinds {
        trades: true,
        quotes: true,
    };
}

/// Both pipelines' metrics (a pipeline not started counts nothing).
#[derive(Debug, Clone)]
pub struct IngressMetrics {
    /// The trade pipeline's.
    pub trades: MetricsSnapshot,
    /// The quote pipeline's.
    pub quotes: MetricsSnapshot,
}

impl IngressMetrics {
    /// Rows committed, trades and quotes.
    pub fn rows_committed(&self) -> u64 {
        self.trades.rows_committed() + self.quotes.rows_committed()
    }

    /// Rows PostgreSQL refused (in the dead-letter table), trades and quotes.
    pub fn dead_lettered(&self) -> u64 {
        self.trades.dead_lettered() + self.quotes.dead_lettered()
    }

    /// Records accepted into the rings, trades and quotes.
    pub fn accepted(&self) -> u64 {
        self.trades.accepted() + self.quotes.accepted()
    }
}

/// The pipeline of records `R` from `config` when `on`.
async fn start_if<R: Record>(on: bool, config: &IngestorConfig) -> Option<Result<Ingestor<R>>> {
    match on {
        true => Some(
            IngestorBuilder::<R>::from_config(config.clone())
                .start()
                .await,
        ),
        false => None,
    }
}

impl Ingress {
    /// Starts both pipelines from one config, side by side (their connections and first
    /// partition maintenance pass are round trips to the database, not work), each writing to
    /// its kind's table (leave `config.table` unset) and spooling, when `config.spool` is
    /// set, in its own subdirectory. When one fails, the other is shut down and the first
    /// failure (the trade pipeline's when both fail) is returned. Must be called inside a
    /// Tokio runtime.
    pub async fn start(config: IngestorConfig) -> Result<Ingress> {
        Self::start_kinds(config, Kinds::BOTH).await
    }

    /// [`Ingress::start`] of the pipelines of `kinds` only: a replay of a file that holds
    /// only trades starts no quote pipeline (no connections, no maintenance pass). A push
    /// of a kind not started is refused ([`Error::InvalidField`] naming it) before anything
    /// is pushed.
    pub async fn start_kinds(config: IngestorConfig, kinds: Kinds) -> Result<Ingress> {
        if !kinds.trades && !kinds.quotes {
            return Err(Error::config(
                "kinds",
                "an ingress takes trades, quotes or both",
            ));
        }
        let (trades, quotes) = tokio::join!(
            start_if::<Trade>(kinds.trades, &config),
            start_if::<Quote>(kinds.quotes, &config)
        );
        let (trades, quotes) = match (trades.transpose(), quotes.transpose()) {
            (Ok(trades), Ok(quotes)) => (trades, quotes),
            (Err(e), Ok(quotes)) => {
                if let Some(q) = quotes {
                    let _ = q.shutdown().await;
                }
                return Err(e);
            }
            (Ok(trades), Err(e)) => {
                if let Some(t) = trades {
                    let _ = t.shutdown().await;
                }
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
        };
        Ok(Ingress::of(trades, quotes))
    }

    /// Both pipelines, started by the caller.
    pub fn new(trades: Ingestor<Trade>, quotes: Ingestor<Quote>) -> Self {
        Ingress::of(Some(trades), Some(quotes))
    }

    fn of(trades: Option<Ingestor<Trade>>, quotes: Option<Ingestor<Quote>>) -> Self {
        let spooled = trades.as_ref().is_none_or(|t| t.metrics().spool.is_some())
            && quotes.as_ref().is_none_or(|q| q.metrics().spool.is_some());
        Ingress {
            trades,
            quotes,
            spooled,
            producers: Arc::default(),
        }
    }

    /// The trade pipeline (`None` when this ingress takes no trades).
    pub fn trades(&self) -> Option<&Ingestor<Trade>> {
        self.trades.as_ref()
    }

    /// The quote pipeline (`None` when this ingress takes no quotes).
    pub fn quotes(&self) -> Option<&Ingestor<Quote>> {
        self.quotes.as_ref()
    }

    /// True while every pipeline started takes pushes (none has been shut down).
    pub fn is_open(&self) -> bool {
        self.trades.as_ref().is_none_or(|t| !t.is_closed())
            && self.quotes.as_ref().is_none_or(|q| !q.is_closed())
    }

    /// Refuses `ticks` when it holds a kind this ingress did not start.
    fn takes(&self, ticks: &Ticks) -> Result<()> {
        if self.trades.is_none() && !ticks.trades.is_empty() {
            return Err(Error::field(
                "trades",
                "this ingress takes no trades: it was started for quotes only",
            ));
        }
        if self.quotes.is_none() && !ticks.quotes.is_empty() {
            return Err(Error::field(
                "quotes",
                "this ingress takes no quotes: it was started for trades only",
            ));
        }
        Ok(())
    }

    /// True when pushes may ask for `ack`: [`AckLevel::Durable`] needs both pipelines to
    /// spool; the others always work.
    pub fn supports(&self, ack: AckLevel) -> bool {
        ack != AckLevel::Durable || self.spooled
    }

    /// Enqueues every tick (trades then quotes, each kind in order, awaiting ring space
    /// under [`Backpressure::Block`](crate::config::Backpressure::Block)) and returns the
    /// [`Ack`] that resolves at `ack`.
    ///
    /// Errors before the [`Ack`]: [`Error::Spool`] when `ack` is durable and the pipelines
    /// do not spool (nothing is pushed); any error of the [`Ingestor`] push (the records
    /// before it stay pushed).
    pub async fn push(&self, ticks: &Ticks, ack: AckLevel) -> Result<Ack> {
        self.takes(ticks)?;
        if !self.supports(ack) {
            return Err(Error::Spool {
                reason: "the durable ack level needs a spool; none is configured".into(),
            });
        }
        let mut pending = Ack {
            level: ack,
            trades: ticks.trades.len(),
            quotes: ticks.quotes.len(),
            receipts: [None, None],
            outcome: None,
        };
        match ack {
            AckLevel::Accepted => {
                if let Some(t) = &self.trades {
                    t.push_batch_async(&ticks.trades).await?;
                }
                if let Some(q) = &self.quotes {
                    q.push_batch_async(&ticks.quotes).await?;
                }
            }
            AckLevel::Durable | AckLevel::Committed => {
                pending.receipts = [
                    receipt(self.trades.as_ref(), &ticks.trades, ack).await?,
                    receipt(self.quotes.as_ref(), &ticks.quotes, ack).await?,
                ];
            }
        }
        Ok(pending)
    }

    /// Enqueues the ticks of a named producer, numbered `first_seq, first_seq + 1, …` (the
    /// trades in order, then the quotes), and returns the [`Ack`] that resolves at `ack`.
    ///
    /// Ticks the producer already stored (a resend after a timeout, a reconnect, a crash,
    /// or one sent to another daemon too) are left out when their batch commits, and the
    /// acknowledgement counts them in [`Acked::duplicates`]: exactly once, with no per-row
    /// cost (see [`crate::producer`]). A resend of ticks still in flight is answered when
    /// the original's batch is. The producer's pushes are enqueued one at a time, in call
    /// order; its next push must start above this one (`first_seq + ticks.len()` or later).
    ///
    /// Errors before the [`Ack`]: [`Error::InvalidField`] naming `producer_seq` when
    /// `first_seq` is 0 or the sequences would pass `i64::MAX` (nothing is pushed); the
    /// errors of [`Ingress::push`].
    pub async fn push_from(
        &self,
        producer: &ProducerId,
        first_seq: u64,
        ticks: &Ticks,
        ack: AckLevel,
    ) -> Result<Ack> {
        if first_seq == 0 {
            return Err(FieldError::new("producer_seq", crate::error::Invalid::NotPositive).into());
        }
        if first_seq
            .checked_add(ticks.len() as u64)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(Error::field(
                "producer_seq",
                "the request's sequences would pass 9223372036854775807",
            ));
        }
        self.takes(ticks)?;
        if !self.supports(ack) {
            return Err(Error::Spool {
                reason: "the durable ack level needs a spool; none is configured".into(),
            });
        }
        let quotes_from = first_seq + ticks.trades.len() as u64;
        self.push_produced(
            producer,
            ticks,
            Seqs::From(first_seq),
            Seqs::From(quotes_from),
            ack,
        )
        .await
    }

    /// [`Ingress::push_from`] with each tick's sequence given: `trade_seqs[i]` for
    /// `ticks.trades()[i]`, `quote_seqs[i]` for `ticks.quotes()[i]` (a file's tick
    /// positions, say, so that how the ticks were split into pushes does not matter).
    ///
    /// Errors before the [`Ack`], nothing pushed: [`Error::InvalidField`] naming
    /// `producer_seq` when a list's length differs from its kind's, a sequence is 0 or past
    /// `i64::MAX`, or a kind's sequences do not rise.
    pub async fn push_numbered(
        &self,
        producer: &ProducerId,
        ticks: &Ticks,
        trade_seqs: &[u64],
        quote_seqs: &[u64],
        ack: AckLevel,
    ) -> Result<Ack> {
        self.takes(ticks)?;
        for (seqs, n) in [
            (trade_seqs, ticks.trades.len()),
            (quote_seqs, ticks.quotes.len()),
        ] {
            if seqs.len() != n {
                return Err(Error::field(
                    "producer_seq",
                    format!("{} sequences for {n} ticks", seqs.len()),
                ));
            }
            let rising = seqs.windows(2).all(|w| w[0] < w[1]);
            let in_range = seqs.iter().all(|&s| (1..=i64::MAX as u64).contains(&s));
            if !rising || !in_range {
                return Err(Error::field(
                    "producer_seq",
                    "each kind's sequences must rise, from 1 to 9223372036854775807",
                ));
            }
        }
        if !self.supports(ack) {
            return Err(Error::Spool {
                reason: "the durable ack level needs a spool; none is configured".into(),
            });
        }
        self.push_produced(
            producer,
            ticks,
            Seqs::Each(trade_seqs),
            Seqs::Each(quote_seqs),
            ack,
        )
        .await
    }

    /// Enqueues both kinds of a named producer's push under its lock.
    async fn push_produced(
        &self,
        producer: &ProducerId,
        ticks: &Ticks,
        trade_seqs: Seqs<'_>,
        quote_seqs: Seqs<'_>,
        ack: AckLevel,
    ) -> Result<Ack> {
        let outcome = Arc::new(PushOutcome::default());
        let receipt = match ack {
            AckLevel::Accepted => None,
            AckLevel::Durable => Some(Durability::Spooled),
            AckLevel::Committed => Some(Durability::Committed),
        };
        let lock = self.producers.of(producer);
        let receipts = {
            let _in_order = lock.lock().await;
            let trades = match &self.trades {
                Some(t) => {
                    t.push_produced(producer, &ticks.trades, trade_seqs, &outcome, receipt)
                        .await?
                }
                None => None,
            };
            let quotes = match &self.quotes {
                Some(q) => {
                    q.push_produced(producer, &ticks.quotes, quote_seqs, &outcome, receipt)
                        .await?
                }
                None => None,
            };
            [trades, quotes]
        };
        Ok(Ack {
            level: ack,
            trades: ticks.trades.len(),
            quotes: ticks.quotes.len(),
            receipts,
            outcome: Some(outcome),
        })
    }

    /// Both pipelines' metrics so far.
    pub fn metrics(&self) -> IngressMetrics {
        IngressMetrics {
            trades: self
                .trades
                .as_ref()
                .map_or_else(MetricsSnapshot::empty, |t| t.metrics()),
            quotes: self
                .quotes
                .as_ref()
                .map_or_else(MetricsSnapshot::empty, |q| q.metrics()),
        }
    }

    /// Shuts both pipelines down (trades first), committing everything accepted, and
    /// reports their totals. See [`Ingestor::shutdown`]. The quote pipeline is shut down
    /// even when the trade pipeline's shutdown failed; the first failure is reported.
    pub async fn shutdown(&self) -> Result<IngressMetrics> {
        let trades = match &self.trades {
            Some(t) => t.shutdown().await,
            None => Ok(MetricsSnapshot::empty()),
        };
        let quotes = match &self.quotes {
            Some(q) => q.shutdown().await,
            None => Ok(MetricsSnapshot::empty()),
        };
        Ok(IngressMetrics {
            trades: trades?,
            quotes: quotes?,
        })
    }
}

/// Pushes `records` with a receipt at `ack` (durable or committed); none for no records.
async fn receipt<R: Record>(
    pipeline: Option<&Ingestor<R>>,
    records: &[R],
    ack: AckLevel,
) -> Result<Option<Receipt>> {
    let Some(pipeline) = pipeline.filter(|_| !records.is_empty()) else {
        return Ok(None);
    };
    let receipt = if ack == AckLevel::Durable {
        pipeline.push_durable(records).await?
    } else {
        pipeline.push_with_receipt(records).await?
    };
    Ok(Some(receipt))
}

#[cfg(test)]
mod tests;
