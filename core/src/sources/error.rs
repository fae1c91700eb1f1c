//! [`SourceError`]: why a file cannot be read on, and where it stopped.

use std::fmt;

/// What kind of failure a [`SourceError`] is: match on this, not on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// The file could not be opened or read (not found, no permission, an I/O error).
    Io,
    /// The file ends before its last record does: a `.zst` stream cut short, or a DBN
    /// record cut in the middle.
    Truncated,
    /// The bytes are not what the format says (a bad record length or type, a zstd
    /// checksum or frame error, a bad metadata header).
    Corrupt,
    /// A well-formed file of a kind replay does not read (an OHLCV or definition schema, a
    /// DBN version it does not know, an unknown CSV layout).
    Unsupported,
    /// A CSV header that names no time, price or bid/ask column, an empty file, or a
    /// separator other than the comma.
    Header,
    /// A record or line whose field cannot be read or is refused by its kind's `validate`.
    Field,
}

/// Where in the file a [`SourceError`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SourcePosition {
    /// 0-based index of the record (DBN) or data line (CSV, header not counted) that failed:
    /// the records before it were read whole.
    pub record: u64,
    /// Byte offset where it starts, when the reader knows: of the decompressed stream for
    /// `.dbn.zst`, of the file otherwise.
    pub byte: Option<u64>,
}

/// A file that cannot be read on: its kind, where, and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// What kind of failure it is.
    pub kind: SourceErrorKind,
    /// Where it happened, when the reader knows.
    pub at: Option<SourcePosition>,
    /// What is wrong, and what to do when there is something to do: a sentence.
    pub reason: String,
}

impl SourceError {
    /// A `kind` failure at no particular place.
    pub fn new(kind: SourceErrorKind, reason: impl fmt::Display) -> Self {
        SourceError {
            kind,
            at: None,
            reason: reason.to_string(),
        }
    }

    /// A `kind` failure at `at`.
    pub fn at(kind: SourceErrorKind, at: SourcePosition, reason: impl fmt::Display) -> Self {
        SourceError {
            kind,
            at: Some(at),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        match self.at {
            Some(SourcePosition {
                record,
                byte: Some(byte),
            }) => write!(f, " (record {record}, at byte {byte})"),
            Some(SourcePosition { record, byte: None }) => write!(f, " (record {record})"),
            None => Ok(()),
        }
    }
}
