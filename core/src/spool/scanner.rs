//! Reading entries back: a whole segment image at start, one entry for the writer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;

use super::format::{decode_payload, io, length_word, Entry, ENTRY_HEADER, MAGIC, MAX_PAYLOAD};
use super::shard_spool::{ShardSpool, SpoolRef};
use crate::error::{Error, Result};

/// Reads the entries of a whole segment image: the entries that are whole and valid, and
/// where the valid part ends (`bytes.len()` when all of it is). Never panics on any input.
pub fn scan_segment(bytes: &[u8]) -> (Vec<(u64, u32)>, usize) {
    let mut found = Vec::new();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return (found, 0);
    }
    let mut at = MAGIC.len();
    while bytes.len() - at >= ENTRY_HEADER {
        let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let (len, with_claims) = length_word(word);
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let start = at + ENTRY_HEADER;
        if len > MAX_PAYLOAD || bytes.len() - start < len as usize {
            break;
        }
        let payload = &bytes[start..start + len as usize];
        if crc32fast::hash(payload) != crc || decode_payload(payload, with_claims).is_err() {
            break;
        }
        found.push((at as u64, len));
        at = start + len as usize;
    }
    (found, at)
}

impl ShardSpool {
    /// Reads an entry back (for the writer).
    pub fn read(&self, at: &SpoolRef) -> Result<Entry> {
        self.counters.read_back.fetch_add(1, Ordering::Relaxed);
        let path = &*at.path;
        let mut f = File::open(path).map_err(|e| io("opening", path, e))?;
        f.seek(SeekFrom::Start(at.offset))
            .map_err(|e| io("seeking in", path, e))?;
        let mut buf = vec![0u8; ENTRY_HEADER + at.len as usize];
        f.read_exact(&mut buf).map_err(|e| io("reading", path, e))?;
        let (len, with_claims) =
            length_word(u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default()));
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
        let payload = &buf[ENTRY_HEADER..];
        if len != at.len || crc32fast::hash(payload) != crc {
            return Err(Error::Spool {
                reason: format!(
                    "entry at {} of {} changed on disk",
                    at.offset,
                    path.display()
                ),
            });
        }
        decode_payload(payload, with_claims)
    }
}
