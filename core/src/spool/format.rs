//! The on-disk format of a spool segment: a magic header, then entries of
//! `u32 LE payload length, u32 LE CRC-32 of the payload, payload (rkyv Entry)`.

use std::path::Path;

use crate::error::{Error, Result};

/// The first bytes of every segment file.
pub(super) const MAGIC: &[u8; 8] = b"CHSPOOL1";
/// Bytes before each entry's payload: its length and CRC-32.
pub(super) const ENTRY_HEADER: usize = 8;
/// Larger payloads are corruption (a batch is at most 1 GiB of COPY body).
pub(super) const MAX_PAYLOAD: u32 = (1 << 30) + (64 << 20);

/// One spooled batch, as archived on disk.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Entry {
    /// The ledger identity of the batch: stream, shard and sequence.
    pub stream: String,
    pub shard: u32,
    pub seq: u64,
    /// End offset in `body` of each row.
    pub row_ends: Vec<u32>,
    /// The rows, binary COPY encoded.
    pub body: Vec<u8>,
}

/// A spool I/O error with what was being done and to which file.
pub(super) fn io(context: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Spool {
        reason: format!("{context} {}: {e}", path.display()),
    }
}

/// The file name of the segment whose first entry is `first`.
pub(super) fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// Encodes one entry: header and archived payload.
pub(crate) fn encode_entry(entry: &Entry) -> Result<Vec<u8>> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(entry).map_err(|e| Error::Spool {
        reason: format!("archiving a batch: {e}"),
    })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| Error::Spool {
            reason: "batch too large for the spool".into(),
        })?;
    let mut out = Vec::with_capacity(ENTRY_HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one entry's payload (after its header was checked).
pub(super) fn decode_payload(payload: &[u8]) -> Result<Entry> {
    // rkyv needs aligned bytes; a file read gives none.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Entry, rkyv::rancor::Error>(&aligned).map_err(|e| Error::Spool {
        reason: format!("unreadable spool entry: {e}"),
    })
}
