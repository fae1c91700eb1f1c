//! The HTTP tick format: a JSON array, or NDJSON (one object per line), of
//!
//! ```json
//! {"kind":"trade","symbol":"ESU4","time":"2024-07-02T00:00:00.000123Z","price":5512.25,
//!  "volume":3,"side":"B","exchange_seq":17}
//! {"kind":"quote","symbol":"ESU4","time_ns":1719878400000123000,"bid":5512.0,"ask":5512.25,
//!  "bid_size":10,"ask_size":12}
//! ```
//!
//! `time` (RFC 3339) or `time_ns` (integer nanoseconds) is required; `side` is read by
//! [`Side::from_text`] (`B`/`S`/`N`, `buy`/`sell`/`none`, `A`/`ask`, any case; default `N`);
//! `exchange_seq` defaults to 0. Each record goes into a core [`Ticks`], which validates it
//! by its kind, so the whole request is checked before anything is accepted, and the first
//! bad record is reported by index and field.

use christmas_core::{FieldError, Quote, Side, Symbol, Ticks, Trade};
use serde_json::{Map, Value};

use crate::timefmt;

/// Why a request's ticks were refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TickError {
    /// Position of the bad record in the request (0-based; NDJSON: the line's record).
    pub index: usize,
    /// The offending field (`body` when the record is not JSON at all).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn err(index: usize, field: &str, reason: impl Into<String>) -> TickError {
    TickError {
        index,
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The record at `index` refused by its kind's validation.
fn invalid(index: usize) -> impl Fn(FieldError) -> TickError {
    move |e| err(index, e.field, e.reason.to_string())
}

/// Parses a JSON array or NDJSON body into its ticks.
pub fn parse(body: &[u8]) -> Result<Ticks, TickError> {
    let text = std::str::from_utf8(body).map_err(|_| err(0, "body", "not UTF-8"))?;
    let trimmed = text.trim_start();
    let mut out = Ticks::default();
    if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(trimmed)
            .map_err(|e| err(0, "body", format!("not a JSON array of ticks: {e}")))?;
        for (i, v) in values.iter().enumerate() {
            record(i, v, &mut out)?;
        }
    } else {
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| err(i, "body", format!("line is not a JSON object: {e}")))?;
            record(i, &v, &mut out)?;
        }
    }
    Ok(out)
}

const TRADE_FIELDS: &[&str] = &[
    "kind",
    "symbol",
    "time",
    "time_ns",
    "price",
    "volume",
    "side",
    "exchange_seq",
];

const QUOTE_FIELDS: &[&str] = &[
    "kind", "symbol", "time", "time_ns", "bid", "ask", "bid_size", "ask_size",
];

fn record(i: usize, v: &Value, out: &mut Ticks) -> Result<(), TickError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(i, "body", "a tick must be a JSON object"))?;
    let kind = o
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| err(i, "kind", "required: \"trade\" or \"quote\""))?;
    let symbol = o
        .get("symbol")
        .and_then(Value::as_str)
        .ok_or_else(|| err(i, "symbol", "required string"))?;
    let symbol = Symbol::parse(symbol).map_err(invalid(i))?;
    let time_ns = time(i, o)?;
    match kind {
        "trade" => {
            check_fields(i, o, TRADE_FIELDS)?;
            let side = match o.get("side") {
                None | Some(Value::Null) => Side::None,
                Some(Value::String(s)) => Side::from_text(s).map_err(invalid(i))?,
                Some(_) => return Err(err(i, "side", "must be a string")),
            };
            let exchange_seq = match o.get("exchange_seq") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| err(i, "exchange_seq", "must be an integer"))?,
            };
            let trade = Trade {
                time_ns,
                symbol,
                price: number(i, o, "price")?,
                volume: number(i, o, "volume")?,
                side,
                exchange_seq,
            };
            out.push_trade(trade).map_err(invalid(i))
        }
        "quote" => {
            check_fields(i, o, QUOTE_FIELDS)?;
            let quote = Quote {
                time_ns,
                symbol,
                bid: number(i, o, "bid")?,
                ask: number(i, o, "ask")?,
                bid_size: number(i, o, "bid_size")?,
                ask_size: number(i, o, "ask_size")?,
            };
            out.push_quote(quote).map_err(invalid(i))
        }
        _ => Err(err(i, "kind", "must be \"trade\" or \"quote\"")),
    }
}

/// Unknown fields are refused: a typo must not silently drop data.
fn check_fields(i: usize, o: &Map<String, Value>, known: &[&str]) -> Result<(), TickError> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(err(i, k, "unknown field")),
        None => Ok(()),
    }
}

/// A number field, present and numeric; whether its value is allowed is the kind's
/// `validate`.
fn number(i: usize, o: &Map<String, Value>, field: &str) -> Result<f64, TickError> {
    o.get(field)
        .ok_or_else(|| err(i, field, "required number"))?
        .as_f64()
        .ok_or_else(|| err(i, field, "must be a number"))
}

fn time(i: usize, o: &Map<String, Value>) -> Result<i64, TickError> {
    match (o.get("time"), o.get("time_ns")) {
        (Some(_), Some(_)) => Err(err(i, "time", "give time or time_ns, not both")),
        (Some(Value::String(s)), None) => timefmt::parse_ns(s).map_err(|e| err(i, "time", e)),
        (Some(_), None) => Err(err(i, "time", "must be an RFC 3339 string")),
        (None, Some(v)) => v
            .as_i64()
            .ok_or_else(|| err(i, "time_ns", "must be an integer of nanoseconds")),
        (None, None) => Err(err(i, "time", "required (or time_ns)")),
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
}
