//! The trade and quote pipelines every command runs (serve, replay, demo).

use std::time::Duration;

use anyhow::{Context, Result};
use christmas_core::fanout::FanoutConfig;
use christmas_core::spool::SpoolConfig;
use christmas_core::{Ingestor, Quote, Trade};

/// How both pipelines batch: shards per record kind, and the linger (`None`: the core's
/// default).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Shards (rings, batchers, writer connections) per record kind.
    pub shards: usize,
    /// How long a batch waits to fill; `None`: the core's default.
    pub linger: Option<Duration>,
}

impl Batching {
    /// `shards` per record kind, with the core's default linger.
    pub fn shards(shards: usize) -> Self {
        Batching {
            shards,
            linger: None,
        }
    }
}

/// Both pipelines into the database at `url`, named `stream` in the ledger, fanning out when
/// `fanout` is given, spooling when `spool` is (each record kind in its own subdirectory).
pub async fn start(
    url: &str,
    batching: Batching,
    stream: &str,
    fanout: Option<FanoutConfig>,
    spool: Option<SpoolConfig>,
) -> Result<(Ingestor<Trade>, Ingestor<Quote>)> {
    let mut trades = Ingestor::<Trade>::builder()
        .database_url(url)
        .shards(batching.shards)
        .stream(stream);
    let mut quotes = Ingestor::<Quote>::builder()
        .database_url(url)
        .shards(batching.shards)
        .stream(stream);
    if let Some(linger) = batching.linger {
        trades = trades.linger(linger);
        quotes = quotes.linger(linger);
    }
    if let Some(f) = fanout {
        trades = trades.fanout(f.clone());
        quotes = quotes.fanout(f);
    }
    if let Some(s) = spool {
        trades = trades.spool(s.clone());
        quotes = quotes.spool(s);
    }
    let trades = trades
        .start()
        .await
        .context("starting the trade pipeline")?;
    let quotes = quotes
        .start()
        .await
        .context("starting the quote pipeline")?;
    Ok((trades, quotes))
}
