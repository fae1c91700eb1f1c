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

    /// Parses the side as text (JSON ticks, CSV files), ignoring ASCII case: `B`, `buy` or
    /// `bid` is [`Side::Buy`]; `S`, `sell`, `A` or `ask` is [`Side::Sell`] (`A`/`ask`: the
    /// aggressor hit the ask side's book code, as Databento writes it); `N` or `none` is
    /// [`Side::None`]. Anything else is refused, so a side nobody can read is an error and
    /// not silently [`Side::None`]. A missing side is the caller's to default.
    pub fn from_text(s: &str) -> Result<Side, FieldError> {
        const WORDS: [(&str, Side); 9] = [
            ("B", Side::Buy),
            ("buy", Side::Buy),
            ("bid", Side::Buy),
            ("S", Side::Sell),
            ("sell", Side::Sell),
            ("A", Side::Sell),
            ("ask", Side::Sell),
            ("N", Side::None),
            ("none", Side::None),
        ];
        WORDS
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(s))
            .map(|&(_, side)| side)
            .ok_or(FieldError::new("side", Invalid::UnknownSideText))
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
    fn text_takes_every_spelling_in_any_case_and_refuses_the_rest() {
        for (text, side) in [
            ("B", Side::Buy),
            ("b", Side::Buy),
            ("buy", Side::Buy),
            ("BUY", Side::Buy),
            ("Bid", Side::Buy),
            ("S", Side::Sell),
            ("sell", Side::Sell),
            ("Sell", Side::Sell),
            ("A", Side::Sell),
            ("ask", Side::Sell),
            ("N", Side::None),
            ("none", Side::None),
            ("NONE", Side::None),
        ] {
            assert_eq!(Side::from_text(text), Ok(side), "{text}");
        }
        for bad in ["", "X", "long", " B", "buyer", "unknown"] {
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
