//! File readers for replay: each turns a file format into [`Trade`](crate::Trade)s and
//! [`Quote`](crate::Quote)s, checked by their kind's `validate` on the way in.
//!
//! | module | format | feature |
//! |---|---|---|
//! | [`csv`] | CSV of trades or quotes: a header-driven generic layout and the dialects of Databento, Tardis, Binance and HistData | |
//! | [`dbn`] | Databento DBN, every tick schema, versions 1 to 3 (`.dbn`, `.dbn.zst`) | `dbn` |
//! | [`timefmt`] | RFC 3339 / integer timestamps in any unit / naive times at a fixed offset or in a tz database zone ([`timefmt::NaiveZone`]) | |
//!
//! [`ReplayFile`] is the way in: it opens any of them by name and content, and numbers
//! the ticks it yields (their position) next to the file's [`ContentHash`], which together
//! identify every tick of every file. A reader that cannot go on returns a
//! [`SourceError`] naming the kind of failure and where.

pub mod csv;
#[cfg(feature = "dbn")]
pub mod dbn;
mod error;
mod file;
mod hash;
mod tick_source;
pub mod timefmt;

pub use error::{SourceError, SourceErrorKind, SourcePosition};
pub use file::{FileFormat, PendingHash, ReadOptions, ReplayFile};
pub use hash::ContentHash;
pub use tick_source::TickSource;
