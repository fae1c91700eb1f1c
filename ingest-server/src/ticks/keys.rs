//! The tick object's keys, shared by the reference parser and [`super::fast`]: one list,
//! so the two cannot disagree on which keys exist or which kind owns them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Field {
    Kind,
    Symbol,
    Time,
    TimeNs,
    Price,
    Volume,
    Side,
    ExchangeSeq,
    Bid,
    Ask,
    BidSize,
    AskSize,
}

/// Every key by its name, for the reference parser's [`crate::json_fields::Keys`].
pub(super) const FIELDS: &[(&str, Field)] = &[
    ("kind", Field::Kind),
    ("symbol", Field::Symbol),
    ("time", Field::Time),
    ("time_ns", Field::TimeNs),
    ("price", Field::Price),
    ("volume", Field::Volume),
    ("side", Field::Side),
    ("exchange_seq", Field::ExchangeSeq),
    ("bid", Field::Bid),
    ("ask", Field::Ask),
    ("bid_size", Field::BidSize),
    ("ask_size", Field::AskSize),
];

/// The fields only a trade has; a quote has the others but `kind`, `symbol` and the time.
pub(super) const TRADE_ONLY: &[Field] =
    &[Field::Price, Field::Volume, Field::Side, Field::ExchangeSeq];
pub(super) const QUOTE_ONLY: &[Field] = &[Field::Bid, Field::Ask, Field::BidSize, Field::AskSize];

impl Field {
    /// The field of a key's exact bytes. A `match`, which the compiler turns into a switch
    /// on the length and one comparison, where a walk of [`FIELDS`] would compare up to 12:
    /// this runs once per key in the fast path. A test checks it against [`FIELDS`].
    pub(super) fn from_name(k: &[u8]) -> Option<Field> {
        Some(match k {
            b"kind" => Field::Kind,
            b"symbol" => Field::Symbol,
            b"time" => Field::Time,
            b"time_ns" => Field::TimeNs,
            b"price" => Field::Price,
            b"volume" => Field::Volume,
            b"side" => Field::Side,
            b"exchange_seq" => Field::ExchangeSeq,
            b"bid" => Field::Bid,
            b"ask" => Field::Ask,
            b"bid_size" => Field::BidSize,
            b"ask_size" => Field::AskSize,
            _ => return None,
        })
    }

    /// One bit per field, in declaration order, for a record's set of seen keys.
    pub(super) const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The bits of `fields`.
pub(super) const fn bits(fields: &[Field]) -> u16 {
    let mut out = 0;
    let mut i = 0;
    while i < fields.len() {
        out |= fields[i].bit();
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_match_and_the_table_agree() {
        for &(name, field) in FIELDS {
            assert_eq!(Field::from_name(name.as_bytes()), Some(field), "{name}");
        }
        assert_eq!(bits(&FIELDS.iter().map(|f| f.1).collect::<Vec<_>>()), 0xfff);
        assert_eq!(Field::from_name(b"prize"), None);
        assert_eq!(bits(TRADE_ONLY) & bits(QUOTE_ONLY), 0);
    }
}
