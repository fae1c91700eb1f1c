//! Property tests: the binary `COPY` row encoding, the shard router and the TCP frame
//! encoding, each over arbitrary values (NaN, infinities, -0.0, extreme times, any UTF-8).
//!
//! Floats are compared by their bits: a NaN must come back as the same NaN.

use std::collections::HashSet;

use bytes::BytesMut;
use christmas_core::binary_copy::{HEADER, TRAILER};
use christmas_core::frame::{
    decode_ingest, encode_ingest, to_records, FrameBuffer, FrameQuote, FrameTrade, IngestFrame,
};
use christmas_core::{Quote, Record, ShardRouter, Side, Symbol, Ticks, Trade};
use proptest::prelude::*;

/// Any `f64`: every bit pattern (NaN payloads included), plus the edges named.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
    ]
}

/// Any `i64` time, with the extremes and whole microseconds likely.
fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(0),
        any::<i64>(),
        (i64::MIN / 1_000..=i64::MAX / 1_000).prop_map(|us| us * 1_000),
    ]
}

/// The text of a valid symbol: 1 to 31 bytes of UTF-8 without NUL, ASCII or not.
fn symbol_text() -> impl Strategy<Value = String> {
    let ascii = proptest::collection::vec(1u8..=0x7f, 1..=Symbol::MAX_LEN)
        .prop_map(|b| String::from_utf8(b).expect("ASCII"));
    let unicode = proptest::collection::vec(any::<char>(), 1..=Symbol::MAX_LEN).prop_map(|cs| {
        let mut s = String::new();
        for c in cs.into_iter().map(|c| if c == '\0' { '\u{1}' } else { c }) {
            if s.len() + c.len_utf8() > Symbol::MAX_LEN {
                break;
            }
            s.push(c);
        }
        s
    });
    prop_oneof![ascii, unicode]
}

fn symbol() -> impl Strategy<Value = Symbol> {
    symbol_text().prop_map(|s| Symbol::new(&s).expect("a valid symbol"))
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell), Just(Side::None)]
}

prop_compose! {
    fn trade()(
        time_ns in any_time(),
        symbol in symbol(),
        price in any_f64(),
        volume in any_f64(),
        side in side(),
        exchange_seq in any::<i64>(),
    ) -> Trade {
        Trade { time_ns, symbol, price, volume, side, exchange_seq }
    }
}

prop_compose! {
    fn quote()(
        time_ns in any_time(),
        symbol in symbol(),
        bid in any_f64(),
        ask in any_f64(),
        bid_size in any_f64(),
        ask_size in any_f64(),
    ) -> Quote {
        Quote { time_ns, symbol, bid, ask, bid_size, ask_size }
    }
}

/// The time a row gives back: `timestamptz` keeps microseconds, so the time is floored to
/// the microsecond (and saturates at `i64::MIN`, the one floor below the `i64` range).
fn stored_time(ns: i64) -> i64 {
    let floored = i128::from(ns.div_euclid(1_000)) * 1_000;
    floored.max(i128::from(i64::MIN)) as i64
}

fn trade_bits(t: &Trade) -> (i64, Symbol, u64, u64, Side, i64) {
    (
        t.time_ns,
        t.symbol,
        t.price.to_bits(),
        t.volume.to_bits(),
        t.side,
        t.exchange_seq,
    )
}

fn quote_bits(q: &Quote) -> (i64, Symbol, [u64; 4]) {
    (
        q.time_ns,
        q.symbol,
        [q.bid, q.ask, q.bid_size, q.ask_size].map(f64::to_bits),
    )
}

/// Encodes one row the way the batcher does: spare capacity reserved first.
fn row<R: Record>(r: &R) -> BytesMut {
    let mut buf = BytesMut::with_capacity(R::MAX_ROW_BYTES);
    r.encode_row(&mut buf);
    buf
}

/// Splits a `COPY` body (header, rows, trailer) into its rows, by the field lengths.
fn split_body(body: &[u8]) -> Vec<&[u8]> {
    assert_eq!(&body[..HEADER.len()], HEADER);
    let mut at = HEADER.len();
    let mut rows = Vec::new();
    loop {
        let fields = i16::from_be_bytes([body[at], body[at + 1]]);
        if fields == -1 {
            assert_eq!(&body[at..], TRAILER, "bytes after the trailer");
            return rows;
        }
        let start = at;
        at += 2;
        for _ in 0..fields {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4 + usize::try_from(len).expect("no NULL fields");
        }
        rows.push(&body[start..at]);
    }
}

proptest! {
    #[test]
    fn trade_rows_round_trip(t in trade()) {
        let buf = row(&t);
        prop_assert!(buf.len() <= Trade::MAX_ROW_BYTES);
        let back = Trade::decode_row(&buf).expect("its own row decodes");
        let expected = Trade { time_ns: stored_time(t.time_ns), ..t };
        prop_assert_eq!(trade_bits(&back), trade_bits(&expected));
        if t.time_ns % 1_000 == 0 {
            prop_assert_eq!(back.time_ns, t.time_ns);
        }
        // Every truncation and any trailing byte is an error, never a panic or a record.
        for cut in 0..buf.len() {
            prop_assert!(Trade::decode_row(&buf[..cut]).is_err(), "prefix of {} bytes", cut);
        }
        let mut longer = buf.to_vec();
        longer.push(0);
        prop_assert!(Trade::decode_row(&longer).is_err());
    }

    #[test]
    fn quote_rows_round_trip(q in quote()) {
        let buf = row(&q);
        prop_assert!(buf.len() <= Quote::MAX_ROW_BYTES);
        let back = Quote::decode_row(&buf).expect("its own row decodes");
        let expected = Quote { time_ns: stored_time(q.time_ns), ..q };
        prop_assert_eq!(quote_bits(&back), quote_bits(&expected));
        for cut in 0..buf.len() {
            prop_assert!(Quote::decode_row(&buf[..cut]).is_err(), "prefix of {} bytes", cut);
        }
    }

    /// A batch body as the writer sends it (`HEADER`, the rows, `TRAILER`) splits back into
    /// the same records in the same order: rows are self-delimiting.
    #[test]
    fn copy_bodies_split_into_their_rows(trades in proptest::collection::vec(trade(), 0..20)) {
        let mut body = BytesMut::from(&HEADER[..]);
        for t in &trades {
            body.reserve(Trade::MAX_ROW_BYTES);
            t.encode_row(&mut body);
        }
        body.extend_from_slice(TRAILER);
        let rows = split_body(&body);
        prop_assert_eq!(rows.len(), trades.len());
        for (r, t) in rows.iter().zip(&trades) {
            let back = Trade::decode_row(r).expect("a row of the body decodes");
            let expected = Trade { time_ns: stored_time(t.time_ns), ..*t };
            prop_assert_eq!(trade_bits(&back), trade_bits(&expected));
        }
    }

    #[test]
    fn router_is_deterministic_and_in_range(text in symbol_text(), shards in 0usize..=64) {
        let router = ShardRouter::new(shards);
        prop_assert_eq!(router.shards(), shards.max(1));
        let a = Symbol::new(&text).unwrap();
        let b: Symbol = text.parse().unwrap();
        let shard = router.shard_for(&a);
        prop_assert!(shard < router.shards());
        prop_assert_eq!(shard, router.shard_for(&b));
        prop_assert_eq!(shard, ShardRouter::new(shards).shard_for(&a));
    }

    #[test]
    fn frames_round_trip(frame in ingest_frame()) {
        let bytes = encode_ingest(&frame).expect("a frame encodes");
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, bytes.len() - 4);
        let back = decode_ingest(&bytes[4..]).expect("its own frame decodes");
        prop_assert_eq!(frame_bits(&back), frame_bits(&frame));
        // The decoded frame encodes to the same bytes.
        prop_assert_eq!(encode_ingest(&back).unwrap(), bytes);
    }

    /// Reading a frame in place gives what decoding it and converting its records gives:
    /// the same records, or the same bad record named.
    #[test]
    fn frames_read_in_place_as_decoded(frame in ingest_frame()) {
        let bytes = encode_ingest(&frame).expect("a frame encodes");
        let mut buf = FrameBuffer::default();
        buf.body_mut(bytes.len() - 4).copy_from_slice(&bytes[4..]);
        let view = buf.ingest().expect("its own frame reads in place");
        prop_assert_eq!((view.seq(), view.ack_code(), view.api_key()),
                        (frame.seq, frame.ack, frame.api_key.as_str()));
        let mut ticks = Ticks::default();
        match (view.read_ticks(&mut ticks), to_records(&frame)) {
            (Ok(()), Ok((t, q))) => {
                prop_assert_eq!(ticks.trades().iter().map(trade_bits).collect::<Vec<_>>(),
                                t.iter().map(trade_bits).collect::<Vec<_>>());
                prop_assert_eq!(ticks.quotes().iter().map(quote_bits).collect::<Vec<_>>(),
                                q.iter().map(quote_bits).collect::<Vec<_>>());
            }
            (Err(in_place), Err(decoded)) => prop_assert_eq!(in_place, decoded),
            (a, b) => prop_assert!(false, "in place {:?}, decoded {:?}", a, b.map(|_| ())),
        }
    }

    /// A frame of valid records becomes exactly those records.
    #[test]
    fn valid_frames_become_their_records(
        trades in proptest::collection::vec(trade(), 0..8),
        quotes in proptest::collection::vec(quote(), 0..8),
    ) {
        let finite = |v: f64| if v.is_finite() { v } else { 1.0 };
        let trades: Vec<Trade> = trades
            .into_iter()
            .map(|t| Trade {
                price: finite(t.price),
                // Valid volumes run from 0 to `Trade::MAX_VOLUME`.
                volume: finite(t.volume).abs().min(Trade::MAX_VOLUME),
                ..t
            })
            .collect();
        let quotes: Vec<Quote> = quotes
            .into_iter()
            .map(|q| Quote {
                bid: finite(q.bid),
                ask: finite(q.ask),
                bid_size: finite(q.bid_size),
                ask_size: finite(q.ask_size),
                ..q
            })
            .collect();
        let frame = IngestFrame {
            // The framing a feed handler uses: `From<&Trade>`, `From<&Quote>`.
            trades: trades.iter().map(FrameTrade::from).collect(),
            quotes: quotes.iter().map(FrameQuote::from).collect(),
            ..IngestFrame::default()
        };
        let (t, q) = to_records(&frame).expect("valid records are accepted");
        prop_assert_eq!(t.iter().map(trade_bits).collect::<Vec<_>>(),
                        trades.iter().map(trade_bits).collect::<Vec<_>>());
        prop_assert_eq!(q.iter().map(quote_bits).collect::<Vec<_>>(),
                        quotes.iter().map(quote_bits).collect::<Vec<_>>());
    }
}

proptest! {
    // Each case routes over a thousand symbols: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Over 1,000 or more distinct random symbols, every shard of up to 8 gets at least a
    /// quarter of its fair share (about nine standard deviations below it).
    #[test]
    fn router_spreads_random_symbols(
        texts in proptest::collection::hash_set(symbol_text(), 1_000..1_200),
        shards in 1usize..=8,
    ) {
        let router = ShardRouter::new(shards);
        let mut counts = vec![0usize; shards];
        for t in &texts {
            counts[router.shard_for(&Symbol::new(t).unwrap())] += 1;
        }
        let fair = texts.len() / shards;
        prop_assert!(counts.iter().all(|&c| c > 0 && c >= fair / 4), "{:?}", counts);
    }
}

fn frame_trade() -> impl Strategy<Value = FrameTrade> {
    (
        any::<String>(),
        any::<i64>(),
        any_f64(),
        any_f64(),
        any::<u8>(),
        any::<i64>(),
    )
        .prop_map(
            |(symbol, time_ns, price, volume, side, exchange_seq)| FrameTrade {
                symbol,
                time_ns,
                price,
                volume,
                side,
                exchange_seq,
            },
        )
}

fn frame_quote() -> impl Strategy<Value = FrameQuote> {
    (
        any::<String>(),
        any::<i64>(),
        any_f64(),
        any_f64(),
        any_f64(),
        any_f64(),
    )
        .prop_map(
            |(symbol, time_ns, bid, ask, bid_size, ask_size)| FrameQuote {
                symbol,
                time_ns,
                bid,
                ask,
                bid_size,
                ask_size,
            },
        )
}

/// Any frame, valid records or not (the encoding does not check them).
fn ingest_frame() -> impl Strategy<Value = IngestFrame> {
    (
        any::<u64>(),
        any::<u8>(),
        any::<String>(),
        proptest::collection::vec(frame_trade(), 0..8),
        proptest::collection::vec(frame_quote(), 0..8),
    )
        .prop_map(|(seq, ack, api_key, trades, quotes)| IngestFrame {
            seq,
            ack,
            api_key,
            trades,
            quotes,
            ..Default::default()
        })
}

type FrameBits = (
    u64,
    u8,
    String,
    Vec<(String, i64, u64, u64, u8, i64)>,
    Vec<(String, i64, [u64; 4])>,
);

fn frame_bits(f: &IngestFrame) -> FrameBits {
    (
        f.seq,
        f.ack,
        f.api_key.clone(),
        f.trades
            .iter()
            .map(|t| {
                (
                    t.symbol.clone(),
                    t.time_ns,
                    t.price.to_bits(),
                    t.volume.to_bits(),
                    t.side,
                    t.exchange_seq,
                )
            })
            .collect(),
        f.quotes
            .iter()
            .map(|q| {
                (
                    q.symbol.clone(),
                    q.time_ns,
                    [q.bid, q.ask, q.bid_size, q.ask_size].map(f64::to_bits),
                )
            })
            .collect(),
    )
}

#[test]
fn stored_time_matches_the_documented_edges() {
    assert_eq!(stored_time(1_999), 1_000);
    assert_eq!(stored_time(-1), -1_000);
    assert_eq!(stored_time(i64::MIN), i64::MIN);
    assert_eq!(stored_time(i64::MAX), i64::MAX / 1_000 * 1_000);
    // Distinct microseconds stay distinct.
    let times: HashSet<i64> = (0..1_000).map(|us| stored_time(us * 1_000 + 7)).collect();
    assert_eq!(times.len(), 1_000);
}
