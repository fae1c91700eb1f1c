//! [`LatestCache`]: reads the `md:{SYMBOL}:latest` hashes the fan-out keeps.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::fanout::wire;
use crate::record::{Quote, Side, Trade};
use crate::redis::connection::{self, RedisConn};
use crate::redis::error::redis_error;
use crate::redis::target::RedisTarget;
use crate::symbol::Symbol;

/// The latest trade and quote of a symbol as the fan-out last published them, each with
/// its fan-out sequence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatestTicks {
    /// Latest trade and its sequence.
    pub trade: Option<(Trade, u64)>,
    /// Latest quote and its sequence.
    pub quote: Option<(Quote, u64)>,
}

/// Reads the latest-tick hashes; connects lazily and reconnects after errors.
#[derive(Debug)]
pub struct LatestCache {
    target: RedisTarget,
    conn: Mutex<Option<RedisConn>>,
}

impl LatestCache {
    /// For the Redis at `url` (any form [`RedisTarget::parse`] takes). Does not connect.
    pub fn new(url: &str) -> Result<Self> {
        Ok(LatestCache {
            target: RedisTarget::parse(url)?,
            conn: Mutex::new(None),
        })
    }

    async fn conn(&self) -> Result<RedisConn> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let c = connection::connect(&self.target).await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut c = self.conn().await?;
        let r = match &mut c {
            RedisConn::Node(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => cmd.query_async(c).await,
        };
        r.map_err(|e| {
            // Drop the connection so the next call reconnects (Sentinel may name a new master).
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
            redis_error("reading the latest-tick cache", e)
        })
    }

    /// `PING`: is Redis reachable?
    pub async fn ping(&self) -> Result<()> {
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// The latest trade and quote of `symbol` (both `None` when the cache has nothing).
    pub async fn get(&self, symbol: Symbol) -> Result<LatestTicks> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(wire::latest_key(symbol.as_str())))
            .await?;
        let num = |k: &str| parsed::<f64>(&fields, k, "a number");
        let int = |k: &str| parsed::<i64>(&fields, k, "an integer");
        let trade = match (
            int("trade_time_ns")?,
            num("trade_price")?,
            int("trade_seq")?,
        ) {
            (Some(time_ns), Some(price), Some(seq)) => Some((
                Trade {
                    time_ns,
                    symbol,
                    price,
                    volume: num("trade_volume")?.unwrap_or(0.0),
                    side: Side::from_code(
                        fields
                            .get("trade_side")
                            .and_then(|s| s.bytes().next())
                            .unwrap_or(b'N'),
                    )?,
                    exchange_seq: int("trade_exchange_seq")?.unwrap_or(0),
                },
                seq as u64,
            )),
            _ => None,
        };
        let quote = match (
            int("quote_time_ns")?,
            num("quote_bid")?,
            num("quote_ask")?,
            int("quote_seq")?,
        ) {
            (Some(time_ns), Some(bid), Some(ask), Some(seq)) => Some((
                Quote {
                    time_ns,
                    symbol,
                    bid,
                    ask,
                    bid_size: num("quote_bid_size")?.unwrap_or(0.0),
                    ask_size: num("quote_ask_size")?.unwrap_or(0.0),
                },
                seq as u64,
            )),
            _ => None,
        };
        Ok(LatestTicks { trade, quote })
    }
}

/// Field `k` of a latest hash, parsed (`None` when it is missing); else an error saying it
/// is not `what`.
fn parsed<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    k: &str,
    what: &str,
) -> Result<Option<T>> {
    fields
        .get(k)
        .map(|v| v.parse::<T>())
        .transpose()
        .map_err(|_| Error::field("latest cache", format!("{k} is not {what}")))
}
