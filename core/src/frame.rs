//! The TCP ingest protocol of `christmas-ingest`: length-prefixed rkyv frames.
//!
//! ```text
//! client → daemon   u32 big-endian length N, then N bytes: an archived IngestFrame
//! daemon → client   u32 big-endian length N, then N bytes: an archived AckFrame
//! ```
//!
//! Every [`IngestFrame`] is answered by one [`AckFrame`] with the same `seq`, in order,
//! once its records reach the requested [`AckLevel`]. A frame is all-or-nothing: one bad
//! record rejects the frame (the ack says which). A frame that cannot be read (too long,
//! not a valid archive) is answered with an ack of `seq` 0 and `ok = false`, and the
//! connection is closed.

use crate::record::{Quote, Side, Trade};
use crate::symbol::Symbol;
use crate::{Error, Result};

/// How far records must have gone before the daemon acknowledges them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckLevel {
    /// In the daemon's rings (fast; lost if the process dies before they commit).
    #[default]
    Accepted,
    /// Spooled to disk and fsynced (needs the spool).
    Durable,
    /// Committed to PostgreSQL.
    Committed,
}

impl AckLevel {
    /// The byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            AckLevel::Accepted => 0,
            AckLevel::Durable => 1,
            AckLevel::Committed => 2,
        }
    }

    /// From the byte on the wire.
    pub fn from_code(c: u8) -> Result<AckLevel> {
        match c {
            0 => Ok(AckLevel::Accepted),
            1 => Ok(AckLevel::Durable),
            2 => Ok(AckLevel::Committed),
            _ => Err(Error::field("ack", format!("unknown ack level {c}"))),
        }
    }
}

impl std::str::FromStr for AckLevel {
    type Err = Error;

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

/// A trade in a frame.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FrameTrade {
    /// Instrument (1–31 bytes of UTF-8).
    pub symbol: String,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Price (finite).
    pub price: f64,
    /// Volume (finite, ≥ 0).
    pub volume: f64,
    /// `B`, `S` or `N`.
    pub side: u8,
    /// The venue's sequence number.
    pub exchange_seq: i64,
}

/// A quote in a frame.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FrameQuote {
    /// Instrument.
    pub symbol: String,
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

/// One batch of records from a feed handler.
#[derive(Debug, Clone, PartialEq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IngestFrame {
    /// The client's sequence number for this frame, echoed in its ack.
    pub seq: u64,
    /// [`AckLevel::code`].
    pub ack: u8,
    /// The API key, when the daemon requires one (checked on the connection's first frame;
    /// later frames may leave it empty).
    pub api_key: String,
    /// Trades.
    pub trades: Vec<FrameTrade>,
    /// Quotes.
    pub quotes: Vec<FrameQuote>,
}

/// The daemon's answer to one frame.
#[derive(Debug, Clone, PartialEq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AckFrame {
    /// The frame's `seq` (0 for a frame that could not be read).
    pub seq: u64,
    /// True when every record reached the ack level.
    pub ok: bool,
    /// Records accepted (0 when `ok` is false).
    pub records: u32,
    /// Why not, when `ok` is false.
    pub error: String,
}

fn prefixed(body: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(body.len()).map_err(|_| Error::field("frame", "longer than 4 GiB"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Encodes an ingest frame with its length prefix.
pub fn encode_ingest(frame: &IngestFrame) -> Result<Vec<u8>> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(frame)
        .map_err(|e| Error::field("frame", format!("rkyv: {e}")))?;
    prefixed(&body)
}

/// Encodes an ack frame with its length prefix.
pub fn encode_ack(frame: &AckFrame) -> Result<Vec<u8>> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(frame)
        .map_err(|e| Error::field("frame", format!("rkyv: {e}")))?;
    prefixed(&body)
}

/// Decodes the body of an ingest frame (without its length prefix), validating it.
pub fn decode_ingest(body: &[u8]) -> Result<IngestFrame> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<IngestFrame, rkyv::rancor::Error>(&aligned)
        .map_err(|e| Error::field("frame", format!("not a valid IngestFrame: {e}")))
}

/// Decodes the body of an ack frame (without its length prefix), validating it.
pub fn decode_ack(body: &[u8]) -> Result<AckFrame> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<AckFrame, rkyv::rancor::Error>(&aligned)
        .map_err(|e| Error::field("frame", format!("not a valid AckFrame: {e}")))
}

/// Checks a frame's records and turns them into pipeline records; the error names the
/// first bad record (`trades[3].price`).
pub fn to_records(frame: &IngestFrame) -> std::result::Result<(Vec<Trade>, Vec<Quote>), String> {
    let finite = |v: f64, what: String| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{what}: must be a finite number"))
        }
    };
    let mut trades = Vec::with_capacity(frame.trades.len());
    for (i, t) in frame.trades.iter().enumerate() {
        let symbol = Symbol::new(&t.symbol).map_err(|e| format!("trades[{i}].symbol: {e}"))?;
        let volume = finite(t.volume, format!("trades[{i}].volume"))?;
        if volume < 0.0 {
            return Err(format!("trades[{i}].volume: must be ≥ 0"));
        }
        trades.push(Trade {
            time_ns: t.time_ns,
            symbol,
            price: finite(t.price, format!("trades[{i}].price"))?,
            volume,
            side: Side::from_code(t.side).map_err(|e| format!("trades[{i}].side: {e}"))?,
            exchange_seq: t.exchange_seq,
        });
    }
    let mut quotes = Vec::with_capacity(frame.quotes.len());
    for (i, q) in frame.quotes.iter().enumerate() {
        quotes.push(Quote {
            time_ns: q.time_ns,
            symbol: Symbol::new(&q.symbol).map_err(|e| format!("quotes[{i}].symbol: {e}"))?,
            bid: finite(q.bid, format!("quotes[{i}].bid"))?,
            ask: finite(q.ask, format!("quotes[{i}].ask"))?,
            bid_size: finite(q.bid_size, format!("quotes[{i}].bid_size"))?,
            ask_size: finite(q.ask_size, format!("quotes[{i}].ask_size"))?,
        });
    }
    Ok((trades, quotes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> IngestFrame {
        IngestFrame {
            seq: 7,
            ack: AckLevel::Committed.code(),
            api_key: String::new(),
            trades: vec![FrameTrade {
                symbol: "ESU4".into(),
                time_ns: 1,
                price: 5_512.25,
                volume: 2.0,
                side: b'B',
                exchange_seq: 3,
            }],
            quotes: vec![FrameQuote {
                symbol: "ESU4".into(),
                time_ns: 2,
                bid: 5_512.0,
                ask: 5_512.25,
                bid_size: 10.0,
                ask_size: 12.0,
            }],
        }
    }

    #[test]
    fn frames_round_trip_with_their_length() {
        let bytes = encode_ingest(&frame()).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode_ingest(&bytes[4..]).unwrap(), frame());
        let ack = AckFrame {
            seq: 7,
            ok: true,
            records: 2,
            error: String::new(),
        };
        assert_eq!(decode_ack(&encode_ack(&ack).unwrap()[4..]).unwrap(), ack);
    }

    #[test]
    fn garbage_and_bad_records_are_named() {
        assert!(decode_ingest(b"garbage!").is_err());
        let mut f = frame();
        f.trades[0].price = f64::NAN;
        assert_eq!(
            to_records(&f).unwrap_err(),
            "trades[0].price: must be a finite number"
        );
        let mut f = frame();
        f.quotes[0].symbol = String::new();
        assert!(to_records(&f).unwrap_err().starts_with("quotes[0].symbol"));
        let (t, q) = to_records(&frame()).unwrap();
        assert_eq!((t.len(), q.len()), (1, 1));
        assert_eq!(AckLevel::from_code(2).unwrap(), AckLevel::Committed);
        assert!(AckLevel::from_code(9).is_err());
    }
}
