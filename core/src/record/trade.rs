//! [`Trade`]: a trade print, its validation and its `market_data` row.

use bytes::BytesMut;

use super::kind::{finite, Record};
use super::side::Side;
use crate::binary_copy::{RowReader, RowWriter};
use crate::error::{FieldError, Invalid, Result};
use crate::fanout::wire::{TickKind, TickMessage, WireTrade};
use crate::symbol::Symbol;

/// A trade print. Table `market_data`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trade {
    /// Event time, nanoseconds since the Unix epoch (stored at microsecond precision).
    pub time_ns: i64,
    /// Instrument.
    pub symbol: Symbol,
    /// Trade price: finite (zero and negative prices exist: spreads, some futures).
    pub price: f64,
    /// Traded quantity: finite and ≥ 0.
    pub volume: f64,
    /// Aggressor side.
    pub side: Side,
    /// The venue's sequence number for this event (0 when unknown).
    pub exchange_seq: i64,
}

impl Trade {
    /// Checks what the field types do not: `price` is finite, `volume` is finite and ≥ 0.
    /// Every way in (HTTP, TCP, files) calls it; the error names the first bad field, in
    /// column order.
    #[inline]
    pub fn validate(&self) -> Result<(), FieldError> {
        finite("price", self.price)?;
        if finite("volume", self.volume)? < 0.0 {
            return Err(FieldError::new("volume", Invalid::Negative));
        }
        Ok(())
    }

    /// Back from a fan-out message's trade, for `symbol` (the message's).
    pub fn from_wire(wire: &WireTrade, symbol: Symbol) -> crate::Result<Trade> {
        Ok(Trade {
            time_ns: wire.time_ns,
            symbol,
            price: wire.price,
            volume: wire.volume,
            side: Side::from_code(u8::try_from(wire.side).unwrap_or(b'?'))?,
            exchange_seq: wire.exchange_seq,
        })
    }
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
    fn round_trip_and_size_bound() {
        let t = trade(&"Z".repeat(Symbol::MAX_LEN), f64::MAX);
        let mut buf = BytesMut::new();
        t.encode_row(&mut buf);
        assert_eq!(buf.len(), Trade::MAX_ROW_BYTES);
        assert_eq!(Trade::decode_row(&buf).unwrap(), t);
    }

    #[test]
    fn nan_survives_the_row() {
        let t = trade("ES", f64::NAN);
        let mut buf = BytesMut::new();
        t.encode_row(&mut buf);
        assert!(Trade::decode_row(&buf).unwrap().price.is_nan());
    }

    #[test]
    fn validate_accepts_any_finite_price_and_a_volume_from_zero() {
        for price in [0.0, -37.63, f64::MAX, f64::MIN_POSITIVE] {
            assert_eq!(trade("ES", price).validate(), Ok(()), "{price}");
        }
        for volume in [0.0, -0.0, 1e-9, f64::MAX] {
            let t = Trade {
                volume,
                ..trade("ES", 1.0)
            };
            assert_eq!(t.validate(), Ok(()), "{volume}");
        }
    }

    #[test]
    fn validate_names_each_rule_and_its_field() {
        let not_finite = |field| Err(FieldError::new(field, Invalid::NotFinite));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(trade("ES", bad).validate(), not_finite("price"));
            let t = Trade {
                volume: bad,
                ..trade("ES", 1.0)
            };
            assert_eq!(t.validate(), not_finite("volume"));
        }
        let short = Trade {
            volume: -1.0,
            ..trade("ES", 1.0)
        };
        assert_eq!(
            short.validate(),
            Err(FieldError::new("volume", Invalid::Negative))
        );
        // The first bad field in column order is the one named.
        let both = Trade {
            volume: -1.0,
            ..trade("ES", f64::NAN)
        };
        assert_eq!(both.validate().unwrap_err().field, "price");
        assert_eq!(
            short.validate().unwrap_err().to_string(),
            "volume: must be ≥ 0"
        );
    }
}
