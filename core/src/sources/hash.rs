//! [`ContentHash`]: a file's identity, the SHA-256 of its bytes as stored.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::sources::error::{SourceError, SourceErrorKind};

/// The SHA-256 of a file's bytes as stored (of the compressed bytes for `.dbn.zst`): the
/// same file under any name has the same hash, and a changed byte changes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// The hash of the file at `path`, streamed through in 1 MiB reads.
    pub fn of_file(path: &Path) -> Result<Self, SourceError> {
        let io = |e: std::io::Error| {
            SourceError::new(
                SourceErrorKind::Io,
                format!("Could not read {}: {e}.", path.display()),
            )
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(ContentHash(hasher.finalize().into()));
            }
            hasher.update(&buf[..n]);
        }
    }

    /// Lower-case hex, 64 characters: how a producer id names the file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_a_file_is_the_hash_of_its_bytes() {
        let path = std::env::temp_dir().join(format!("christmas-hash-{}", std::process::id()));
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let of_file = ContentHash::of_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(of_file, ContentHash::of_bytes(&bytes));
        assert_eq!(
            ContentHash::of_bytes(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
