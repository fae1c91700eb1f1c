//! The on-disk format of a spool segment: a magic header, then entries of
//! `u32 LE payload length, u32 LE CRC-32 of the payload, payload (rkyv Entry)`.
//!
//! The length word's top bit says which entry layout follows: set, an [`Entry`] with its
//! producer claims; clear, the first layout ([`EntryV1`], no claims), still read so a spool
//! written before claims existed recovers after an upgrade.

use std::path::Path;

use crate::error::{Error, Result};

/// The first bytes of every segment file.
pub(super) const MAGIC: &[u8; 8] = b"CHSPOOL1";
/// Bytes before each entry's payload: its length and CRC-32.
pub(super) const ENTRY_HEADER: usize = 8;
/// Larger payloads are corruption (a batch is at most 1 GiB of COPY body).
pub(super) const MAX_PAYLOAD: u32 = (1 << 30) + (64 << 20);
/// Set in the length word of an entry in the [`Entry`] layout (with claims).
pub(super) const WITH_CLAIMS: u32 = 1 << 31;

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
    /// What the batch claims for named producers' rows, so a batch recovered after a crash
    /// still leaves out a producer's resends (empty without producer rows).
    pub claims: Vec<SpooledClaim>,
}

/// A batch's claim for one producer and symbol, as spooled.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SpooledClaim {
    /// The producer id.
    pub producer: String,
    /// The symbol.
    pub symbol: String,
    /// The batch rows that are the producer's ticks of that symbol, ascending.
    pub rows: Vec<u32>,
    /// Their sequence numbers, ascending.
    pub seqs: Vec<u64>,
}

/// The first entry layout, without claims.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct EntryV1 {
    pub stream: String,
    pub shard: u32,
    pub seq: u64,
    pub row_ends: Vec<u32>,
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
    out.extend_from_slice(&(len | WITH_CLAIMS).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The payload length and layout of an entry's length word: `(length, with claims)`.
pub(super) fn length_word(word: u32) -> (u32, bool) {
    (word & !WITH_CLAIMS, word & WITH_CLAIMS != 0)
}

/// Decodes one entry's payload (after its header was checked), in the layout its length
/// word named.
pub(super) fn decode_payload(payload: &[u8], with_claims: bool) -> Result<Entry> {
    // rkyv needs aligned bytes; a file read gives none.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let unreadable = |e: rkyv::rancor::Error| Error::Spool {
        reason: format!("unreadable spool entry: {e}"),
    };
    if with_claims {
        return rkyv::from_bytes::<Entry, rkyv::rancor::Error>(&aligned).map_err(unreadable);
    }
    let v1 = rkyv::from_bytes::<EntryV1, rkyv::rancor::Error>(&aligned).map_err(unreadable)?;
    Ok(Entry {
        stream: v1.stream,
        shard: v1.shard,
        seq: v1.seq,
        row_ends: v1.row_ends,
        body: v1.body,
        claims: Vec::new(),
    })
}
