//! PostgreSQL binary `COPY` format: the header, row and trailer encoding, and a reader for
//! the rows the engine itself wrote (used to dead-letter a rejected row and by tests).
//!
//! Format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature, a 32-bit flags
//! field, a 32-bit header-extension length, then per row a 16-bit field count followed by
//! each field as a 32-bit length (`-1` for NULL) and its bytes in the type's binary send
//! format, and finally a 16-bit `-1` trailer. All integers are big-endian.

use bytes::{BufMut, BytesMut};

use crate::error::{Error, Result};

/// The stream header: signature, flags = 0, header extension length = 0.
pub const HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The stream trailer: a field count of -1.
pub const TRAILER: &[u8; 2] = &[0xff, 0xff];

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Bytes of COPY data sent as one protocol message by [`CopyRows::pieces`].
pub(crate) const COPY_PIECE: usize = 256 * 1024;

/// Converts nanoseconds since the Unix epoch to PostgreSQL `timestamptz` microseconds since
/// 2000-01-01, rounding toward negative infinity.
///
/// `timestamptz` keeps microseconds: the sub-microsecond part of a tick's time is dropped.
/// Every `i64` nanosecond value (years 1677 to 2262) is inside PostgreSQL's range.
#[inline]
pub fn pg_timestamp_from_unix_ns(ns: i64) -> i64 {
    ns.div_euclid(1_000) - PG_EPOCH_OFFSET_US
}

/// The inverse of [`pg_timestamp_from_unix_ns`], at microsecond precision. Saturates outside
/// the `i64` nanosecond range.
#[inline]
pub fn unix_ns_from_pg_timestamp(us: i64) -> i64 {
    us.saturating_add(PG_EPOCH_OFFSET_US).saturating_mul(1_000)
}

/// Writes one row's fields into a `BytesMut`.
///
/// Built by [`RowWriter::begin`], which writes the field count; each `put_*` writes one field.
#[derive(Debug)]
pub struct RowWriter<'a> {
    out: &'a mut BytesMut,
}

impl<'a> RowWriter<'a> {
    /// Starts a row of `fields` fields. Reserve space first so the writes below never grow
    /// the buffer in the middle of a row.
    #[inline]
    pub fn begin(out: &'a mut BytesMut, fields: i16) -> Self {
        out.put_i16(fields);
        RowWriter { out }
    }

    /// A `timestamptz` from Unix nanoseconds.
    #[inline]
    pub fn put_timestamp_ns(&mut self, ns: i64) -> &mut Self {
        self.out.put_i32(8);
        self.out.put_i64(pg_timestamp_from_unix_ns(ns));
        self
    }

    /// A `text` value.
    #[inline]
    pub fn put_text(&mut self, s: &[u8]) -> &mut Self {
        self.out.put_i32(s.len() as i32);
        self.out.put_slice(s);
        self
    }

    /// A `double precision` value (NaN and infinities included).
    #[inline]
    pub fn put_f64(&mut self, v: f64) -> &mut Self {
        self.out.put_i32(8);
        self.out.put_f64(v);
        self
    }

    /// A `bigint` value.
    #[inline]
    pub fn put_i64(&mut self, v: i64) -> &mut Self {
        self.out.put_i32(8);
        self.out.put_i64(v);
        self
    }

    /// A `"char"` / `char(1)` value holding one ASCII byte.
    #[inline]
    pub fn put_char(&mut self, c: u8) -> &mut Self {
        self.out.put_i32(1);
        self.out.put_u8(c);
        self
    }
}

/// Reads the fields of one row written by [`RowWriter`].
#[derive(Debug)]
pub struct RowReader<'a> {
    rest: &'a [u8],
}

impl<'a> RowReader<'a> {
    /// Starts reading `row`, checking that it has `fields` fields.
    pub fn begin(row: &'a [u8], fields: i16) -> Result<Self> {
        let mut r = RowReader { rest: row };
        let n = i16::from_be_bytes(r.take::<2>()?);
        if n != fields {
            return Err(Error::MalformedRow {
                reason: "unexpected field count",
            });
        }
        Ok(r)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.rest.len() < N {
            return Err(Error::MalformedRow {
                reason: "row is truncated",
            });
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    fn field(&mut self) -> Result<&'a [u8]> {
        let len = i32::from_be_bytes(self.take::<4>()?);
        let len = usize::try_from(len).map_err(|_| Error::MalformedRow {
            reason: "NULL or negative field length",
        })?;
        if self.rest.len() < len {
            return Err(Error::MalformedRow {
                reason: "field is truncated",
            });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let f = self.field()?;
        f.try_into().map_err(|_| Error::MalformedRow {
            reason: "fixed-size field has the wrong length",
        })
    }

    /// A `timestamptz`, as Unix nanoseconds (microsecond precision).
    pub fn timestamp_ns(&mut self) -> Result<i64> {
        Ok(unix_ns_from_pg_timestamp(i64::from_be_bytes(
            self.fixed::<8>()?,
        )))
    }

    /// A `text` value's bytes.
    pub fn text(&mut self) -> Result<&'a [u8]> {
        self.field()
    }

    /// A `double precision` value.
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.fixed::<8>()?))
    }

    /// A `bigint` value.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.fixed::<8>()?))
    }

    /// A one-byte `char` value.
    pub fn char(&mut self) -> Result<u8> {
        Ok(self.fixed::<1>()?[0])
    }

    /// Checks that the whole row was consumed.
    pub fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::MalformedRow {
                reason: "trailing bytes after the last field",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_the_documented_signature() {
        assert_eq!(&HEADER[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(HEADER.len(), 11 + 4 + 4);
    }

    #[test]
    fn timestamps() {
        assert_eq!(pg_timestamp_from_unix_ns(946_684_800_000_000_000), 0);
        assert_eq!(pg_timestamp_from_unix_ns(0), -PG_EPOCH_OFFSET_US);
        // Floor, not truncation toward zero, before the Unix epoch.
        assert_eq!(pg_timestamp_from_unix_ns(-1), -PG_EPOCH_OFFSET_US - 1);
        assert_eq!(
            unix_ns_from_pg_timestamp(pg_timestamp_from_unix_ns(1_719_878_400_123_456_789)),
            1_719_878_400_123_456_000
        );
        // The extremes stay finite and ordered.
        assert!(pg_timestamp_from_unix_ns(i64::MIN) < pg_timestamp_from_unix_ns(i64::MAX));
    }

    #[test]
    fn row_round_trip() {
        let mut buf = BytesMut::new();
        RowWriter::begin(&mut buf, 5)
            .put_timestamp_ns(42_000)
            .put_text(b"ES")
            .put_f64(f64::NEG_INFINITY)
            .put_i64(-7)
            .put_char(b'B');
        let mut r = RowReader::begin(&buf, 5).unwrap();
        assert_eq!(r.timestamp_ns().unwrap(), 42_000);
        assert_eq!(r.text().unwrap(), b"ES");
        assert_eq!(r.f64().unwrap(), f64::NEG_INFINITY);
        assert_eq!(r.i64().unwrap(), -7);
        assert_eq!(r.char().unwrap(), b'B');
        r.finish().unwrap();
    }

    #[test]
    fn reader_rejects_garbage() {
        assert!(RowReader::begin(&[0], 1).is_err());
        assert!(RowReader::begin(&[0, 2], 1).is_err());
        let mut r = RowReader::begin(&[0, 1, 0, 0, 0, 9, 1], 1).unwrap();
        assert!(r.text().is_err());
        let mut r = RowReader::begin(&[0, 1, 0xff, 0xff, 0xff, 0xff], 1).unwrap();
        assert!(r.text().is_err());
    }

    #[test]
    fn pieces_are_the_rows_bytes_cut_at_most_a_piece_long() {
        let row = vec![9u8; 1_000];
        let mut body = Vec::new();
        let mut row_ends = Vec::new();
        for k in 0..700u32 {
            body.extend_from_slice(&row[..(k as usize % 900) + 50]);
            row_ends.push(body.len() as u32);
        }
        let rows = CopyRows {
            body: bytes::Bytes::from(body),
            row_ends,
        };
        for range in [0..700, 3..650, 10..10, 699..700] {
            let pieces: Vec<_> = rows.pieces(range.clone()).collect();
            assert!(pieces
                .iter()
                .all(|p| !p.is_empty() && p.len() <= COPY_PIECE));
            assert_eq!(
                pieces.concat(),
                rows.slice(range.clone()).to_vec(),
                "{range:?}"
            );
        }
        assert!(
            rows.pieces(0..700).count() > 1,
            "a body of {} bytes",
            rows.body.len()
        );
    }
}

/// Rows encoded for a binary COPY body (no header or trailer) and where each row ends: what
/// a batch sends, sliced by row ranges when bad rows are isolated.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyRows {
    /// The rows, back to back.
    pub body: bytes::Bytes,
    /// End offset in `body` of each row.
    pub row_ends: Vec<u32>,
}

impl CopyRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.row_ends.len()
    }

    /// These rows without those at `drop` (ascending indexes), and each old row's new index
    /// (`u32::MAX` for a row left out).
    pub fn without(&self, drop: &[usize]) -> (CopyRows, Vec<u32>) {
        let mut body = bytes::BytesMut::with_capacity(self.body.len());
        let mut row_ends = Vec::with_capacity(self.len().saturating_sub(drop.len()));
        let mut new_index = Vec::with_capacity(self.len());
        for row in 0..self.len() {
            if drop.binary_search(&row).is_ok() {
                new_index.push(u32::MAX);
                continue;
            }
            new_index.push(row_ends.len() as u32);
            body.extend_from_slice(&self.slice(row..row + 1));
            row_ends.push(body.len() as u32);
        }
        let rows = CopyRows {
            body: body.freeze(),
            row_ends,
        };
        (rows, new_index)
    }

    /// The bytes of rows `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> bytes::Bytes {
        let end_of = |row: usize| match row {
            0 => 0,
            r => self.row_ends[r - 1] as usize,
        };
        self.body.slice(end_of(range.start)..end_of(range.end))
    }

    /// The bytes of rows `range` in pieces of at most [`COPY_PIECE`] bytes, cut anywhere (a
    /// COPY's data messages need not follow its rows). tokio-postgres copies each message
    /// into its connection's write buffer: sent whole, a batch grew that buffer to the
    /// largest batch's size on every writer connection, faulting in fresh pages on the way.
    pub fn pieces(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = bytes::Bytes> {
        let all = self.slice(range);
        (0..all.len())
            .step_by(COPY_PIECE)
            .map(move |at| all.slice(at..(at + COPY_PIECE).min(all.len())))
    }
}
