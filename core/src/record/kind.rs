//! [`Record`]: what a record kind tells the pipeline; `impl_record!`, which implements it
//! from a kind's column list; and the checks kinds share.

use std::fmt::Display;

use bytes::BytesMut;

use super::side::Side;
use crate::binary_copy::{RowReader, RowWriter};
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

/// A column after `time` and `symbol`: how its field is written in a binary `COPY` row, read
/// back, and carried in a fan-out message and the latest hash.
pub(super) trait Column: Sized {
    /// Its encoded size in a row, without the length word.
    const BYTES: usize;
    /// Its form in a fan-out message; its `Display` is the latest hash's text.
    type Wire: Display;

    /// Appends it to `row`.
    fn put(&self, row: &mut RowWriter<'_>);
    /// Reads it from `row`.
    fn get(row: &mut RowReader<'_>) -> Result<Self>;
    /// Its fan-out form.
    fn to_wire(&self) -> Self::Wire;
}

impl Column for f64 {
    const BYTES: usize = 8;
    type Wire = f64;

    #[inline]
    fn put(&self, row: &mut RowWriter<'_>) {
        row.put_f64(*self);
    }
    #[inline]
    fn get(row: &mut RowReader<'_>) -> Result<Self> {
        row.f64()
    }
    #[inline]
    fn to_wire(&self) -> f64 {
        *self
    }
}

impl Column for i64 {
    const BYTES: usize = 8;
    type Wire = i64;

    #[inline]
    fn put(&self, row: &mut RowWriter<'_>) {
        row.put_i64(*self);
    }
    #[inline]
    fn get(row: &mut RowReader<'_>) -> Result<Self> {
        row.i64()
    }
    #[inline]
    fn to_wire(&self) -> i64 {
        *self
    }
}

impl Column for Side {
    const BYTES: usize = 1;
    type Wire = char;

    #[inline]
    fn put(&self, row: &mut RowWriter<'_>) {
        row.put_char(self.code());
    }
    #[inline]
    fn get(row: &mut RowReader<'_>) -> Result<Self> {
        Ok(Side::from_code(row.char()?)?)
    }
    #[inline]
    fn to_wire(&self) -> char {
        self.code() as char
    }
}

/// Implements [`Record`] for a record struct from one list of its columns: `time` (field
/// `time_ns`), `symbol`, then each listed field, named like its column, in table order. The
/// `COPY` row, its reader, the fan-out form (`$wire` has `time_ns` and the listed fields)
/// and the latest-hash fields (`{kind}_{field}`) all follow that list, so they cannot
/// disagree; every call is static, so encoding stays inlined per kind.
macro_rules! impl_record {
    (
        $record:ident {
            kind: $kind:literal,
            table: $table:literal,
            tick_kind: $tick_kind:ident,
            message: $list:ident of $wire:ident,
            columns: [$($field:ident: $ty:ty),+ $(,)?] $(,)?
        }
    ) => {
        impl $crate::record::kind::Record for $record {
            const KIND: &'static str = $kind;
            const DEFAULT_TABLE: &'static str = $table;
            const COLUMNS: &'static [&'static str] = &["time", "symbol", $(stringify!($field)),+];
            // field count, a length word per field, time, symbol, then each column
            const MAX_ROW_BYTES: usize = 2
                + Self::COLUMNS.len() * 4
                + 8
                + $crate::symbol::Symbol::MAX_LEN
                $(+ <$ty as $crate::record::kind::Column>::BYTES)+;

            #[inline]
            fn symbol(&self) -> &$crate::symbol::Symbol {
                &self.symbol
            }

            #[inline]
            fn time_ns(&self) -> i64 {
                self.time_ns
            }

            #[inline]
            fn encode_row(&self, out: &mut bytes::BytesMut) {
                let mut row =
                    $crate::binary_copy::RowWriter::begin(out, Self::COLUMNS.len() as i16);
                row.put_timestamp_ns(self.time_ns)
                    .put_text(self.symbol.as_bytes());
                $(<$ty as $crate::record::kind::Column>::put(&self.$field, &mut row);)+
            }

            fn decode_row(row: &[u8]) -> $crate::error::Result<Self> {
                let mut r =
                    $crate::binary_copy::RowReader::begin(row, Self::COLUMNS.len() as i16)?;
                let record = $record {
                    time_ns: r.timestamp_ns()?,
                    symbol: $crate::symbol::Symbol::from_utf8(r.text()?)?,
                    $($field: <$ty as $crate::record::kind::Column>::get(&mut r)?,)+
                };
                r.finish()?;
                Ok(record)
            }

            const TICK_KIND: $crate::fanout::wire::TickKind =
                $crate::fanout::wire::TickKind::$tick_kind;

            fn push_to_message(&self, message: &mut $crate::fanout::wire::TickMessage) {
                message.$list.push($crate::fanout::wire::$wire {
                    time_ns: self.time_ns,
                    $($field: <$ty as $crate::record::kind::Column>::to_wire(&self.$field),)+
                });
            }

            fn latest_fields(&self, seq: u64) -> Vec<(&'static str, String)> {
                vec![
                    (concat!($kind, "_time_ns"), self.time_ns.to_string()),
                    $((
                        concat!($kind, "_", stringify!($field)),
                        <$ty as $crate::record::kind::Column>::to_wire(&self.$field).to_string(),
                    ),)+
                    (concat!($kind, "_seq"), seq.to_string()),
                ]
            }
        }
    };
}
pub(super) use impl_record;

/// Encodes `record`, checks the row is exactly [`Record::MAX_ROW_BYTES`] long (call it with
/// a longest symbol) and reads it back equal.
#[cfg(test)]
pub(super) fn assert_round_trip_at_max_size<R: Record + PartialEq>(record: R) {
    let mut buf = BytesMut::new();
    record.encode_row(&mut buf);
    assert_eq!(buf.len(), R::MAX_ROW_BYTES);
    assert_eq!(R::decode_row(&buf).unwrap(), record);
}
