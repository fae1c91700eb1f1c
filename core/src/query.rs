//! Reading market data back: latest tick, trades, quotes and OHLCV bars.
//!
//! [`MarketDataReader`] works the same on both schema variants (it only uses the columns
//! and the `christmas_bars` function both have) and can point at a read replica: give it
//! the replica's URL (`READ_DATABASE_URL`). It reads through the replica-aware client the
//! order desk uses too (`pg/read.rs`); every statement is unnamed (`query_typed`), so it
//! also works through PgBouncer in transaction mode.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::pg::read::ReadClient;
use crate::record::{Quote, Side, Trade};
use crate::symbol::Symbol;

/// Width of an OHLCV bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarInterval {
    /// One minute (`1m`).
    Minute1,
    /// Five minutes (`5m`).
    Minute5,
    /// One hour (`1h`).
    Hour1,
    /// One day (`1d`), UTC midnight to midnight.
    Day1,
}

impl BarInterval {
    /// Every width, shortest first.
    pub const ALL: [BarInterval; 4] = [
        BarInterval::Minute1,
        BarInterval::Minute5,
        BarInterval::Hour1,
        BarInterval::Day1,
    ];

    /// `1m`, `5m`, `1h` or `1d`.
    pub fn as_str(self) -> &'static str {
        match self {
            BarInterval::Minute1 => "1m",
            BarInterval::Minute5 => "5m",
            BarInterval::Hour1 => "1h",
            BarInterval::Day1 => "1d",
        }
    }

    /// The width.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            BarInterval::Minute1 => 60,
            BarInterval::Minute5 => 300,
            BarInterval::Hour1 => 3_600,
            BarInterval::Day1 => 86_400,
        })
    }

    /// Start of the bar holding `time_ns`: bars are aligned on UTC midnight.
    pub fn bucket_ns(self, time_ns: i64) -> i64 {
        let width = self.duration().as_nanos() as i64;
        time_ns.div_euclid(width) * width
    }
}

impl fmt::Display for BarInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BarInterval {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BarInterval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| Error::field("interval", format!("{s:?} is not one of 1m, 5m, 1h, 1d")))
    }
}

/// One OHLCV bar. Open and close are the first and last trade by time, ties broken by the
/// venue's sequence number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Start of the bar, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// First trade's price.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last trade's price.
    pub close: f64,
    /// Sum of trade volumes.
    pub volume: f64,
    /// Number of trades.
    pub trades: u64,
}

/// The most recent trade and quote of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latest {
    /// Latest trade by time (then exchange sequence), if any.
    pub trade: Option<Trade>,
    /// Latest quote by time, if any.
    pub quote: Option<Quote>,
}

/// Reads market data from the primary or a read replica. Cheap to share (`&self` methods
/// run concurrently on one pipelined connection); reconnects on the next call after the
/// connection is lost.
pub struct MarketDataReader {
    /// The replica-aware connection.
    db: ReadClient,
}

impl fmt::Debug for MarketDataReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config may hold a password; show only where it points.
        let config = self.db.config();
        f.debug_struct("MarketDataReader")
            .field("hosts", &config.get_hosts())
            .field("dbname", &config.get_dbname())
            .finish()
    }
}

const TRADE_COLUMNS: &str = "time, symbol, price, volume, side, exchange_seq";
const QUOTE_COLUMNS: &str = "time, symbol, bid, ask, bid_size, ask_size";

impl MarketDataReader {
    /// Connects to `url` (a primary or a replica).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(MarketDataReader {
            db: ReadClient::connect(url).await?,
        })
    }

    /// Reads from the replica at `replica_url` while it is up and at most `max_lag`
    /// behind, else from the primary at `primary_url` (judged again every second). Only
    /// the primary must be reachable now.
    pub async fn with_fallback(
        replica_url: &str,
        primary_url: &str,
        max_lag: Duration,
    ) -> Result<Self> {
        Ok(MarketDataReader {
            db: ReadClient::with_fallback(replica_url, primary_url, max_lag).await?,
        })
    }

    /// A reader of `url` (with the primary `fallback` beside a replica, as in
    /// [`with_fallback`](Self::with_fallback)) that connects on its first read: it is made
    /// while PostgreSQL is down, and each read fails with a connection error until it is
    /// back.
    pub fn connect_later(url: &str, fallback: Option<(&str, Duration)>) -> Result<Self> {
        let db = match fallback {
            Some((primary, max_lag)) => ReadClient::with_fallback_later(url, primary, max_lag)?,
            None => ReadClient::connect_later(url)?,
        };
        Ok(MarketDataReader { db })
    }

    /// Whether reads go to the replica now (`false` for a reader without one). Judged
    /// at most once a second; the judgement also measures [`replica_lag`](Self::replica_lag).
    pub async fn on_replica(&self) -> bool {
        self.db.on_replica().await
    }

    /// How far the replica's replay is behind, as last measured on the replica (by
    /// [`on_replica`](Self::on_replica) or a read, at most a second before them): zero when
    /// it replayed all it received, else the age of the last transaction it replayed.
    /// `None` for a reader without a replica, before the first judgement, and while the
    /// replica cannot be reached.
    pub fn replica_lag(&self) -> Option<Duration> {
        self.db.replica_lag()
    }

    async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        self.db.query(context, sql, params).await
    }

    /// `SELECT 1`: is the database reachable?
    pub async fn ping(&self) -> Result<()> {
        self.query("pinging the read database", "SELECT 1", &[])
            .await
            .map(|_| ())
    }

    /// The latest trade and quote of `symbol`.
    pub async fn latest(&self, symbol: Symbol) -> Result<Latest> {
        let sym = symbol.as_str();
        let trade_sql = format!(
            "SELECT {TRADE_COLUMNS} FROM market_data WHERE symbol = $1 \
             ORDER BY time DESC, exchange_seq DESC LIMIT 1"
        );
        let quote_sql = format!(
            "SELECT {QUOTE_COLUMNS} FROM quotes WHERE symbol = $1 ORDER BY time DESC LIMIT 1"
        );
        let p: [(&(dyn ToSql + Sync), Type); 1] = [(&sym, Type::TEXT)];
        let (trade, quote) = tokio::try_join!(
            self.query("reading the latest trade", &trade_sql, &p),
            self.query("reading the latest quote", &quote_sql, &p),
        )?;
        Ok(Latest {
            trade: trade
                .first()
                .map(|r| trade_from_row(r, symbol))
                .transpose()?,
            quote: quote
                .first()
                .map(|r| quote_from_row(r, symbol))
                .transpose()?,
        })
    }

    /// Trades of `symbol` with `from_ns <= time < to_ns`, oldest first, at most `limit`.
    pub async fn trades(
        &self,
        symbol: Symbol,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<Trade>> {
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM market_data \
             WHERE symbol = $1 AND time >= $2 AND time < $3 \
             ORDER BY time, exchange_seq LIMIT $4"
        );
        let rows = self
            .ranged("reading trades", &sql, symbol, from_ns, to_ns, limit)
            .await?;
        rows.iter().map(|r| trade_from_row(r, symbol)).collect()
    }

    /// Quotes of `symbol` with `from_ns <= time < to_ns`, oldest first, at most `limit`.
    pub async fn quotes(
        &self,
        symbol: Symbol,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<Quote>> {
        let sql = format!(
            "SELECT {QUOTE_COLUMNS} FROM quotes \
             WHERE symbol = $1 AND time >= $2 AND time < $3 ORDER BY time LIMIT $4"
        );
        let rows = self
            .ranged("reading quotes", &sql, symbol, from_ns, to_ns, limit)
            .await?;
        rows.iter().map(|r| quote_from_row(r, symbol)).collect()
    }

    async fn ranged(
        &self,
        context: &'static str,
        sql: &str,
        symbol: Symbol,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let sym = symbol.as_str();
        let (from, to) = (system_time(from_ns), system_time(to_ns));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            context,
            sql,
            &[
                (&sym, Type::TEXT),
                (&from, Type::TIMESTAMPTZ),
                (&to, Type::TIMESTAMPTZ),
                (&limit, Type::INT8),
            ],
        )
        .await
    }

    /// OHLCV bars of `symbol`: every bar whose start lies in `[from_ns rounded down to the
    /// width, to_ns)`, each complete, oldest first. Bars without trades are absent.
    pub async fn bars(
        &self,
        symbol: Symbol,
        interval: BarInterval,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<Bar>> {
        let sym = symbol.as_str();
        let (from, to) = (system_time(from_ns), system_time(to_ns));
        let width = interval.duration().as_secs() as f64;
        let rows = self
            .query(
                "reading bars",
                "SELECT bucket, open, high, low, close, volume, trades \
                 FROM christmas_bars($1, $2 * interval '1 second', $3, $4)",
                &[
                    (&sym, Type::TEXT),
                    (&width, Type::FLOAT8),
                    (&from, Type::TIMESTAMPTZ),
                    (&to, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Bar {
                    start_ns: unix_ns(r.get(0)),
                    open: r.get(1),
                    high: r.get(2),
                    low: r.get(3),
                    close: r.get(4),
                    volume: r.get(5),
                    trades: r.get::<_, i64>(6) as u64,
                })
            })
            .collect()
    }
}

fn trade_from_row(r: &Row, symbol: Symbol) -> Result<Trade> {
    let side: String = r.get(4);
    Ok(Trade {
        time_ns: unix_ns(r.get(0)),
        symbol,
        price: r.get(2),
        volume: r.get(3),
        side: Side::from_code(side.as_bytes().first().copied().unwrap_or(b'N'))?,
        exchange_seq: r.get(5),
    })
}

fn quote_from_row(r: &Row, symbol: Symbol) -> Result<Quote> {
    Ok(Quote {
        time_ns: unix_ns(r.get(0)),
        symbol,
        bid: r.get(2),
        ask: r.get(3),
        bid_size: r.get(4),
        ask_size: r.get(5),
    })
}

/// Nanoseconds since the Unix epoch as a `SystemTime` (which may be before 1970).
pub fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// A `SystemTime` as nanoseconds since the Unix epoch (saturating).
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_bucket_on_utc_boundaries() {
        for i in BarInterval::ALL {
            assert_eq!(i.as_str().parse::<BarInterval>().unwrap(), i);
        }
        assert!("2m".parse::<BarInterval>().is_err());
        let t = 1_719_878_345_123_456_789; // 2024-07-01 23:59:05.123456789 UTC
        assert_eq!(BarInterval::Minute1.bucket_ns(t), 1_719_878_340_000_000_000);
        assert_eq!(BarInterval::Minute5.bucket_ns(t), 1_719_878_100_000_000_000);
        assert_eq!(BarInterval::Hour1.bucket_ns(t), 1_719_874_800_000_000_000);
        assert_eq!(BarInterval::Day1.bucket_ns(t), 1_719_792_000_000_000_000);
        assert_eq!(BarInterval::Minute1.bucket_ns(-1), -60_000_000_000);
    }

    #[test]
    fn system_time_round_trips_both_sides_of_the_epoch() {
        for ns in [0, 1, -1, 1_719_878_345_123_456_789, -86_400_000_000_123] {
            assert_eq!(unix_ns(system_time(ns)), ns);
        }
    }
}
