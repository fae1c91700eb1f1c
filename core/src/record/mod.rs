//! Record kinds and the [`Record`] trait that tells the pipeline how to store them.
//!
//! | file | what it holds |
//! |---|---|
//! | `kind.rs` | the [`Record`] trait (table, columns, COPY row, fan-out form) and `impl_record!`, which implements it from a kind's column list |
//! | `trade.rs` | [`Trade`]: fields, [`Trade::validate`], its `market_data` COPY row |
//! | `quote.rs` | [`Quote`]: fields, [`Quote::validate`], its `quotes` COPY row |
//! | `side.rs` | [`Side`] and the codes it is written in (stored, JSON/CSV text, Databento) |
//!
//! Adding a kind means one file with its struct, its column list given to `impl_record!`
//! (which derives the binary `COPY` row, its reader and the fan-out form from it), a wire
//! struct in [`crate::fanout::wire`] and a `validate` every way in calls. Everything else
//! in the pipeline is generic.

use crate::symbol::Symbol;

mod kind;
mod quote;
mod side;
mod trade;

pub use kind::Record;
pub use quote::Quote;
pub use side::Side;
pub use trade::Trade;

/// One tick of either kind: what a file reader or a synthetic market yields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tick {
    /// A trade print.
    Trade(Trade),
    /// A top-of-book update.
    Quote(Quote),
}

impl Tick {
    /// The tick's symbol.
    pub fn symbol(&self) -> &Symbol {
        match self {
            Tick::Trade(t) => &t.symbol,
            Tick::Quote(q) => &q.symbol,
        }
    }

    /// The tick's event time, in nanoseconds since the Unix epoch.
    pub fn time_ns(&self) -> i64 {
        match self {
            Tick::Trade(t) => t.time_ns,
            Tick::Quote(q) => q.time_ns,
        }
    }

    /// Moves the tick's event time by `by` nanoseconds (replays paced to now, a soak
    /// spreading its minutes over daily partitions).
    pub fn shift_time(&mut self, by: i64) {
        match self {
            Tick::Trade(t) => t.time_ns += by,
            Tick::Quote(q) => q.time_ns += by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        // Records travel by value through the rings; keep them small.
        assert!(std::mem::size_of::<Trade>() <= 72);
        assert!(std::mem::size_of::<Quote>() <= 72);
    }

    #[test]
    fn columns_match_field_count() {
        assert_eq!(Trade::COLUMNS.len(), 6);
        assert_eq!(Quote::COLUMNS.len(), 6);
    }
}
