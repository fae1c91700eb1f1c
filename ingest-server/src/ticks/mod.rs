//! The HTTP tick format: a JSON array, or NDJSON (one object per line), of
//!
//! ```json
//! {"kind":"trade","symbol":"ESU4","time":"2024-07-02T00:00:00.000123Z","price":5512.25,
//!  "volume":3,"side":"B","exchange_seq":17}
//! {"kind":"quote","symbol":"ESU4","time_ns":1719878400000123000,"bid":5512.0,"ask":5512.25,
//!  "bid_size":10,"ask_size":12}
//! ```
//!
//! `time` (RFC 3339, a real date and offset: [`timefmt`]) or `time_ns` (integer
//! nanoseconds) is required; `side` is read by [`Side::from_text`] (`B`/`S`/`N`,
//! `buy`/`sell`/`none`, `A`/`ask`, any case; default `N`); `exchange_seq` defaults to 0.
//! Unknown and repeated keys are refused.
//!
//! Most bodies are read by [`fast`]: one pass over plain flat objects. Whatever it does not
//! accept (an error, escapes, nested values) is read again by the reference parser below,
//! which decides. The reference reads the body in one pass, straight into a core
//! [`Ticks`]: each object's keys and
//! values are checked as they come ([`crate::json_fields`]), nothing is kept per tick but the
//! record itself, and each record is validated by its kind as it goes in, so the whole
//! request is checked before anything is accepted. The first bad record is reported by
//! index (and, in NDJSON, line) and field; a body of something else than objects (an 8 MiB
//! array of zeros) is refused at its first element.

use christmas_core::{FieldError, Quote, Side, Symbol, Ticks, Trade};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use crate::json_fields::{Keys, Scalar};
use crate::timefmt;
use keys::{Field, FIELDS, QUOTE_ONLY, TRADE_ONLY};

pub mod fast;
mod keys;

/// Why a request's ticks were refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TickError {
    /// Position of the bad record in the request (0-based; NDJSON: the line's record).
    pub index: usize,
    /// NDJSON: the 1-based line of the bad record, blank lines counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The offending field (`body` when the record is not a JSON object at all).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn err(index: usize, field: &str, reason: impl Into<String>) -> TickError {
    TickError {
        index,
        line: None,
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Parses a JSON array or NDJSON body into its ticks: by [`fast`] when it can, else by
/// [`parse_reference`], which names the first bad record.
pub fn parse(body: &[u8]) -> Result<Ticks, TickError> {
    let mut out = Ticks::default();
    parse_into(body, &mut out)?;
    Ok(out)
}

/// [`parse`] into `out`, emptied first: a reader of request after request reuses its
/// vectors. On an error `out` holds part of the body's ticks; empty it before pushing.
pub fn parse_into(body: &[u8], out: &mut Ticks) -> Result<(), TickError> {
    if fast::parse_into(body, out).is_some() {
        return Ok(());
    }
    out.clear();
    parse_reference_into(body, out)
}

/// The reference parser: every form JSON allows, strictly, through serde; the first bad
/// record is named. [`parse`] gives the same answer faster; tests and the fuzz target
/// compare the two.
pub fn parse_reference(body: &[u8]) -> Result<Ticks, TickError> {
    let mut out = Ticks::default();
    parse_reference_into(body, &mut out)?;
    Ok(out)
}

fn parse_reference_into(body: &[u8], out: &mut Ticks) -> Result<(), TickError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => parse_array(body, out),
        _ => parse_ndjson(body, out),
    }
}

fn parse_array(body: &[u8], out: &mut Ticks) -> Result<(), TickError> {
    let (mut refused, mut index) = (None, 0);
    let mut de = serde_json::Deserializer::from_slice(body);
    let array = Array {
        out,
        refused: &mut refused,
        index: &mut index,
    };
    match array.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(()),
        Err(e) => Err(refused
            .unwrap_or_else(|| err(index, "body", format!("not a JSON array of ticks: {e}")))),
    }
}

/// One object per line; blank lines are skipped but counted.
fn parse_ndjson(body: &[u8], out: &mut Ticks) -> Result<(), TickError> {
    let numbered = body.split(|&b| b == b'\n').enumerate();
    let records = numbered.filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    for (index, (n, line)) in records.enumerate() {
        let mut refused = None;
        let mut de = serde_json::Deserializer::from_slice(line);
        let record = Record {
            index,
            out: &mut *out,
            refused: &mut refused,
        };
        if let Err(e) = record.deserialize(&mut de).and_then(|()| de.end()) {
            let mut e = refused
                .unwrap_or_else(|| err(index, "body", format!("line is not a JSON object: {e}")));
            e.line = Some(n + 1);
            return Err(e);
        }
    }
    Ok(())
}

/// A JSON array of tick objects; `index` follows the element being read.
struct Array<'a> {
    out: &'a mut Ticks,
    refused: &'a mut Option<TickError>,
    index: &'a mut usize,
}

impl<'de> DeserializeSeed<'de> for Array<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Array<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of ticks")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let record = Record {
                index: *self.index,
                out: &mut *self.out,
                refused: &mut *self.refused,
            };
            match seq.next_element_seed(record)? {
                Some(()) => *self.index += 1,
                None => return Ok(()),
            }
        }
    }
}

/// One tick object, read into `out`. A refused record leaves its error in `refused` and
/// stops the parse there (the deserializer's own error then only says "refused").
struct Record<'a> {
    index: usize,
    out: &'a mut Ticks,
    refused: &'a mut Option<TickError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Trade,
    Quote,
    /// A string that names no kind: refused once the symbol and time were checked, as
    /// before the streaming parser.
    Other,
}

/// A record's fields as read so far.
#[derive(Default)]
struct Draft {
    kind: Option<Kind>,
    symbol: Option<Symbol>,
    time_ns: Option<i64>,
    side: Side,
    exchange_seq: i64,
    /// price, volume, bid, ask, bid_size, ask_size.
    numbers: [Option<f64>; 6],
}

/// A field refused: its name and why.
type Refusal = (&'static str, String);

fn no(field: &'static str, reason: impl Into<String>) -> Refusal {
    (field, reason.into())
}

fn invalid(e: FieldError) -> Refusal {
    (e.field, e.reason.to_string())
}

impl Draft {
    /// Reads `field`'s value, checking its type (and, for text fields, its content).
    fn read(&mut self, field: Field, v: Scalar<'_>) -> Result<(), Refusal> {
        let text = |name| v.as_str().ok_or_else(|| no(name, "must be a string"));
        match field {
            Field::Kind => {
                self.kind = Some(match v.as_str() {
                    Some("trade") => Kind::Trade,
                    Some("quote") => Kind::Quote,
                    Some(_) => Kind::Other,
                    None => return Err(no("kind", "required: \"trade\" or \"quote\"")),
                })
            }
            Field::Symbol => self.symbol = Some(Symbol::parse(text("symbol")?).map_err(invalid)?),
            Field::Time | Field::TimeNs if self.time_ns.is_some() => {
                return Err(no("time", "give time or time_ns, not both"))
            }
            Field::Time => {
                let s = v
                    .as_str()
                    .ok_or_else(|| no("time", "must be an RFC 3339 string"))?;
                self.time_ns = Some(timefmt::parse_ns(s).map_err(|e| no("time", e))?);
            }
            Field::TimeNs => {
                let ns = v
                    .as_i64()
                    .ok_or_else(|| no("time_ns", "must be an integer of nanoseconds"))?;
                self.time_ns = Some(ns);
            }
            Field::Side if v.is_null() => self.side = Side::None,
            Field::Side => self.side = Side::from_text(text("side")?).map_err(invalid)?,
            Field::ExchangeSeq if v.is_null() => self.exchange_seq = 0,
            Field::ExchangeSeq => {
                self.exchange_seq = v
                    .as_i64()
                    .ok_or_else(|| no("exchange_seq", "must be an integer"))?
            }
            number => {
                let (slot, name) = Self::number_slot(number);
                let n = v.as_f64().ok_or_else(|| no(name, "must be a number"))?;
                self.numbers[slot] = Some(n);
            }
        }
        Ok(())
    }

    fn number_slot(field: Field) -> (usize, &'static str) {
        match field {
            Field::Price => (0, "price"),
            Field::Volume => (1, "volume"),
            Field::Bid => (2, "bid"),
            Field::Ask => (3, "ask"),
            Field::BidSize => (4, "bid_size"),
            _ => (5, "ask_size"),
        }
    }

    /// A number field that must be present; whether its value is allowed is the kind's
    /// `validate`.
    fn number(&self, field: Field) -> Result<f64, Refusal> {
        let (slot, name) = Self::number_slot(field);
        self.numbers[slot].ok_or_else(|| no(name, "required number"))
    }

    /// The whole record, once its object has ended, into `out`.
    fn finish(self, keys: &Keys<Field>, out: &mut Ticks) -> Result<(), Refusal> {
        let kind = self
            .kind
            .ok_or_else(|| no("kind", "required: \"trade\" or \"quote\""))?;
        let symbol = self.symbol.ok_or_else(|| no("symbol", "required string"))?;
        let time_ns = self
            .time_ns
            .ok_or_else(|| no("time", "required (or time_ns)"))?;
        // Unknown fields are refused: a typo must not silently drop data.
        let foreign = match kind {
            Kind::Trade => QUOTE_ONLY,
            Kind::Quote => TRADE_ONLY,
            Kind::Other => return Err(no("kind", "must be \"trade\" or \"quote\"")),
        };
        if let Some(&f) = foreign.iter().find(|&&f| keys.seen(f)) {
            let name = FIELDS.iter().find(|(_, g)| *g == f).map_or("", |(n, _)| n);
            return Err(no(name, "unknown field"));
        }
        if kind == Kind::Trade {
            out.push_trade(Trade {
                time_ns,
                symbol,
                price: self.number(Field::Price)?,
                volume: self.number(Field::Volume)?,
                side: self.side,
                exchange_seq: self.exchange_seq,
            })
            .map_err(invalid)
        } else {
            out.push_quote(Quote {
                time_ns,
                symbol,
                bid: self.number(Field::Bid)?,
                ask: self.number(Field::Ask)?,
                bid_size: self.number(Field::BidSize)?,
                ask_size: self.number(Field::AskSize)?,
            })
            .map_err(invalid)
        }
    }
}

impl Record<'_> {
    /// Keeps the refusal for the caller and stops the deserializer.
    fn refuse<E: de::Error>(&mut self, field: &str, reason: String) -> E {
        *self.refused = Some(err(self.index, field, reason));
        E::custom("refused")
    }
}

impl<'de> DeserializeSeed<'de> for Record<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Record<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a tick (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::new(FIELDS);
        let mut draft = Draft::default();
        while let Some(key) = keys.next(&mut map)? {
            let field = match key {
                Ok(f) => f,
                Err(e) => return Err(self.refuse(e.field(), e.reason().to_string())),
            };
            let value: Scalar<'de> = map.next_value()?;
            if let Err((name, why)) = draft.read(field, value) {
                return Err(self.refuse(name, why));
            }
        }
        draft
            .finish(&keys, self.out)
            .map_err(|(name, why)| self.refuse(name, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_ndjson_parse_to_the_same_records() {
        let array = br#"[{"kind":"trade","symbol":"ESU4","time":"2024-07-02T00:00:00Z","price":1.5,"volume":2,"side":"S","exchange_seq":4},
                         {"kind":"quote","symbol":"ESU4","time_ns":5,"bid":1,"ask":2,"bid_size":3,"ask_size":4}]"#;
        let nd = b"{\"kind\":\"trade\",\"symbol\":\"ESU4\",\"time\":\"2024-07-02T00:00:00Z\",\"price\":1.5,\"volume\":2,\"side\":\"S\",\"exchange_seq\":4}\n\n{\"kind\":\"quote\",\"symbol\":\"ESU4\",\"time_ns\":5,\"bid\":1,\"ask\":2,\"bid_size\":3,\"ask_size\":4}\n";
        let (a, n) = (parse(array).unwrap(), parse(nd).unwrap());
        assert_eq!(a, n);
        assert_eq!(a.trades()[0].side, Side::Sell);
        assert_eq!(a.trades()[0].time_ns, 1_719_878_400_000_000_000);
        assert_eq!(a.quotes()[0].ask_size, 4.0);
    }

    #[test]
    fn each_bad_field_is_named_with_its_index() {
        let ok = r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1}"#;
        let cases = [
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"volume":1}"#,
                "price",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":"x","volume":1}"#,
                "price",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":-1}"#,
                "volume",
            ),
            (
                r#"{"kind":"trade","symbol":"","time_ns":1,"price":1,"volume":1}"#,
                "symbol",
            ),
            (
                r#"{"kind":"trade","symbol":"A","price":1,"volume":1}"#,
                "time",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time":"soon","price":1,"volume":1}"#,
                "time",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"side":"X"}"#,
                "side",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"prize":1}"#,
                "prize",
            ),
            (r#"{"kind":"bar","symbol":"A","time_ns":1}"#, "kind"),
            (
                r#"{"kind":"quote","symbol":"A","time_ns":1,"bid":1,"ask":2,"bid_size":1}"#,
                "ask_size",
            ),
            ("[1]", "body"),
        ];
        for (bad, field) in cases {
            let body = format!("{ok}\n{bad}\n");
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!((e.index, e.field.as_str()), (1, field), "{bad}: {e:?}");
        }
        assert_eq!(parse(b"[{]").unwrap_err().field, "body");
    }

    #[test]
    fn a_multi_byte_character_in_the_offset_is_an_error() {
        // Found by fuzzing (tick_parse): it used to panic slicing inside the character.
        let body =
            "{\"kind\":\"\",\"symbol\":\"1\",\"time\":\"2013-01-01 22:00:10+0\u{703}0\",\"\":3}";
        let e = parse(body.as_bytes()).unwrap_err();
        assert_eq!((e.index, e.field.as_str()), (0, "time"), "{e:?}");
    }

    const TRADE: &str = r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1}"#;

    /// The error of a record as NDJSON, which names the same field in an array.
    fn refused(record: &str) -> TickError {
        let in_array = parse(format!("[{record}]").as_bytes()).unwrap_err();
        let alone = parse(record.as_bytes()).unwrap_err();
        assert_eq!(in_array.field, alone.field, "{in_array:?} {alone:?}");
        alone
    }

    #[test]
    fn repeated_keys_are_refused_by_name() {
        for (record, key) in [
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"price":999,"volume":1}"#,
                "price",
            ),
            (
                r#"{"kind":"trade","kind":"quote","symbol":"A","time_ns":1,"price":1,"volume":1}"#,
                "kind",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"vol\u0075me":2}"#,
                "volume",
            ),
        ] {
            let e = refused(record);
            assert_eq!(e.field, key, "{record}: {e:?}");
            assert!(e.reason.contains("duplicate"), "{e:?}");
        }
    }

    #[test]
    fn times_must_be_real_dates_with_real_offsets() {
        for time in [
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-07-02T00:00:00+99:99",
            "2024-07-02T00:00:00",
        ] {
            let record =
                format!(r#"{{"kind":"trade","symbol":"A","time":"{time}","price":1,"volume":1}}"#);
            assert_eq!(refused(&record).field, "time", "{time}");
        }
        let leap_day = r#"{"kind":"trade","symbol":"A","time":"2024-02-29T23:00:00-01:00","price":1,"volume":1}"#;
        let t = parse(leap_day.as_bytes()).unwrap();
        assert_eq!(t.trades()[0].time_ns, 1_709_251_200_000_000_000);
    }

    #[test]
    fn types_and_kinds_are_checked_per_field() {
        for (record, field) in [
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"time":"2024-07-02T00:00:00Z","price":1,"volume":1}"#,
                "time",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":"1","price":1,"volume":1}"#,
                "time_ns",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"exchange_seq":1.5}"#,
                "exchange_seq",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":[1],"volume":1}"#,
                "price",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1,"bid":1}"#,
                "bid",
            ),
            (
                r#"{"kind":"quote","symbol":"A","time_ns":1,"bid":1,"ask":2,"bid_size":1,"ask_size":1,"side":"B"}"#,
                "side",
            ),
            (r#"{"kind":7,"symbol":"A","time_ns":1}"#, "kind"),
            (
                r#"{"kind":"trade","symbol":{"a":1},"time_ns":1,"price":1,"volume":1}"#,
                "symbol",
            ),
            (
                r#"{"kind":"trade","symbol":"A","time_ns":1,"price":1,"volume":1}{}"#,
                "body",
            ),
            ("[1]", "body"),
        ] {
            assert_eq!(refused(record).field, field, "{record}");
        }
        let nulls = r#"{"kind":"trade","symbol":"A\u0042","time_ns":1,"price":1,"volume":1,"side":null,"exchange_seq":null}"#;
        let t = parse(nulls.as_bytes()).unwrap();
        assert_eq!(
            (t.trades()[0].side, t.trades()[0].exchange_seq),
            (Side::None, 0)
        );
        assert_eq!(t.trades()[0].symbol.as_str(), "AB");
    }

    #[test]
    fn ndjson_errors_name_the_line_counting_blank_ones() {
        let body = format!("{TRADE}\n\n  \n{TRADE}\r\n{}\n", r#"{"kind":"trade"}"#);
        let e = parse(body.as_bytes()).unwrap_err();
        assert_eq!((e.index, e.line, e.field.as_str()), (2, Some(5), "symbol"));
        let e = parse(format!("{TRADE}\n{{\n").as_bytes()).unwrap_err();
        assert_eq!((e.index, e.line, e.field.as_str()), (1, Some(2), "body"));
        let e = parse(format!("[{TRADE},\n{TRADE},\n1]").as_bytes()).unwrap_err();
        assert_eq!((e.index, e.line, e.field.as_str()), (2, None, "body"));
    }

    #[test]
    fn an_array_of_zeros_is_refused_at_its_first_element() {
        let mut zeros = vec![b'['];
        for _ in 0..(4 << 20) {
            zeros.extend_from_slice(b"0,");
        }
        zeros.extend_from_slice(b"0]");
        let started = std::time::Instant::now();
        let e = parse(&zeros).unwrap_err();
        assert_eq!((e.index, e.field.as_str()), (0, "body"), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
    }
}
