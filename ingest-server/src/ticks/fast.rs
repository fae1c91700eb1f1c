//! The fast path of `ticks::parse`: a single pass over a body of flat tick objects, with
//! no deserializer, no per-key visitor and no UTF-8 check of the whole body.
//!
//! It is conservative by construction. It accepts only the plain form feed handlers send
//! (keys and strings without escapes, scalar values, JSON whitespace), and returns `None`
//! on anything else: an escape, a nested value, an unknown or repeated key, a bad value, a
//! record its kind refuses. The caller then parses the whole body again with the
//! reference parser, which accepts what JSON allows and names the field of the first bad
//! record. So a body either parses here to exactly the ticks the reference gives (the
//! property test and the `tick_parse` fuzz target compare the two), or the reference
//! decides.
//!
//! On the bench's 5,000-tick bodies it is several times faster than the serde walk
//! (`cargo bench -p christmas-ingest --bench parse`).

use christmas_core::{Quote, Side, Symbol, Ticks, Trade};

use super::keys::{bits, Field, QUOTE_ONLY, TRADE_ONLY};
use crate::timefmt;

/// The ticks of a JSON array or NDJSON body, or `None` when the reference parser must
/// decide (an error, or a form this path does not read).
pub fn parse(body: &[u8]) -> Option<Ticks> {
    let mut out = Ticks::default();
    parse_into(body, &mut out)?;
    Some(out)
}

/// [`parse`] into `out` (emptied first), so that a caller reading request after request
/// reuses its vectors; on `None`, `out` holds whatever was read before the fast path gave up.
pub fn parse_into(body: &[u8], out: &mut Ticks) -> Option<()> {
    out.clear();
    let array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let mut r = Reader {
        b: body,
        p: 0,
        newline_is_space: array,
    };
    if array {
        r.array(out)
    } else {
        r.ndjson(out)
    }
}

/// A cursor over the body.
struct Reader<'a> {
    b: &'a [u8],
    p: usize,
    /// In an array a line feed is whitespace; in NDJSON it ends the record.
    newline_is_space: bool,
}

/// Which of a record's keys were seen, one bit each ([`Field::bit`]).
const KIND: u16 = Field::Kind.bit();
const SYMBOL: u16 = Field::Symbol.bit();
const TIME: u16 = Field::Time.bit();
const TIME_NS: u16 = Field::TimeNs.bit();
const PRICE: u16 = Field::Price.bit();
const VOLUME: u16 = Field::Volume.bit();
const SIDE: u16 = Field::Side.bit();
const EXCHANGE_SEQ: u16 = Field::ExchangeSeq.bit();
const BID: u16 = Field::Bid.bit();

const TRADE_KEYS: u16 = bits(TRADE_ONLY);
const QUOTE_KEYS: u16 = bits(QUOTE_ONLY);

/// A record's values as read so far.
#[derive(Default)]
struct Fields<'a> {
    seen: u16,
    trade: bool,
    symbol: &'a str,
    time_ns: i64,
    side: Option<Side>,
    exchange_seq: i64,
    /// price, volume, bid, ask, bid_size, ask_size.
    numbers: [f64; 6],
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.p).copied()
    }

    /// Skips JSON whitespace; `newline` says whether a line feed counts.
    fn skip_ws(&mut self, newline: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => self.p += 1,
                b'\n' if newline => self.p += 1,
                _ => return,
            }
        }
    }

    /// Whitespace inside a record.
    fn space(&mut self) {
        self.skip_ws(self.newline_is_space)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.p += 1)
    }

    /// One object per line; blank lines are skipped.
    fn ndjson(&mut self, out: &mut Ticks) -> Option<()> {
        loop {
            self.skip_ws(true);
            if self.p == self.b.len() {
                return Some(());
            }
            self.object(out)?;
            self.skip_ws(false);
            match self.peek() {
                None => return Some(()),
                Some(b'\n') => self.p += 1,
                Some(_) => return None,
            }
        }
    }

    fn array(&mut self, out: &mut Ticks) -> Option<()> {
        self.skip_ws(true);
        self.eat(b'[')?;
        self.skip_ws(true);
        if self.eat(b']').is_none() {
            loop {
                self.object(out)?;
                self.skip_ws(true);
                match self.peek()? {
                    b',' => {
                        self.p += 1;
                        self.skip_ws(true);
                    }
                    b']' => {
                        self.p += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.skip_ws(true);
        (self.p == self.b.len()).then_some(())
    }

    /// A string without escapes or control characters, as UTF-8; the cursor is on its
    /// opening quote.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.p;
        let len = self.b[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.p = start + len + 1;
        std::str::from_utf8(&self.b[start..start + len]).ok()
    }

    /// The bytes of a JSON number (RFC 8259's grammar, so ASCII) and whether it is an
    /// integer.
    fn number(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.p;
        self.eat(b'-');
        let digits = |r: &mut Self| {
            let from = r.p;
            while matches!(r.peek(), Some(b'0'..=b'9')) {
                r.p += 1;
            }
            r.p - from
        };
        let int_start = self.p;
        let n = digits(self);
        if n == 0 || (n > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut integer = true;
        if self.eat(b'.').is_some() {
            integer = false;
            if digits(self) == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.p += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.p += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some((&self.b[start..self.p], integer))
    }

    /// A JSON integer that fits `i64` (`-0` is left to the reference).
    fn int(&mut self) -> Option<i64> {
        let (text, integer) = self.number()?;
        if !integer || text == b"-0" {
            return None;
        }
        match integer_value(text)? {
            Integer::Signed(n) => Some(n),
            Integer::Unsigned(_) => None,
        }
    }

    /// Any JSON number as `f64`, as the reference reads it: an integer through `i64`/`u64`,
    /// a fraction or exponent correctly rounded, finite only.
    fn float(&mut self) -> Option<f64> {
        let (text, integer) = self.number()?;
        if integer {
            return match integer_value(text)? {
                Integer::Signed(n) => (text != b"-0").then_some(n as f64),
                Integer::Unsigned(n) => Some(n as f64),
            };
        }
        // ASCII by construction, so this check cannot fail; `f64`'s parser takes a `str`.
        let text = std::str::from_utf8(text).ok()?;
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    fn null(&mut self) -> Option<()> {
        self.b[self.p..].starts_with(b"null").then(|| self.p += 4)
    }

    /// One tick object, checked as its kind requires, into `out`.
    fn object(&mut self, out: &mut Ticks) -> Option<()> {
        self.eat(b'{')?;
        let mut f = Fields::default();
        self.space();
        if self.peek()? != b'}' {
            loop {
                self.field(&mut f)?;
                self.space();
                match self.peek()? {
                    b',' => {
                        self.p += 1;
                        self.space();
                    }
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        self.p += 1;
        f.finish(out)
    }

    /// `"key": value`, the cursor on the key's quote.
    fn field(&mut self, f: &mut Fields<'a>) -> Option<()> {
        let bit = Field::from_name(self.string()?.as_bytes())?.bit();
        if f.seen & bit != 0 {
            return None;
        }
        f.seen |= bit;
        self.space();
        self.eat(b':')?;
        self.space();
        let null = self.peek() == Some(b'n');
        match bit {
            KIND => {
                f.trade = match self.string()? {
                    "trade" => true,
                    "quote" => false,
                    _ => return None,
                }
            }
            SYMBOL => f.symbol = self.string()?,
            TIME | TIME_NS if f.seen & (TIME | TIME_NS) == TIME | TIME_NS => return None,
            TIME => f.time_ns = timefmt::parse_ns(self.string()?).ok()?,
            TIME_NS => f.time_ns = self.int()?,
            SIDE if null => self.null()?,
            SIDE => f.side = Some(Side::from_text(self.string()?).ok()?),
            EXCHANGE_SEQ if null => self.null()?,
            EXCHANGE_SEQ => f.exchange_seq = self.int()?,
            _ => {
                let slot = (bit.trailing_zeros() - PRICE.trailing_zeros()) as usize;
                let slot = if bit >= BID { slot - 2 } else { slot };
                f.numbers[slot] = self.float()?;
            }
        }
        Some(())
    }
}

/// An integer's value: as `i64` when it fits, else as `u64` (serde_json's order).
enum Integer {
    Signed(i64),
    Unsigned(u64),
}

/// The value of an integer's text (`-`? then digits, as [`Reader::number`] checked), or
/// `None` past `i64::MIN` or `u64::MAX`. Read from the bytes: no UTF-8 check, no `str`
/// parser, for the two or three integers of every tick.
fn integer_value(text: &[u8]) -> Option<Integer> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let mut v: u64 = 0;
    for &d in digits {
        debug_assert!(d.is_ascii_digit());
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        return 0i64.checked_sub_unsigned(v).map(Integer::Signed);
    }
    Some(match i64::try_from(v) {
        Ok(n) => Integer::Signed(n),
        Err(_) => Integer::Unsigned(v),
    })
}

impl Fields<'_> {
    /// The record, if the reference would accept it as it stands.
    fn finish(self, out: &mut Ticks) -> Option<()> {
        let (own, foreign) = if self.trade {
            (PRICE | VOLUME, QUOTE_KEYS)
        } else {
            (QUOTE_KEYS, TRADE_KEYS)
        };
        let required = KIND | SYMBOL | own;
        if self.seen & required != required
            || self.seen & (TIME | TIME_NS) == 0
            || self.seen & foreign != 0
        {
            return None;
        }
        let symbol = Symbol::parse(self.symbol).ok()?;
        let n = self.numbers;
        if self.trade {
            out.push_trade(Trade {
                time_ns: self.time_ns,
                symbol,
                price: n[0],
                volume: n[1],
                side: self.side.unwrap_or(Side::None),
                exchange_seq: self.exchange_seq,
            })
            .ok()
        } else {
            out.push_quote(Quote {
                time_ns: self.time_ns,
                symbol,
                bid: n[2],
                ask: n[3],
                bid_size: n[4],
                ask_size: n[5],
            })
            .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::parse;
    use crate::ticks::parse_reference;

    /// A body as feed handlers send it: every record plain, so the fast path must take it.
    const PLAIN: &str = concat!(
        r#"{"kind":"trade","symbol":"ESU4","time_ns":1719878400000123000,"price":5512.25,"volume":3,"side":"B","exchange_seq":17}"#,
        "\n",
        r#"{"kind":"quote","symbol":"6EU4","time":"2024-07-02T00:00:00.5+02:00","bid":1.0712,"ask":1.0713,"bid_size":1e6,"ask_size":2000000}"#,
        "\r\n\n",
        r#" { "kind" : "trade" , "symbol":"NQU4","time_ns":-5,"price":-0.5,"volume":0,"side":null,"exchange_seq":null } "#,
        "\n"
    );

    #[test]
    fn plain_bodies_take_the_fast_path_and_read_as_the_reference_does() {
        let fast = parse(PLAIN.as_bytes()).expect("a plain body is the fast path's");
        assert_eq!(Ok(fast.clone()), parse_reference(PLAIN.as_bytes()));
        assert_eq!((fast.trades().len(), fast.quotes().len()), (2, 1));
        assert_eq!(fast.trades()[0].price, 5512.25);
        assert_eq!(fast.quotes()[0].bid_size, 1e6);
        let lines: Vec<&str> = PLAIN.lines().filter(|l| !l.trim().is_empty()).collect();
        let array = format!("[\n{}\n]", lines.join(",\n"));
        assert_eq!(parse(array.as_bytes()), Some(fast));
    }

    #[test]
    fn what_the_fast_path_leaves_is_left_to_the_reference() {
        for body in [
            // An escape, a nested value, a repeated key, an unknown key.
            r#"{"kind":"trade","symbol":"A\u0042","time_ns":1,"price":1,"volume":1}"#,
            r#"{"kind":"trade","symbol":"A","time_ns":1,"price":[1],"volume":1}"#,
            r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"price":2,"volume":1}"#,
            r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"prize":1}"#,
            // A record split over lines in NDJSON, two on one line, a leading zero.
            "{\"kind\":\n\"trade\",\"symbol\":\"A\",\"time_ns\":1,\"price\":1,\"volume\":1}",
            r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1}{}"#,
            r#"{"kind":"trade","symbol":"A","time_ns":01,"price":1,"volume":1}"#,
            // A trade with a quote's field, both times, a refused volume.
            r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"bid":1}"#,
            r#"{"kind":"trade","symbol":"A","time_ns":1,"time":"2024-07-02T00:00:00Z","price":1,"volume":1}"#,
            r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":-1}"#,
            "[{\"kind\":\"trade\",\"symbol\":\"A\",\"time_ns\":1,\"price\":1,\"volume\":1},]",
        ] {
            assert_eq!(parse(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn integers_read_from_bytes_as_the_str_parsers_read_them() {
        use super::{integer_value, Integer};
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let want = match (text.parse::<i64>(), text.parse::<u64>()) {
                (Ok(n), _) => Some(Integer::Signed(n)),
                (_, Ok(n)) => Some(Integer::Unsigned(n)),
                _ => None,
            };
            let got = integer_value(text.as_bytes());
            let same = match (&got, &want) {
                (Some(Integer::Signed(a)), Some(Integer::Signed(b))) => a == b,
                (Some(Integer::Unsigned(a)), Some(Integer::Unsigned(b))) => a == b,
                (None, None) => true,
                _ => false,
            };
            assert!(same, "{text}");
        }
    }

    #[test]
    fn a_reused_ticks_holds_only_the_last_body() {
        let mut out = christmas_core::Ticks::default();
        super::parse_into(PLAIN.as_bytes(), &mut out).unwrap();
        super::parse_into(PLAIN.as_bytes(), &mut out).unwrap();
        assert_eq!(Some(out), parse(PLAIN.as_bytes()));
    }

    /// Pieces of records: keys (some wrong), values (some wrong), whitespace.
    fn piece() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "kind",
            "symbol",
            "time",
            "time_ns",
            "price",
            "volume",
            "side",
            "exchange_seq",
            "bid",
            "ask",
            "bid_size",
            "ask_size",
            "prize",
            "",
        ]);
        let value = prop::sample::select(vec![
            "\"trade\"",
            "\"quote\"",
            "\"bar\"",
            "\"ESU4\"",
            "\"\"",
            "\"B\"",
            "\"sell\"",
            "\"x\"",
            "\"2024-07-02T00:00:00Z\"",
            "\"2024-02-31T00:00:00Z\"",
            "\"A\\u0042\"",
            "null",
            "true",
            "0",
            "-0",
            "1",
            "-1",
            "01",
            "1.",
            "1.5",
            "-2.25e3",
            "1e400",
            "1e-400",
            "0.1000000000000000055511151231257827",
            "18446744073709551616",
            "9223372036854775808",
            "-9223372036854775809",
            "[1]",
            "{}",
        ]);
        let ws = prop::sample::select(vec!["", " ", "\t", "\r", "\n"]);
        (key, ws.clone(), value, ws).prop_map(|(k, w1, v, w2)| format!("\"{k}\"{w1}:{v}{w2}"))
    }

    fn record() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..9).prop_map(|p| format!("{{{}}}", p.join(",")))
    }

    /// A number as clients write it: an integer, a decimal, an exponent, many digits.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..=1_000_000_000_000_000_000).prop_map(|n| n.to_string()),
            (0.0f64..1e7).prop_map(|v| format!("{v}")),
            (0.0f64..1e7).prop_map(|v| format!("{v:e}")),
            (0u32..100_000, 0u32..100).prop_map(|(a, b)| format!("{a}.{b:02}")),
        ]
    }

    /// A record the reference accepts, in some key order, with some whitespace.
    fn valid_record() -> impl Strategy<Value = String> {
        let symbol = prop::sample::select(vec!["ESU4", "6EU4", "BTC-USDT", "ÖL€", "a b"]);
        let time = prop_oneof![
            (0i64..i64::MAX).prop_map(|n| format!("\"time_ns\":{n}")),
            Just("\"time\":\"2024-07-02T00:00:00.000123Z\"".to_string()),
            Just("\"time\":\"2024-02-29T23:00:00-01:00\"".to_string()),
        ];
        let side = prop::sample::select(vec![
            "",
            ",\"side\":\"S\"",
            ",\"side\":null",
            ",\"side\":\"buy\"",
        ]);
        let trade = (symbol.clone(), time.clone(), number(), number(), side).prop_map(
            |(s, t, p, v, side)| {
                format!("{{\"kind\":\"trade\",\"symbol\":\"{s}\",{t},\"price\":{p},\"volume\":{v}{side},\"exchange_seq\":7}}")
            },
        );
        let quote = (symbol, time, number(), number(), number(), number()).prop_map(
            |(s, t, b, a, bs, as_)| {
                format!("{{ \"symbol\" : \"{s}\", {t}, \"kind\":\"quote\",\"bid\":{b},\"ask\":{a},\"bid_size\":{bs},\"ask_size\":{as_} }}")
            },
        );
        prop_oneof![trade, quote]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Valid bodies take the fast path and read as the reference reads them; the same
        /// bodies with one byte changed either still agree or are left to the reference.
        #[test]
        fn valid_bodies_read_the_same_either_way(
            records in prop::collection::vec(valid_record(), 1..8),
            array in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            junk in any::<u8>(),
        ) {
            let mut body = if array {
                format!("[{}]", records.join(",\n"))
            } else {
                records.join("\n")
            }
            .into_bytes();
            let fast = parse(&body);
            prop_assert!(fast.is_some(), "{}", String::from_utf8_lossy(&body));
            prop_assert_eq!(Ok(fast.unwrap()), parse_reference(&body));
            let at = cut.index(body.len());
            body[at] = junk;
            if let Some(fast) = parse(&body) {
                prop_assert_eq!(Ok(fast), parse_reference(&body));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        /// Whatever the fast path accepts, the reference accepts as the same ticks.
        #[test]
        fn the_fast_path_never_disagrees(
            records in prop::collection::vec(record(), 0..6),
            array in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            junk in any::<u8>(),
            mutate in any::<bool>(),
        ) {
            let mut body = if array {
                format!("[{}]", records.join(","))
            } else {
                records.join("\n")
            }
            .into_bytes();
            if mutate && !body.is_empty() {
                let at = cut.index(body.len());
                body[at] = junk;
            }
            if let Some(fast) = parse(&body) {
                prop_assert_eq!(Ok(fast), parse_reference(&body));
            }
        }
    }
}
