//! [`Quote`]: a top-of-book quote, its validation and its `quotes` row.

use super::kind::{finite, impl_record};
use crate::error::{FieldError, Result};
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

impl_record! {
    Quote {
        kind: "quote",
        table: "quotes",
        tick_kind: Quote,
        message: quotes of WireQuote,
        columns: [bid: f64, ask: f64, bid_size: f64, ask_size: f64],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Invalid;
    use crate::record::kind::assert_round_trip_at_max_size;
    use crate::record::Record;

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
        assert_round_trip_at_max_size(Quote {
            ask: f64::INFINITY,
            ..quote()
        });
    }

    #[test]
    fn columns_follow_the_table() {
        assert_eq!(
            Quote::COLUMNS,
            ["time", "symbol", "bid", "ask", "bid_size", "ask_size"]
        );
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
