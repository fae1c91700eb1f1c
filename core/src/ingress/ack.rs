//! [`AckLevel`], and the [`Ack`] a push returns: a future that resolves once the ticks
//! reached the level asked for.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::ingestor::Receipt;
use crate::producer::PushOutcome;

/// How far records must have gone before a push is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckLevel {
    /// In the rings (fast; lost if the process dies before they commit).
    #[default]
    Accepted,
    /// Spooled to disk and fsynced (needs the spool).
    Durable,
    /// Committed to PostgreSQL.
    Committed,
}

impl AckLevel {
    /// The byte on the TCP wire.
    pub fn code(self) -> u8 {
        match self {
            AckLevel::Accepted => 0,
            AckLevel::Durable => 1,
            AckLevel::Committed => 2,
        }
    }

    /// From the byte on the TCP wire.
    pub fn from_code(c: u8) -> Result<AckLevel> {
        match c {
            0 => Ok(AckLevel::Accepted),
            1 => Ok(AckLevel::Durable),
            2 => Ok(AckLevel::Committed),
            _ => Err(Error::field("ack", format!("unknown ack level {c}"))),
        }
    }

    /// Its name, as HTTP's `?ack=` takes it and reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            AckLevel::Accepted => "accepted",
            AckLevel::Durable => "durable",
            AckLevel::Committed => "committed",
        }
    }
}

impl std::str::FromStr for AckLevel {
    type Err = Error;

    /// `accepted`, `durable` or `committed`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "accepted" => Ok(AckLevel::Accepted),
            "durable" => Ok(AckLevel::Durable),
            "committed" => Ok(AckLevel::Committed),
            _ => Err(Error::field(
                "ack",
                format!("{s:?} is not one of accepted, durable, committed"),
            )),
        }
    }
}

/// Ticks pushed by [`Ingress::push`], on their way to the ack level. Await it (or call
/// [`Ack::wait`]) for the outcome; dropping it cancels nothing.
#[derive(Debug)]
#[must_use = "an Ack reports nothing unless awaited"]
pub struct Ack {
    pub(super) level: AckLevel,
    pub(super) trades: usize,
    pub(super) quotes: usize,
    /// The trade and the quote receipt of a durable or committed push with records of
    /// that kind.
    pub(super) receipts: [Option<Receipt>; 2],
    /// A named producer's push: resends counted, evictions noted.
    pub(super) outcome: Option<Arc<PushOutcome>>,
}

/// What an [`Ack`] resolves to: the ticks reached `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The level reached.
    pub level: AckLevel,
    /// Trades acknowledged.
    pub trades: usize,
    /// Quotes acknowledged.
    pub quotes: usize,
    /// Of those, ticks a named producer had already stored: resends left out, not written
    /// again. Complete at [`AckLevel::Committed`]; at lower levels it counts only what was
    /// found by then (usually none).
    pub duplicates: u64,
    /// When the last of its batches reached the level (committed or fsynced); `None` at
    /// [`AckLevel::Accepted`]. A transport measures its ack's delivery from it.
    pub answered_at: Option<Instant>,
}

impl Acked {
    /// Trades and quotes acknowledged.
    pub fn records(&self) -> usize {
        self.trades + self.quotes
    }
}

impl Ack {
    /// The level it waits for.
    pub fn level(&self) -> AckLevel {
        self.level
    }

    /// Trades and quotes it covers.
    pub fn records(&self) -> usize {
        self.trades + self.quotes
    }

    /// Waits until the ticks reached the level. Waits for both kinds even when one
    /// failed, so nothing of the push is still in flight when it returns, and reports the
    /// first failure (the trades').
    pub async fn wait(self) -> Result<Acked> {
        let mut failed = None;
        let mut answered_at = None;
        for receipt in self.receipts.into_iter().flatten() {
            match receipt.wait().await {
                Ok(report) => {
                    let last = report.batches.iter().filter_map(|b| b.answered_at).max();
                    answered_at = answered_at.max(last);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(shard) = self.outcome.as_ref().and_then(|o| o.evicted_from()) {
            failed.get_or_insert(Error::Dropped { shard });
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(Acked {
                level: self.level,
                trades: self.trades,
                quotes: self.quotes,
                duplicates: self.outcome.map_or(0, |o| o.duplicates()),
                answered_at,
            }),
        }
    }
}

impl IntoFuture for Ack {
    type Output = Result<Acked>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Acked>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}
