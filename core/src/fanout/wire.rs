//! What goes over Redis: one [`TickMessage`] per symbol per batch, as JSON or rkyv, and the
//! key names.
//!
//! | key | type | what |
//! |---|---|---|
//! | `md:{SYMBOL}` | pub/sub channel (`SPUBLISH` on a cluster) | every message, live |
//! | `md:{SYMBOL}:ticks` | stream, `MAXLEN ~ N`, `MINID` now − age | the last N messages (so at least N ticks) within age (60 s) of the symbol's latest, field `m` |
//! | `md:{SYMBOL}:latest` | hash | latest trade (`trade_*` fields) and quote (`quote_*`) |
//!
//! The braces are a Redis Cluster hash tag: a symbol's three keys share a slot.
//!
//! JSON (`PayloadFormat::Json`) for any client:
//!
//! ```json
//! {"source":"demo-86a5aa2f03b43ac3","symbol":"ESU4","kind":"trade","first_seq":41,
//!  "trades":[{"time_ns":1719878400000000000,"price":5512.25,"volume":3.0,"side":"B",
//!             "exchange_seq":9}],"quotes":[]}
//! ```
//!
//! rkyv (`PayloadFormat::Rkyv`): the same [`TickMessage`], archived; read it in place with
//! [`access_rkyv`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The pub/sub channel of `symbol`.
pub fn channel(symbol: &str) -> String {
    format!("md:{{{symbol}}}")
}

/// The capped stream of `symbol`.
pub fn stream_key(symbol: &str) -> String {
    format!("md:{{{symbol}}}:ticks")
}

/// The latest-trade / latest-quote hash of `symbol`.
pub fn latest_key(symbol: &str) -> String {
    format!("md:{{{symbol}}}:latest")
}

/// The stream entry field holding the payload.
pub const STREAM_FIELD: &str = "m";

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// UTF-8 JSON, readable by any client.
    #[default]
    Json,
    /// rkyv-archived [`TickMessage`]: zero-copy for Rust consumers ([`access_rkyv`]).
    Rkyv,
}

impl std::str::FromStr for PayloadFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(PayloadFormat::Json),
            "rkyv" => Ok(PayloadFormat::Rkyv),
            _ => Err(Error::config(
                "fanout.format",
                format!("{s:?} is not one of json, rkyv"),
            )),
        }
    }
}

/// Gives each item the derives both payload formats need: serde for JSON, rkyv for the
/// archived form (each item names its own archived derives with `#[rkyv(derive(..))]`).
macro_rules! payload_types {
    ($($item:item)*) => {$(
        #[derive(
            Debug,
            Clone,
            PartialEq,
            Serialize,
            Deserialize,
            rkyv::Archive,
            rkyv::Serialize,
            rkyv::Deserialize,
        )]
        $item
    )*};
}

payload_types! {
    /// Which record kind a message carries.
    #[derive(Copy, Eq, Hash)]
    #[serde(rename_all = "lowercase")]
    #[rkyv(derive(Debug, PartialEq, Eq))]
    pub enum TickKind {
        /// `trades` is filled.
        Trade,
        /// `quotes` is filled.
        Quote,
    }

    /// A trade on the wire.
    #[derive(Copy)]
    #[rkyv(derive(Debug))]
    pub struct WireTrade {
        /// Nanoseconds since the Unix epoch (not truncated: the database keeps microseconds).
        pub time_ns: i64,
        /// Price.
        pub price: f64,
        /// Volume.
        pub volume: f64,
        /// Aggressor: `B`, `S` or `N`.
        pub side: char,
        /// The venue's sequence number.
        pub exchange_seq: i64,
    }

    /// A quote on the wire.
    #[derive(Copy)]
    #[rkyv(derive(Debug))]
    pub struct WireQuote {
        /// Nanoseconds since the Unix epoch.
        pub time_ns: i64,
        /// Best bid.
        pub bid: f64,
        /// Best ask.
        pub ask: f64,
        /// Size at the bid.
        pub bid_size: f64,
        /// Size at the ask.
        pub ask_size: f64,
    }

    /// The ticks of one symbol from one batch, in push order.
    ///
    /// Tick `i` has sequence `first_seq + i`. Sequences count the ticks of one symbol and
    /// kind published by one engine run (`source`), from 1; a consumer that sees
    /// `first_seq > last + 1` missed ticks (the fan-out dropped them, or it was disconnected),
    /// and a new `source` means the engine restarted.
    #[rkyv(derive(Debug))]
    pub struct TickMessage {
        /// The publishing ingestor run (`<stream>-<boot id>`).
        pub source: String,
        /// The instrument.
        pub symbol: String,
        /// Which of `trades` / `quotes` is filled.
        pub kind: TickKind,
        /// Sequence of the first tick.
        pub first_seq: u64,
        /// Trades, for `kind = trade`.
        pub trades: Vec<WireTrade>,
        /// Quotes, for `kind = quote`.
        pub quotes: Vec<WireQuote>,
    }
}

impl fmt::Display for TickKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TickKind::Trade => "trade",
            TickKind::Quote => "quote",
        })
    }
}

impl TickMessage {
    /// Number of ticks.
    pub fn len(&self) -> usize {
        self.trades.len() + self.quotes.len()
    }

    /// True without ticks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence of the last tick.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.len() as u64 - 1
    }

    /// Encodes in `format`.
    pub fn encode(&self, format: PayloadFormat) -> Result<Vec<u8>> {
        match format {
            PayloadFormat::Json => serde_json::to_vec(self)
                .map_err(|e| Error::field("fanout message", format!("JSON: {e}"))),
            PayloadFormat::Rkyv => rkyv::to_bytes::<rkyv::rancor::Error>(self)
                .map(|b| b.into_vec())
                .map_err(|e| Error::field("fanout message", format!("rkyv: {e}"))),
        }
    }

    /// Decodes a payload of `format` into an owned message.
    pub fn decode(format: PayloadFormat, bytes: &[u8]) -> Result<TickMessage> {
        match format {
            PayloadFormat::Json => serde_json::from_slice(bytes)
                .map_err(|e| Error::field("fanout message", format!("JSON: {e}"))),
            PayloadFormat::Rkyv => {
                let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
                aligned.extend_from_slice(bytes);
                rkyv::from_bytes::<TickMessage, rkyv::rancor::Error>(&aligned)
                    .map_err(|e| Error::field("fanout message", format!("rkyv: {e}")))
            }
        }
    }
}

/// Reads an rkyv payload in place, after validating it. `bytes` must be 16-byte aligned
/// (copy into an `rkyv::util::AlignedVec` first if it may not be).
pub fn access_rkyv(bytes: &[u8]) -> Result<&ArchivedTickMessage> {
    rkyv::access::<ArchivedTickMessage, rkyv::rancor::Error>(bytes)
        .map_err(|e| Error::field("fanout message", format!("rkyv: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, Side, Trade};
    use crate::symbol::Symbol;

    fn message() -> TickMessage {
        let es = Symbol::new("ESU4").unwrap();
        let mut m = TickMessage {
            source: "demo-0123456789abcdef".into(),
            symbol: "ESU4".into(),
            kind: TickKind::Trade,
            first_seq: 41,
            trades: Vec::new(),
            quotes: Vec::new(),
        };
        for i in 0..3 {
            Trade {
                time_ns: 1_719_878_400_000_000_123 + i,
                symbol: es,
                price: 5_512.25 + i as f64,
                volume: 3.0,
                side: Side::Sell,
                exchange_seq: 9 + i,
            }
            .push_to_message(&mut m);
        }
        m
    }

    #[test]
    fn keys_share_a_hash_tag() {
        assert_eq!(channel("ESU4"), "md:{ESU4}");
        assert_eq!(stream_key("ESU4"), "md:{ESU4}:ticks");
        assert_eq!(latest_key("ESU4"), "md:{ESU4}:latest");
    }

    #[test]
    fn both_formats_round_trip() {
        let m = message();
        assert_eq!(m.last_seq(), 43);
        for f in [PayloadFormat::Json, PayloadFormat::Rkyv] {
            let bytes = m.encode(f).unwrap();
            assert_eq!(TickMessage::decode(f, &bytes).unwrap(), m, "{f:?}");
        }
        let json = String::from_utf8(m.encode(PayloadFormat::Json).unwrap()).unwrap();
        assert!(json.contains(r#""kind":"trade""#), "{json}");
        assert!(json.contains(r#""side":"S""#), "{json}");
    }

    #[test]
    fn rkyv_reads_in_place() {
        let m = message();
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&m).unwrap();
        let archived = access_rkyv(&bytes).unwrap();
        assert_eq!(archived.symbol.as_str(), "ESU4");
        assert_eq!(archived.first_seq.to_native(), 41);
        assert_eq!(archived.trades.len(), 3);
        assert_eq!(archived.trades[2].price.to_native(), 5_514.25);
        assert_eq!(archived.kind, ArchivedTickKind::Trade);
    }

    #[test]
    fn quotes_travel_and_set_their_latest_fields() {
        let q = crate::record::Quote {
            time_ns: 5,
            symbol: Symbol::new("EURUSD").unwrap(),
            bid: 1.0825,
            ask: 1.0826,
            bid_size: 1e6,
            ask_size: 2e6,
        };
        let mut m = TickMessage {
            source: "s".into(),
            symbol: "EURUSD".into(),
            kind: TickKind::Quote,
            first_seq: 1,
            trades: Vec::new(),
            quotes: Vec::new(),
        };
        q.push_to_message(&mut m);
        for f in [PayloadFormat::Json, PayloadFormat::Rkyv] {
            let back = TickMessage::decode(f, &m.encode(f).unwrap()).unwrap();
            assert_eq!(back.quotes[0].ask, 1.0826);
        }
        let fields = q.latest_fields(9);
        assert!(fields.contains(&("quote_bid", "1.0825".to_string())));
        assert!(fields.contains(&("quote_seq", "9".to_string())));
        assert!(fields.iter().all(|(k, _)| k.starts_with("quote_")));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for f in [PayloadFormat::Json, PayloadFormat::Rkyv] {
            assert!(TickMessage::decode(f, b"\x00\x01garbage").is_err());
        }
        assert!("xml".parse::<PayloadFormat>().is_err());
    }
}
