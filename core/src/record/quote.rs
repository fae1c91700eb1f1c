//! [`Quote`]: a top-of-book quote, its validation and its `quotes` row.

use bytes::BytesMut;

use super::kind::{finite, Record};
use crate::binary_copy::{RowReader, RowWriter};
use crate::error::{FieldError, Result};
use crate::fanout::wire::{TickKind, TickMessage, WireQuote};
use crate::symbol::Symbol;

/// A top-of-book quote. Table `quotes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// Event time, nanoseconds since the Unix epoch (stored at microsecond precision).
    pub time_ns: i64,
    /// Instrument.
    pub symbol: Symbol,
    /// Best bid price: finite.
    pub bid: f64,
    /// Best ask price: finite (a crossed or locked book is the venue's to report).
    pub ask: f64,
    /// Quantity at the best bid: finite.
    pub bid_size: f64,
    /// Quantity at the best ask: finite.
    pub ask_size: f64,
}

impl Quote {
    /// Checks what the field types do not: all four numbers are finite. Every way in
    /// (HTTP, TCP, files) calls it; the error names the first bad field, in column order.
    #[inline]
    pub fn validate(&self) -> Result<(), FieldError> {
        finite("bid", self.bid)?;
        finite("ask", self.ask)?;
        finite("bid_size", self.bid_size)?;
        finite("ask_size", self.ask_size)?;
        Ok(())
    }
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
    use crate::error::Invalid;

    fn quote() -> Quote {
        Quote {
            time_ns: -5_000,
            symbol: Symbol::new(&"Q".repeat(Symbol::MAX_LEN)).unwrap(),
            bid: 1.0,
            ask: 2.0,
            bid_size: 0.0,
            ask_size: -0.0,
        }
    }

    #[test]
    fn round_trip_and_size_bound() {
        let q = Quote {
            ask: f64::INFINITY,
            ..quote()
        };
        let mut buf = BytesMut::new();
        q.encode_row(&mut buf);
        assert_eq!(buf.len(), Quote::MAX_ROW_BYTES);
        assert_eq!(Quote::decode_row(&buf).unwrap(), q);
    }

    #[test]
    fn validate_names_each_field_that_is_not_finite() {
        assert_eq!(quote().validate(), Ok(()));
        // Sizes below zero and crossed books are kept: the TCP path always took them.
        let crossed = Quote {
            bid: 3.0,
            bid_size: -1.0,
            ..quote()
        };
        assert_eq!(crossed.validate(), Ok(()));
        type Field = fn(&mut Quote) -> &mut f64;
        let fields: [(&str, Field); 4] = [
            ("bid", |q| &mut q.bid),
            ("ask", |q| &mut q.ask),
            ("bid_size", |q| &mut q.bid_size),
            ("ask_size", |q| &mut q.ask_size),
        ];
        for (name, field) in fields {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let mut q = quote();
                *field(&mut q) = bad;
                assert_eq!(
                    q.validate(),
                    Err(FieldError::new(name, Invalid::NotFinite)),
                    "{name} = {bad}"
                );
            }
        }
    }
}
