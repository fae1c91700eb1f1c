//! File readers for replay: each turns a file format into [`Trade`](crate::Trade)s and
//! [`Quote`](crate::Quote)s, checked by their kind's `validate` on the way in.
//!
//! | module | format | feature |
//! |---|---|---|
//! | [`csv`] | CSV of trades or quotes with a header (TrueFX, exported tick files) | |
//! | [`dbn`] | Databento DBN, MBP-1 schema (`.dbn`, `.dbn.zst`) | `dbn` |
//! | [`timefmt`] | RFC 3339 / integer-nanosecond timestamps, as files and the HTTP API write them | |

use crate::error::Result;
use crate::record::Tick;

pub mod csv;
#[cfg(feature = "dbn")]
pub mod dbn;
pub mod timefmt;

/// A file read one tick at a time, each tick valid by its kind: what a replay drives.
pub trait TickSource {
    /// The next tick; `None` at the end of the file.
    fn next_tick(&mut self) -> Result<Option<Tick>>;

    /// Fraction of the file read so far, when the reader knows it.
    fn progress(&self) -> Option<f64> {
        None
    }
}
