//! [`TickSource`]: what every file reader is to replay.

use crate::error::Result;
use crate::ingress::Kinds;
use crate::record::Tick;

/// A file read one tick at a time, each tick valid by its kind: what a replay drives.
pub trait TickSource: Send {
    /// The next tick; `None` at the end of the file.
    fn next_tick(&mut self) -> Result<Option<Tick>>;

    /// Fraction of the file read so far, when the reader knows it.
    fn progress(&self) -> Option<f64> {
        None
    }

    /// The kinds of tick the file can hold, by its format (its columns, its schema): a
    /// replay starts only their pipelines.
    fn kinds(&self) -> Kinds {
        Kinds::BOTH
    }
}
