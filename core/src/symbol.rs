//! [`Symbol`]: an instrument name stored inline, so a tick never allocates.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::error::{Error, FieldError, Invalid, Result};

/// An instrument symbol of at most [`Symbol::MAX_LEN`] bytes of UTF-8, stored inline.
///
/// `Symbol` is `Copy` and 32 bytes; building one from a `&str` validates it once so the hot
/// path never checks or allocates again. A symbol is non-empty, at most 31 bytes, and has
/// no NUL byte (PostgreSQL `text` cannot hold one). Any other UTF-8 is accepted.
#[derive(Clone, Copy)]
pub struct Symbol {
    // Invariant: `bytes[..len]` is valid UTF-8 without NUL, `1 <= len <= MAX_LEN`, and
    // `bytes[len..]` is all zero (so the derived-by-hand `Eq`/`Hash` may compare whole arrays).
    len: u8,
    bytes: [u8; Symbol::MAX_LEN],
}

impl Symbol {
    /// The longest symbol in bytes.
    pub const MAX_LEN: usize = 31;

    /// Validates and stores `s`.
    pub fn new(s: &str) -> Result<Symbol> {
        Ok(Symbol::parse(s)?)
    }

    /// Validates and stores `s`, with a typed error that allocates nothing: the form for
    /// hot paths that report a bad symbol by field and reason.
    pub fn parse(s: &str) -> std::result::Result<Symbol, FieldError> {
        let raw = s.as_bytes();
        let refused = |reason| Err(FieldError::new("symbol", reason));
        if raw.is_empty() {
            return refused(Invalid::Empty);
        }
        if raw.len() > Self::MAX_LEN {
            return refused(Invalid::TooLong {
                len: raw.len(),
                max: Self::MAX_LEN,
            });
        }
        if raw.contains(&0) {
            return refused(Invalid::ContainsNul);
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(Symbol {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// Builds a symbol from raw bytes (as read back from a COPY row).
    pub fn from_utf8(raw: &[u8]) -> Result<Symbol> {
        let s =
            std::str::from_utf8(raw).map_err(|_| FieldError::new("symbol", Invalid::NotUtf8))?;
        Symbol::new(s)
    }

    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        // Invariant: `bytes[..len]` came from a `&str`, so this cannot fail.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The symbol's UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        debug_assert!((1..=Self::MAX_LEN).contains(&(self.len as usize)));
        &self.bytes[..self.len as usize]
    }

    /// The symbol's length in bytes.
    #[allow(clippy::len_without_is_empty)] // a Symbol is never empty
    pub fn len(&self) -> usize {
        self.len as usize
    }
}

impl PartialEq for Symbol {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.bytes == other.bytes
    }
}

impl Eq for Symbol {}

impl Hash for Symbol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Symbol {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Symbol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Symbol::new(s)
    }
}

impl TryFrom<&str> for Symbol {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Symbol::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<Symbol>(), 32);
    }

    #[test]
    fn accepts_edges() {
        assert_eq!(Symbol::new("A").unwrap().as_str(), "A");
        let long = "X".repeat(Symbol::MAX_LEN);
        assert_eq!(Symbol::new(&long).unwrap().len(), Symbol::MAX_LEN);
        assert_eq!(Symbol::new("日経225").unwrap().as_str(), "日経225");
    }

    #[test]
    fn rejects_bad() {
        assert!(matches!(
            Symbol::new(""),
            Err(Error::InvalidField {
                field: "symbol",
                ..
            })
        ));
        assert!(Symbol::new(&"X".repeat(Symbol::MAX_LEN + 1)).is_err());
        assert!(Symbol::new("A\0B").is_err());
        assert!(Symbol::from_utf8(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn parse_names_the_field_and_the_reason() {
        let reason = |s: &str| {
            Symbol::parse(s)
                .map(|_| ())
                .map_err(|e| (e.field, e.reason))
        };
        assert_eq!(reason(""), Err(("symbol", Invalid::Empty)));
        assert_eq!(reason("A\0B"), Err(("symbol", Invalid::ContainsNul)));
        assert_eq!(
            reason(&"X".repeat(32)),
            Err(("symbol", Invalid::TooLong { len: 32, max: 31 }))
        );
        // The library error keeps the text it always had.
        assert_eq!(
            Symbol::new(&"X".repeat(32)).unwrap_err().to_string(),
            "invalid `symbol`: 32 bytes is longer than 31"
        );
    }

    #[test]
    fn eq_and_hash_ignore_nothing_but_text() {
        use std::collections::hash_map::DefaultHasher;
        let a = Symbol::new("ESU4").unwrap();
        let b: Symbol = "ESU4".parse().unwrap();
        assert_eq!(a, b);
        let h = |s: &Symbol| {
            let mut h = DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(h(&a), h(&b));
        assert_ne!(a, Symbol::new("ESU5").unwrap());
    }
}
