//! [`Trade`]: a trade print, its validation and its `market_data` row.

use super::kind::{finite, impl_record};
use super::side::Side;
use crate::error::{FieldError, Invalid, Result};
use crate::fanout::wire::WireTrade;
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
    /// Traded quantity: from 0 to [`Trade::MAX_VOLUME`].
    pub volume: f64,
    /// Aggressor side.
    pub side: Side,
    /// The venue's sequence number for this event (0 when unknown).
    pub exchange_seq: i64,
}

impl Trade {
    /// The largest volume a validated trade carries. Bars add volumes as `float8`, and
    /// PostgreSQL refuses a `float8` sum that overflows: two trades of 1e308 in one minute
    /// would make every read of that bar fail, and TimescaleDB's aggregate refresh with it.
    /// From 1e18 a bar needs more than 1e290 trades to overflow; no real trade comes close.
    pub const MAX_VOLUME: f64 = 1e18;

    /// Checks what the field types do not: `price` is finite, `volume` is from 0 to
    /// [`Trade::MAX_VOLUME`]. Every way in (HTTP, TCP, files) calls it; the error names the
    /// first bad field, in column order.
    #[inline]
    pub fn validate(&self) -> Result<(), FieldError> {
        finite("price", self.price)?;
        let volume = finite("volume", self.volume)?;
        if volume < 0.0 {
            return Err(FieldError::new("volume", Invalid::Negative));
        }
        if volume > Self::MAX_VOLUME {
            return Err(FieldError::new("volume", Invalid::TooLarge));
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

impl_record! {
    Trade {
        kind: "trade",
        table: "market_data",
        tick_kind: Trade,
        message: trades of WireTrade,
        columns: [price: f64, volume: f64, side: Side, exchange_seq: i64],
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::record::kind::assert_round_trip_at_max_size;
    use crate::record::Record;

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
        assert_round_trip_at_max_size(trade(&"Z".repeat(Symbol::MAX_LEN), f64::MAX));
    }

    #[test]
    fn columns_and_latest_fields_follow_the_table() {
        assert_eq!(
            Trade::COLUMNS,
            ["time", "symbol", "price", "volume", "side", "exchange_seq"]
        );
        let fields: Vec<(&str, String)> = [
            ("trade_time_ns", "1719878400123456000"),
            ("trade_price", "1.5"),
            ("trade_volume", "2"),
            ("trade_side", "S"),
            ("trade_exchange_seq", "99"),
            ("trade_seq", "7"),
        ]
        .map(|(k, v)| (k, v.to_string()))
        .into();
        assert_eq!(trade("ES", 1.5).latest_fields(7), fields);
    }

    #[test]
    fn nan_survives_the_row() {
        let t = trade("ES", f64::NAN);
        let mut buf = BytesMut::new();
        t.encode_row(&mut buf);
        assert!(Trade::decode_row(&buf).unwrap().price.is_nan());
    }

    #[test]
    fn validate_accepts_any_finite_price_and_a_volume_from_zero_to_its_maximum() {
        for price in [0.0, -37.63, f64::MAX, f64::MIN_POSITIVE] {
            assert_eq!(trade("ES", price).validate(), Ok(()), "{price}");
        }
        for volume in [0.0, -0.0, 1e-9, Trade::MAX_VOLUME] {
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
        for huge in [Trade::MAX_VOLUME * 1.000_001, 1e300, f64::MAX] {
            let t = Trade {
                volume: huge,
                ..trade("ES", 1.0)
            };
            assert_eq!(
                t.validate(),
                Err(FieldError::new("volume", Invalid::TooLarge)),
                "{huge}"
            );
        }
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
