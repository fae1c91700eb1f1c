//! [`RecordFraming`]: the decompressed DBN stream on its way to `dbn`'s decoder, checked
//! record by record, so that a cut or corrupt file is an error naming where, never a
//! silently shorter file.
//!
//! `dbn`'s decoder ends quietly in two cases that mean the file is damaged: a read that
//! ends inside a record (a `.dbn` cut mid-record), and zstd's "incomplete frame"
//! (`UnexpectedEof`, a `.dbn.zst` cut anywhere). It also trusts the record headers it is
//! given: it reads each record in place where the previous one ended, relying on 8-byte
//! alignment (a corrupt length byte misaligns the next record), and it panics on a record
//! shorter than its type. This reader refuses all of these before the decoder sees them.

use std::io::{self, Read};

use crate::sources::error::{SourceError, SourceErrorKind, SourcePosition};

/// The record types a file may hold, each with its size in bytes (the least a record of
/// that type may be; `ts_out` files append 8 bytes).
pub(super) type RecordTypes = &'static [(u8, usize)];

/// The decompressed DBN stream, checked record by record (see the module doc).
#[derive(Debug)]
pub(super) struct RecordFraming<R> {
    pub(super) inner: R,
    /// The record types the file's schema holds.
    pub(super) types: RecordTypes,
    /// Whether `inner` decompresses zstd (its errors then mean a corrupt file).
    pub(super) compressed: bool,
    /// Bytes from the next byte read to the next record's length byte.
    pub(super) to_next: u64,
    /// The last read ended on a record's length byte (`length`): its type is the next byte.
    pub(super) rtype_next: bool,
    /// Bytes handed on so far: the offset of the next byte read.
    pub(super) offset: u64,
    /// Records whose length byte was passed.
    pub(super) records: u64,
    /// Where the last record started and how long it is.
    pub(super) last_start: u64,
    pub(super) last_len: u64,
    /// Why the stream was refused, once it was: it ends there.
    pub(super) refused: Option<SourceError>,
}

impl<R> RecordFraming<R> {
    /// A stream whose first record starts at byte `first_record`.
    pub(super) fn new(inner: R, types: RecordTypes, compressed: bool, first_record: u64) -> Self {
        RecordFraming {
            inner,
            types,
            compressed,
            to_next: first_record,
            rtype_next: false,
            offset: 0,
            records: 0,
            last_start: 0,
            last_len: 0,
            refused: None,
        }
    }

    /// Why a record of `len_words` 4-byte words and type `rtype` is refused, if it is.
    fn check(&self, len_words: u8, rtype: Option<u8>) -> Option<String> {
        let len = usize::from(len_words) * 4;
        if len < 16 || len % 8 != 0 {
            return Some(format!(
                "The file is corrupt: a record length of {len} bytes (it must be a multiple of \
                 8, at least 16)."
            ));
        }
        let rtype = rtype?;
        match self.types.iter().find(|(t, _)| *t == rtype) {
            None => Some(format!(
                "The file is corrupt or mixes schemas: a record of type {rtype:#04x}, which \
                 its schema does not hold (it holds {}).",
                self.types
                    .iter()
                    .map(|(t, _)| format!("{t:#04x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(&(_, size)) if len < size => Some(format!(
                "The file is corrupt: a record of type {rtype:#04x} is {len} bytes long, \
                 shorter than the {size} bytes of its type."
            )),
            Some(_) => None,
        }
    }

    /// Refuses the stream from here on: `kind` at record `record` starting at `byte`.
    fn refuse(&mut self, kind: SourceErrorKind, byte: u64, record: u64, why: String) -> io::Error {
        let e = SourceError::at(
            kind,
            SourcePosition {
                record,
                byte: Some(byte),
            },
            why,
        );
        let io = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        self.refused = Some(e);
        io
    }

    /// Why the stream's end is early, if it is.
    fn check_end(&mut self) -> io::Result<usize> {
        if self.to_next == 0 && !self.rtype_next {
            return Ok(0);
        }
        let why = if self.records == 0 {
            "The file is truncated: it ends inside its metadata header.".to_string()
        } else {
            let have = self.offset - self.last_start;
            format!(
                "The file is truncated: it ends inside its last record ({have} of its {} bytes \
                 are present).",
                self.last_len
            )
        };
        let (start, record) = (self.last_start, self.records.saturating_sub(1));
        Err(self.refuse(SourceErrorKind::Truncated, start, record, why))
    }

    /// An error of the reader under this one.
    fn inner_error(&mut self, e: io::Error) -> io::Error {
        let (byte, record) = (self.offset, self.records);
        if e.kind() == io::ErrorKind::UnexpectedEof && self.compressed {
            let why = "The file is truncated: its zstd stream ends before the end of its last \
                       frame (`zstd -t` reports a premature end)."
                .to_string();
            return self.refuse(SourceErrorKind::Truncated, byte, record, why);
        }
        let (kind, why) = if self.compressed {
            (
                SourceErrorKind::Corrupt,
                format!("The file's zstd stream cannot be decompressed: {e}."),
            )
        } else {
            (
                SourceErrorKind::Io,
                format!("The file could not be read: {e}."),
            )
        };
        self.refuse(kind, byte, record, why)
    }
}

impl<R: Read> Read for RecordFraming<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.refused {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        let n = match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => return self.check_end(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.inner_error(e)),
        };
        if self.rtype_next && n > 0 {
            self.rtype_next = false;
            let len = (self.last_len / 4) as u8;
            if let Some(why) = self.check(len, Some(buf[0])) {
                let (start, record) = (self.last_start, self.records - 1);
                return Err(self.refuse(SourceErrorKind::Corrupt, start, record, why));
            }
        }
        let mut next = self.to_next;
        while next < n as u64 {
            let at = next as usize;
            let start = self.offset + next;
            if let Some(why) = self.check(buf[at], buf[..n].get(at + 1).copied()) {
                let e = self.refuse(SourceErrorKind::Corrupt, start, self.records, why);
                self.offset += next;
                // The records before it are whole: hand them on first.
                return if at > 0 { Ok(at) } else { Err(e) };
            }
            self.records += 1;
            self.last_start = start;
            self.last_len = u64::from(buf[at]) * 4;
            self.rtype_next = at + 1 == n;
            next += self.last_len;
        }
        self.to_next = next - n as u64;
        self.offset += n as u64;
        Ok(n)
    }
}
