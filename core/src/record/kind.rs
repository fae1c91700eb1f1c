//! [`Record`]: what a record kind tells the pipeline, and the checks kinds share.

use bytes::BytesMut;

use crate::error::{FieldError, Invalid, Result};
use crate::fanout::wire::{TickKind, TickMessage};
use crate::symbol::Symbol;

/// A tick the pipeline can batch into a PostgreSQL table with binary `COPY`.
pub trait Record: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and metrics (`"trade"`).
    const KIND: &'static str;
    /// The table rows go to unless the config names another.
    const DEFAULT_TABLE: &'static str;
    /// The table's columns, in the order [`Record::encode_row`] writes them.
    const COLUMNS: &'static [&'static str];
    /// An upper bound of one encoded row's size in bytes.
    const MAX_ROW_BYTES: usize;

    /// The instrument; all records of a symbol go through one shard.
    fn symbol(&self) -> &Symbol;

    /// Event time, nanoseconds since the Unix epoch.
    fn time_ns(&self) -> i64;

    /// Appends this record as one binary `COPY` row. `out` has at least
    /// [`Record::MAX_ROW_BYTES`] bytes of spare capacity.
    fn encode_row(&self, out: &mut BytesMut);

    /// Reads back a row written by [`Record::encode_row`] (times at microsecond precision).
    fn decode_row(row: &[u8]) -> Result<Self>;

    /// The kind of fan-out message it travels in.
    const TICK_KIND: TickKind;

    /// Appends it to a fan-out message ([`crate::fanout::wire`]).
    fn push_to_message(&self, message: &mut TickMessage);

    /// The fields it sets in its symbol's `md:{SYMBOL}:latest` hash, given its fan-out
    /// sequence.
    fn latest_fields(&self, seq: u64) -> Vec<(&'static str, String)>;
}

/// `value`, when it is finite; else a [`FieldError`] naming `field`.
#[inline]
pub(super) fn finite(field: &'static str, value: f64) -> std::result::Result<f64, FieldError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(FieldError::new(field, Invalid::NotFinite))
    }
}
