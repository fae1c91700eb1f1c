//! [`DeadLetter`]: a row PostgreSQL refused, kept with the reason.

use bytes::Bytes;

use crate::record::Record;
use crate::Result;

/// A row PostgreSQL rejected (a constraint, a value out of a partition's range, …).
///
/// The batch it came in was split until the row stood alone; the rest of the batch
/// committed. The row is stored in the dead-letter table with the reason, exactly once, and
/// handed to the optional callback.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Table the row was meant for.
    pub table: String,
    /// The ledger stream of the batch.
    pub stream: String,
    /// Shard of the batch.
    pub shard: usize,
    /// Sequence of the batch within the shard.
    pub seq: u64,
    /// Index of the row within the batch.
    pub row_index: usize,
    /// The row in binary COPY form; [`DeadLetter::decode`] turns it back into a record.
    pub row: Bytes,
    /// PostgreSQL's message.
    pub reason: String,
    /// PostgreSQL's SQLSTATE code (`23514` for a check violation, …).
    pub sqlstate: String,
}

impl DeadLetter {
    /// The rejected record.
    pub fn decode<R: Record>(&self) -> Result<R> {
        R::decode_row(&self.row)
    }
}
