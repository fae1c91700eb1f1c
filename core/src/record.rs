//! Record kinds and the [`Record`] trait that tells the pipeline how to store them.
//!
//! Adding a kind means implementing [`Record`] in this file: the table, its columns, the
//! binary `COPY` encoding and its fan-out form. Everything else in the pipeline is generic.

use bytes::BytesMut;

use crate::binary_copy::{RowReader, RowWriter};
use crate::error::{Error, Result};
use crate::fanout::wire::{TickKind, TickMessage, WireQuote, WireTrade};
use crate::symbol::Symbol;

/// A tick the pipeline can batch into a PostgreSQL table with binary `COPY`.
pub trait Record: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and metrics (`"trade"`).
    const KIND: &'static str;
    /// The table rows go to unless the config names another.
    const DEFAULT_TABLE: &'static str;
    /// The table's columns, in the order [`Record::encode_row`] writes them.
    const COLUMNS: &'static [&'static str];
    /// An upper bound of one encoded row's size in bytes.
    const MAX_ROW_BYTES: usize;

    /// The instrument; all records of a symbol go through one shard.
    fn symbol(&self) -> &Symbol;

    /// Event time, nanoseconds since the Unix epoch.
    fn time_ns(&self) -> i64;

    /// Appends this record as one binary `COPY` row. `out` has at least
    /// [`Record::MAX_ROW_BYTES`] bytes of spare capacity.
    fn encode_row(&self, out: &mut BytesMut);

    /// Reads back a row written by [`Record::encode_row`] (times at microsecond precision).
    fn decode_row(row: &[u8]) -> Result<Self>;

    /// The kind of fan-out message it travels in.
    const TICK_KIND: TickKind;

    /// Appends it to a fan-out message ([`crate::fanout::wire`]).
    fn push_to_message(&self, message: &mut TickMessage);

    /// The fields it sets in its symbol's `md:{SYMBOL}:latest` hash, given its fan-out
    /// sequence.
    fn latest_fields(&self, seq: u64) -> Vec<(&'static str, String)>;
}

/// The aggressor side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Side {
    /// The buyer lifted the offer. Stored as `'B'`.
    Buy,
    /// The seller hit the bid. Stored as `'S'`.
    Sell,
    /// Unknown or not applicable. Stored as `'N'`.
    #[default]
    None,
}

impl Side {
    /// The one-byte code stored in the `side` column.
    pub fn code(self) -> u8 {
        match self {
            Side::Buy => b'B',
            Side::Sell => b'S',
            Side::None => b'N',
        }
    }

    /// Parses a stored code.
    pub fn from_code(c: u8) -> Result<Side> {
        match c {
            b'B' => Ok(Side::Buy),
            b'S' => Ok(Side::Sell),
            b'N' => Ok(Side::None),
            other => Err(Error::field(
                "side",
                format!("unknown code {:?}", other as char),
            )),
        }
    }
}

/// A trade print. Table `market_data`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trade {
    /// Event time, nanoseconds since the Unix epoch (stored at microsecond precision).
    pub time_ns: i64,
    /// Instrument.
    pub symbol: Symbol,
    /// Trade price.
    pub price: f64,
    /// Traded quantity.
    pub volume: f64,
    /// Aggressor side.
    pub side: Side,
    /// The venue's sequence number for this event (0 when unknown).
    pub exchange_seq: i64,
}

impl Record for Trade {
    const KIND: &'static str = "trade";
    const DEFAULT_TABLE: &'static str = "market_data";
    const COLUMNS: &'static [&'static str] =
        &["time", "symbol", "price", "volume", "side", "exchange_seq"];
    // field count + 6 length words + 8 + symbol + 8 + 8 + 1 + 8
    const MAX_ROW_BYTES: usize = 2 + 6 * 4 + 8 + Symbol::MAX_LEN + 8 + 8 + 1 + 8;

    #[inline]
    fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    #[inline]
    fn time_ns(&self) -> i64 {
        self.time_ns
    }

    #[inline]
    fn encode_row(&self, out: &mut BytesMut) {
        RowWriter::begin(out, 6)
            .put_timestamp_ns(self.time_ns)
            .put_text(self.symbol.as_bytes())
            .put_f64(self.price)
            .put_f64(self.volume)
            .put_char(self.side.code())
            .put_i64(self.exchange_seq);
    }

    fn decode_row(row: &[u8]) -> Result<Self> {
        let mut r = RowReader::begin(row, 6)?;
        let t = Trade {
            time_ns: r.timestamp_ns()?,
            symbol: Symbol::from_utf8(r.text()?)?,
            price: r.f64()?,
            volume: r.f64()?,
            side: Side::from_code(r.char()?)?,
            exchange_seq: r.i64()?,
        };
        r.finish()?;
        Ok(t)
    }

    const TICK_KIND: TickKind = TickKind::Trade;

    fn push_to_message(&self, message: &mut TickMessage) {
        message.trades.push(WireTrade {
            time_ns: self.time_ns,
            price: self.price,
            volume: self.volume,
            side: self.side.code() as char,
            exchange_seq: self.exchange_seq,
        });
    }

    fn latest_fields(&self, seq: u64) -> Vec<(&'static str, String)> {
        vec![
            ("trade_time_ns", self.time_ns.to_string()),
            ("trade_price", self.price.to_string()),
            ("trade_volume", self.volume.to_string()),
            ("trade_side", (self.side.code() as char).to_string()),
            ("trade_exchange_seq", self.exchange_seq.to_string()),
            ("trade_seq", seq.to_string()),
        ]
    }
}

/// A top-of-book quote. Table `quotes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// Event time, nanoseconds since the Unix epoch (stored at microsecond precision).
    pub time_ns: i64,
    /// Instrument.
    pub symbol: Symbol,
    /// Best bid price.
    pub bid: f64,
    /// Best ask price.
    pub ask: f64,
    /// Quantity at the best bid.
    pub bid_size: f64,
    /// Quantity at the best ask.
    pub ask_size: f64,
}

impl Record for Quote {
    const KIND: &'static str = "quote";
    const DEFAULT_TABLE: &'static str = "quotes";
    const COLUMNS: &'static [&'static str] =
        &["time", "symbol", "bid", "ask", "bid_size", "ask_size"];
    const MAX_ROW_BYTES: usize = 2 + 6 * 4 + 8 + Symbol::MAX_LEN + 4 * 8;

    #[inline]
    fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    #[inline]
    fn time_ns(&self) -> i64 {
        self.time_ns
    }

    #[inline]
    fn encode_row(&self, out: &mut BytesMut) {
        RowWriter::begin(out, 6)
            .put_timestamp_ns(self.time_ns)
            .put_text(self.symbol.as_bytes())
            .put_f64(self.bid)
            .put_f64(self.ask)
            .put_f64(self.bid_size)
            .put_f64(self.ask_size);
    }

    fn decode_row(row: &[u8]) -> Result<Self> {
        let mut r = RowReader::begin(row, 6)?;
        let q = Quote {
            time_ns: r.timestamp_ns()?,
            symbol: Symbol::from_utf8(r.text()?)?,
            bid: r.f64()?,
            ask: r.f64()?,
            bid_size: r.f64()?,
            ask_size: r.f64()?,
        };
        r.finish()?;
        Ok(q)
    }

    const TICK_KIND: TickKind = TickKind::Quote;

    fn push_to_message(&self, message: &mut TickMessage) {
        message.quotes.push(WireQuote {
            time_ns: self.time_ns,
            bid: self.bid,
            ask: self.ask,
            bid_size: self.bid_size,
            ask_size: self.ask_size,
        });
    }

    fn latest_fields(&self, seq: u64) -> Vec<(&'static str, String)> {
        vec![
            ("quote_time_ns", self.time_ns.to_string()),
            ("quote_bid", self.bid.to_string()),
            ("quote_ask", self.ask.to_string()),
            ("quote_bid_size", self.bid_size.to_string()),
            ("quote_ask_size", self.ask_size.to_string()),
            ("quote_seq", seq.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(sym: &str, price: f64) -> Trade {
        Trade {
            time_ns: 1_719_878_400_123_456_000,
            symbol: Symbol::new(sym).unwrap(),
            price,
            volume: 2.0,
            side: Side::Sell,
            exchange_seq: 99,
        }
    }

    #[test]
    fn layout() {
        // Records travel by value through the rings; keep them small.
        assert!(std::mem::size_of::<Trade>() <= 72);
        assert!(std::mem::size_of::<Quote>() <= 72);
    }

    #[test]
    fn trade_round_trip_and_size_bound() {
        let t = trade(&"Z".repeat(Symbol::MAX_LEN), f64::MAX);
        let mut buf = BytesMut::new();
        t.encode_row(&mut buf);
        assert_eq!(buf.len(), Trade::MAX_ROW_BYTES);
        assert_eq!(Trade::decode_row(&buf).unwrap(), t);
    }

    #[test]
    fn quote_round_trip_and_size_bound() {
        let q = Quote {
            time_ns: -5_000,
            symbol: Symbol::new(&"Q".repeat(Symbol::MAX_LEN)).unwrap(),
            bid: 1.0,
            ask: f64::INFINITY,
            bid_size: 0.0,
            ask_size: -0.0,
        };
        let mut buf = BytesMut::new();
        q.encode_row(&mut buf);
        assert_eq!(buf.len(), Quote::MAX_ROW_BYTES);
        assert_eq!(Quote::decode_row(&buf).unwrap(), q);
    }

    #[test]
    fn nan_survives() {
        let t = trade("ES", f64::NAN);
        let mut buf = BytesMut::new();
        t.encode_row(&mut buf);
        assert!(Trade::decode_row(&buf).unwrap().price.is_nan());
    }

    #[test]
    fn columns_match_field_count() {
        assert_eq!(Trade::COLUMNS.len(), 6);
        assert_eq!(Quote::COLUMNS.len(), 6);
    }
}
