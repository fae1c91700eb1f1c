//! [`Side`]: the aggressor side of a trade, and every code it is written in.

use crate::error::{FieldError, Invalid};

/// The aggressor side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Side {
    /// The buyer lifted the offer. Stored as `'B'`.
    Buy,
    /// The seller hit the bid. Stored as `'S'`.
    Sell,
    /// Unknown or not applicable. Stored as `'N'`.
    #[default]
    None,
}

impl Side {
    /// The one-byte code stored in the `side` column and sent in TCP frames.
    pub fn code(self) -> u8 {
        match self {
            Side::Buy => b'B',
            Side::Sell => b'S',
            Side::None => b'N',
        }
    }

    /// Parses a stored or framed code: `B`, `S` or `N`, nothing else.
    pub fn from_code(c: u8) -> Result<Side, FieldError> {
        match c {
            b'B' => Ok(Side::Buy),
            b'S' => Ok(Side::Sell),
            b'N' => Ok(Side::None),
            other => Err(FieldError::new("side", Invalid::UnknownCode(other))),
        }
    }

    /// Parses the side as text (JSON ticks, CSV files): `B` or `buy`, `S` or `sell`, `N` or
    /// `none`, exactly. A missing side is the caller's to default ([`Side::None`]).
    pub fn from_text(s: &str) -> Result<Side, FieldError> {
        match s {
            "B" | "buy" => Ok(Side::Buy),
            "S" | "sell" => Ok(Side::Sell),
            "N" | "none" => Ok(Side::None),
            _ => Err(FieldError::new("side", Invalid::UnknownSideText)),
        }
    }

    /// Parses a book-side code, as Databento writes the side that initiated a trade: `B`
    /// (bid: a buyer) is [`Side::Buy`], `A` (ask: a seller) is [`Side::Sell`], `N` is
    /// [`Side::None`].
    pub fn from_book_code(c: u8) -> Result<Side, FieldError> {
        match c {
            b'B' => Ok(Side::Buy),
            b'A' => Ok(Side::Sell),
            b'N' => Ok(Side::None),
            other => Err(FieldError::new("side", Invalid::UnknownCode(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_name_the_field() {
        for side in [Side::Buy, Side::Sell, Side::None] {
            assert_eq!(Side::from_code(side.code()), Ok(side));
        }
        assert_eq!(
            Side::from_code(b'X'),
            Err(FieldError::new("side", Invalid::UnknownCode(b'X')))
        );
        assert_eq!(
            Side::from_code(b'A').unwrap_err().to_string(),
            "side: unknown code 'A'"
        );
    }

    #[test]
    fn text_is_the_json_vocabulary_exactly() {
        for (text, side) in [
            ("B", Side::Buy),
            ("buy", Side::Buy),
            ("S", Side::Sell),
            ("sell", Side::Sell),
            ("N", Side::None),
            ("none", Side::None),
        ] {
            assert_eq!(Side::from_text(text), Ok(side), "{text}");
        }
        for bad in ["", "X", "A", "b", "BUY", "Sell", " B"] {
            assert_eq!(
                Side::from_text(bad),
                Err(FieldError::new("side", Invalid::UnknownSideText)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn book_codes_map_bid_and_ask_to_buy_and_sell() {
        assert_eq!(Side::from_book_code(b'B'), Ok(Side::Buy));
        assert_eq!(Side::from_book_code(b'A'), Ok(Side::Sell));
        assert_eq!(Side::from_book_code(b'N'), Ok(Side::None));
        assert!(Side::from_book_code(b'S').is_err());
    }
}
