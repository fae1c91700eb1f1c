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
//!
//! The daemon reads a frame in place ([`FrameBuffer`], [`IngestView`]): records go from the
//! archived bytes straight into [`Ticks`], with no owned `String` per record, and a bad
//! record is reported as a [`FrameRecordError`] (list, index, field, reason) whose text is
//! written only when it is displayed.

use rkyv::util::AlignedVec;

use crate::error::{Error, FieldError, Result};
pub use crate::ingress::AckLevel;
use crate::ingress::Ticks;
use crate::record::{Quote, Side, Trade};
use crate::symbol::Symbol;

/// A trade in a frame.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FrameTrade {
    /// Instrument (1–31 bytes of UTF-8).
    pub symbol: String,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Price (finite).
    pub price: f64,
    /// Volume (0 to 1e18).
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

impl From<&Trade> for FrameTrade {
    /// The trade as a feed handler frames it.
    fn from(t: &Trade) -> Self {
        FrameTrade {
            symbol: t.symbol.as_str().into(),
            time_ns: t.time_ns,
            price: t.price,
            volume: t.volume,
            side: t.side.code(),
            exchange_seq: t.exchange_seq,
        }
    }
}

impl From<&Quote> for FrameQuote {
    /// The quote as a feed handler frames it.
    fn from(q: &Quote) -> Self {
        FrameQuote {
            symbol: q.symbol.as_str().into(),
            time_ns: q.time_ns,
            bid: q.bid,
            ask: q.ask,
            bid_size: q.bid_size,
            ask_size: q.ask_size,
        }
    }
}

/// One batch of records from a feed handler.
#[derive(Debug, Clone, PartialEq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IngestFrame {
    /// The client's sequence number for this frame, echoed in its ack.
    pub seq: u64,
    /// [`AckLevel::code`].
    pub ack: u8,
    /// The API key, when the daemon requires one (checked on the connection's first frame;
    /// later frames may leave it empty). The daemon reads at most `tcp.auth_frame_bytes`
    /// (64 KiB by default) of a first frame: a client with larger batches sends the key in
    /// a frame without records first, answered at once with `ok` and 0 records.
    pub api_key: String,
    /// Trades.
    pub trades: Vec<FrameTrade>,
    /// Quotes.
    pub quotes: Vec<FrameQuote>,
    /// The feed handler's producer id, so a resend after a reconnect is stored once
    /// ([`crate::producer`]). Sent on the connection's first frame (later frames may leave
    /// it empty and keep it; empty on the first frame: no producer, as before).
    pub producer: String,
    /// With a producer: the sequence of the frame's first tick (trades, then quotes, take
    /// the next ones). A resend repeats the frame with the same `producer_seq`.
    pub producer_seq: u64,
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
    /// Of those, a producer's ticks left out as resends of ticks already stored.
    pub duplicates: u32,
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

/// A bad record in an ingest frame: which list, which position, which field and why.
///
/// Displays as the ack's error text, `trades[3].price: must be a finite number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{list}[{index}].{}: {}", error.field, error.reason)]
pub struct FrameRecordError {
    /// `trades` or `quotes`.
    pub list: &'static str,
    /// The record's position in its list (0-based).
    pub index: usize,
    /// The field and what is wrong with it.
    pub error: FieldError,
}

/// The daemon acks a bad frame with this text.
impl From<FrameRecordError> for String {
    fn from(e: FrameRecordError) -> String {
        e.to_string()
    }
}

impl From<FrameRecordError> for Error {
    fn from(e: FrameRecordError) -> Error {
        Error::field(e.list, e)
    }
}

/// A reusable, aligned buffer a connection reads frame bodies into, so a frame is read in
/// place ([`FrameBuffer::ingest`]) without copying or allocating once it has grown.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    bytes: AlignedVec<16>,
}

impl FrameBuffer {
    /// The next body's `len` bytes, to read into (zeroed; the previous body is gone).
    pub fn body_mut(&mut self, len: usize) -> &mut [u8] {
        self.bytes.clear();
        self.bytes.resize(len, 0);
        self.bytes.as_mut_slice()
    }

    /// Gives back its memory when it grew past `max_bytes`, so a connection that once sent
    /// one large frame does not hold that much for the rest of its life; smaller buffers
    /// are kept for the next frame.
    pub fn release_if_over(&mut self, max_bytes: usize) {
        if self.bytes.capacity() > max_bytes {
            self.bytes = AlignedVec::new();
        }
    }

    /// The body read last, checked to be an archived [`IngestFrame`] and read in place.
    pub fn ingest(&self) -> Result<IngestView<'_>> {
        rkyv::access::<ArchivedIngestFrame, rkyv::rancor::Error>(&self.bytes)
            .map(|archived| IngestView { archived })
            .map_err(|e| Error::field("frame", format!("not a valid IngestFrame: {e}")))
    }
}

/// An ingest frame read in place from a [`FrameBuffer`].
#[derive(Clone, Copy)]
pub struct IngestView<'a> {
    archived: &'a ArchivedIngestFrame,
}

impl std::fmt::Debug for IngestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("IngestView")
            .field("seq", &self.seq())
            .field("ack", &self.ack_code())
            .field("records", &self.records())
            .finish()
    }
}

impl<'a> IngestView<'a> {
    /// The client's sequence number of the frame.
    pub fn seq(&self) -> u64 {
        self.archived.seq.to_native()
    }

    /// The requested [`AckLevel`]'s code.
    pub fn ack_code(&self) -> u8 {
        self.archived.ack
    }

    /// The requested [`AckLevel`]; an unknown code is an error naming `ack`.
    pub fn ack(&self) -> Result<AckLevel> {
        AckLevel::from_code(self.archived.ack)
    }

    /// The API key (empty when not sent).
    pub fn api_key(&self) -> &'a str {
        self.archived.api_key.as_str()
    }

    /// The producer id (empty when not sent).
    pub fn producer(&self) -> &'a str {
        self.archived.producer.as_str()
    }

    /// The sequence of the frame's first tick, with a producer.
    pub fn producer_seq(&self) -> u64 {
        self.archived.producer_seq.to_native()
    }

    /// Records in the frame, trades and quotes.
    pub fn records(&self) -> usize {
        self.archived.trades.len() + self.archived.quotes.len()
    }

    /// Replaces `ticks`' contents with the frame's records, validated. On an error the
    /// frame is refused whole: `ticks` then holds the records before the bad one.
    pub fn read_ticks(&self, ticks: &mut Ticks) -> std::result::Result<(), FrameRecordError> {
        ticks.clear();
        read_into(
            ticks,
            self.archived.trades.iter().map(TradeFields::from),
            self.archived.quotes.iter().map(QuoteFields::from),
        )
    }
}

/// A frame trade's fields, borrowed from an owned or an archived frame.
struct TradeFields<'a> {
    symbol: &'a str,
    time_ns: i64,
    price: f64,
    volume: f64,
    side: u8,
    exchange_seq: i64,
}

impl<'a> From<&'a FrameTrade> for TradeFields<'a> {
    fn from(t: &'a FrameTrade) -> Self {
        TradeFields {
            symbol: &t.symbol,
            time_ns: t.time_ns,
            price: t.price,
            volume: t.volume,
            side: t.side,
            exchange_seq: t.exchange_seq,
        }
    }
}

impl<'a> From<&'a ArchivedFrameTrade> for TradeFields<'a> {
    fn from(t: &'a ArchivedFrameTrade) -> Self {
        TradeFields {
            symbol: t.symbol.as_str(),
            time_ns: t.time_ns.to_native(),
            price: t.price.to_native(),
            volume: t.volume.to_native(),
            side: t.side,
            exchange_seq: t.exchange_seq.to_native(),
        }
    }
}

/// A frame quote's fields, borrowed from an owned or an archived frame.
struct QuoteFields<'a> {
    symbol: &'a str,
    time_ns: i64,
    prices: [f64; 4],
}

impl<'a> From<&'a FrameQuote> for QuoteFields<'a> {
    fn from(q: &'a FrameQuote) -> Self {
        QuoteFields {
            symbol: &q.symbol,
            time_ns: q.time_ns,
            prices: [q.bid, q.ask, q.bid_size, q.ask_size],
        }
    }
}

impl<'a> From<&'a ArchivedFrameQuote> for QuoteFields<'a> {
    fn from(q: &'a ArchivedFrameQuote) -> Self {
        QuoteFields {
            symbol: q.symbol.as_str(),
            time_ns: q.time_ns.to_native(),
            prices: [q.bid, q.ask, q.bid_size, q.ask_size].map(|v| v.to_native()),
        }
    }
}

/// Appends each record to `ticks` through its kind's validation; the first bad one stops
/// the reading and is named by list and index.
fn read_into<'a>(
    ticks: &mut Ticks,
    trades: impl Iterator<Item = TradeFields<'a>>,
    quotes: impl Iterator<Item = QuoteFields<'a>>,
) -> std::result::Result<(), FrameRecordError> {
    let at = |list, index| move |error| FrameRecordError { list, index, error };
    for (i, t) in trades.enumerate() {
        let trade = Trade {
            time_ns: t.time_ns,
            symbol: Symbol::parse(t.symbol).map_err(at("trades", i))?,
            price: t.price,
            volume: t.volume,
            side: Side::from_code(t.side).map_err(at("trades", i))?,
            exchange_seq: t.exchange_seq,
        };
        ticks.push_trade(trade).map_err(at("trades", i))?;
    }
    for (i, q) in quotes.enumerate() {
        let [bid, ask, bid_size, ask_size] = q.prices;
        let quote = Quote {
            time_ns: q.time_ns,
            symbol: Symbol::parse(q.symbol).map_err(at("quotes", i))?,
            bid,
            ask,
            bid_size,
            ask_size,
        };
        ticks.push_quote(quote).map_err(at("quotes", i))?;
    }
    Ok(())
}

/// Checks a decoded frame's records and turns them into pipeline records; the error names
/// the first bad record (`trades[3].price`). The daemon reads frames in place instead
/// ([`IngestView::read_ticks`]).
pub fn to_records(
    frame: &IngestFrame,
) -> std::result::Result<(Vec<Trade>, Vec<Quote>), FrameRecordError> {
    let mut ticks = Ticks::with_capacity(frame.trades.len(), frame.quotes.len());
    read_into(
        &mut ticks,
        frame.trades.iter().map(TradeFields::from),
        frame.quotes.iter().map(QuoteFields::from),
    )?;
    Ok(ticks.into_parts())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Invalid;

    #[test]
    fn a_frame_buffer_gives_back_only_a_large_buffer() {
        let mut b = FrameBuffer::default();
        b.body_mut(1_000);
        b.release_if_over(4_096);
        assert!(b.bytes.capacity() >= 1_000);
        b.body_mut(10_000);
        b.release_if_over(4_096);
        assert_eq!(b.bytes.capacity(), 0);
        assert_eq!(b.body_mut(8).len(), 8);
    }

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
            ..Default::default()
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
            ..Default::default()
        };
        assert_eq!(decode_ack(&encode_ack(&ack).unwrap()[4..]).unwrap(), ack);
    }

    #[test]
    fn garbage_and_bad_records_are_named() {
        assert!(decode_ingest(b"garbage!").is_err());
        let mut f = frame();
        f.trades[0].price = f64::NAN;
        assert_eq!(
            to_records(&f).unwrap_err().to_string(),
            "trades[0].price: must be a finite number"
        );
        let mut f = frame();
        f.quotes[0].symbol = String::new();
        assert!(to_records(&f)
            .unwrap_err()
            .to_string()
            .starts_with("quotes[0].symbol"));
        let (t, q) = to_records(&frame()).unwrap();
        assert_eq!((t.len(), q.len()), (1, 1));
        assert_eq!(AckLevel::from_code(2).unwrap(), AckLevel::Committed);
        assert!(AckLevel::from_code(9).is_err());
    }

    /// The body of `f`, in a buffer as the daemon reads it.
    fn buffered(f: &IngestFrame) -> FrameBuffer {
        let bytes = encode_ingest(f).unwrap();
        let mut buf = FrameBuffer::default();
        buf.body_mut(bytes.len() - 4).copy_from_slice(&bytes[4..]);
        buf
    }

    #[test]
    fn a_good_frame_reads_in_place_into_its_records() {
        let mut f = frame();
        f.api_key = "k".into();
        f.trades.push(FrameTrade {
            side: b'S',
            exchange_seq: 4,
            ..f.trades[0].clone()
        });
        let buf = buffered(&f);
        let view = buf.ingest().unwrap();
        assert_eq!((view.seq(), view.ack_code(), view.api_key()), (7, 2, "k"));
        assert_eq!(view.ack().unwrap(), AckLevel::Committed);
        assert_eq!(view.records(), 3);
        let mut ticks = Ticks::default();
        view.read_ticks(&mut ticks).unwrap();
        let (trades, quotes) = to_records(&f).unwrap();
        assert_eq!((ticks.trades(), ticks.quotes()), (&trades[..], &quotes[..]));
        assert_eq!(ticks.trades()[1].side, Side::Sell);
        assert_eq!(ticks.trades()[1].symbol.as_str(), "ESU4");
        assert_eq!(ticks.quotes()[0].ask_size, 12.0);
        assert_eq!(FrameTrade::from(&trades[1]), f.trades[1]);
        assert_eq!(FrameQuote::from(&quotes[0]), f.quotes[0]);
        // Reading again replaces, never appends.
        view.read_ticks(&mut ticks).unwrap();
        assert_eq!(ticks.len(), 3);
    }

    #[test]
    fn a_bad_field_names_its_list_index_and_field() {
        type Spoil = fn(&mut IngestFrame);
        let cases: [(Spoil, &str, usize, &str, Invalid); 8] = [
            (
                |f| f.trades[1].symbol = String::new(),
                "trades",
                1,
                "symbol",
                Invalid::Empty,
            ),
            (
                |f| f.trades[1].side = b'X',
                "trades",
                1,
                "side",
                Invalid::UnknownCode(b'X'),
            ),
            (
                |f| f.trades[1].price = f64::INFINITY,
                "trades",
                1,
                "price",
                Invalid::NotFinite,
            ),
            (
                |f| f.trades[1].volume = f64::NAN,
                "trades",
                1,
                "volume",
                Invalid::NotFinite,
            ),
            (
                |f| f.trades[1].volume = -2.0,
                "trades",
                1,
                "volume",
                Invalid::Negative,
            ),
            (
                |f| f.trades[1].volume = 2e18,
                "trades",
                1,
                "volume",
                Invalid::TooLarge,
            ),
            (
                |f| f.quotes[0].symbol = "A\0".into(),
                "quotes",
                0,
                "symbol",
                Invalid::ContainsNul,
            ),
            (
                |f| f.quotes[0].ask_size = f64::NAN,
                "quotes",
                0,
                "ask_size",
                Invalid::NotFinite,
            ),
        ];
        for (spoil, list, index, field, reason) in cases {
            let mut f = frame();
            f.trades.push(f.trades[0].clone());
            spoil(&mut f);
            let expected = FrameRecordError {
                list,
                index,
                error: FieldError::new(field, reason),
            };
            assert_eq!(to_records(&f).unwrap_err(), expected);
            let mut ticks = Ticks::default();
            let buf = buffered(&f);
            assert_eq!(buf.ingest().unwrap().read_ticks(&mut ticks), Err(expected));
            assert!(expected
                .to_string()
                .starts_with(&format!("{list}[{index}].{field}: ")));
        }
    }

    #[test]
    fn a_body_that_is_not_a_frame_is_refused() {
        let mut buf = FrameBuffer::default();
        buf.body_mut(8).copy_from_slice(b"garbage!");
        let e = buf.ingest().unwrap_err().to_string();
        assert!(e.contains("not a valid IngestFrame"), "{e}");
        assert!(FrameBuffer::default().ingest().is_err());
    }
}
