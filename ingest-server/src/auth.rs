//! API keys: `Authorization: Bearer <key>`, stored as SHA-256 hashes, each with scopes.
//!
//! `christmas-ingest hash-key <key>` prints the hash to put in the config.

use anyhow::{bail, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/ticks`, the TCP listener.
    Ingest,
    /// The order endpoint.
    Orders,
    /// Market-data reads (when `auth_reads` is on).
    Read,
}

impl Scope {
    /// The scope's name as it is written in a key's configuration (`ingest`, `orders`, `read`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Orders => "orders",
            Scope::Read => "read",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "orders" => Ok(Scope::Orders),
            "read" => Ok(Scope::Read),
            _ => bail!("{s:?} is not one of ingest, orders, read"),
        }
    }
}

/// One configured key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A name for logs (never the key).
    pub name: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// SHA-256 of `key`, lower-case hex.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ApiKey {
    /// `name:sha256hex:scope+scope` (the `CHRISTMAS_API_KEYS` form).
    pub fn parse(s: &str) -> Result<ApiKey> {
        let mut parts = s.trim().splitn(3, ':');
        let (Some(name), Some(sha256), Some(scopes)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("expected name:sha256hex:scope+scope");
        };
        let key = ApiKey {
            name: name.to_string(),
            sha256: sha256.to_ascii_lowercase(),
            scopes: scopes.split('+').map(str::parse).collect::<Result<_>>()?,
        };
        key.validate()?;
        Ok(key)
    }

    /// The hash is 64 hex digits and there is a name and a scope.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            bail!("name: required");
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("sha256: must be 64 hex digits (christmas-ingest hash-key <key> prints it)");
        }
        if self.scopes.is_empty() {
            bail!("scopes: at least one of ingest, orders, read");
        }
        Ok(())
    }
}

/// The outcome of checking a request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Allowed (the key's name, or `None` when no key was needed).
    Allowed(Option<String>),
    /// No key, or an unknown one: 401.
    Unauthenticated,
    /// A known key without the scope: 403.
    Forbidden(String),
}

/// The token of a `Bearer <token>` header value; the scheme is case-insensitive (RFC 7235).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Checks `authorization` (the header's value) against `keys` for `scope`.
pub fn check(keys: &[ApiKey], authorization: Option<&str>, scope: Scope) -> Access {
    let Some(token) = authorization.and_then(bearer_token) else {
        return Access::Unauthenticated;
    };
    let hash = hash_key(token.trim());
    // Compare every key in full, so timing does not tell which prefix matched.
    let found = keys.iter().fold(None, |found, k| {
        let same = k.sha256.len() == hash.len()
            && k.sha256
                .bytes()
                .zip(hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Some(k)
        } else {
            found
        }
    });
    match found {
        None => Access::Unauthenticated,
        Some(k) if k.scopes.contains(&scope) => Access::Allowed(Some(k.name.clone())),
        Some(k) => Access::Forbidden(k.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_hash_and_scope() {
        let keys = vec![
            ApiKey::parse(&format!("feed:{}:ingest", hash_key("s3cret"))).unwrap(),
            ApiKey::parse(&format!("desk:{}:orders+read", hash_key("other"))).unwrap(),
        ];
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(
            check(&keys, Some("Bearer s3cret"), Scope::Ingest),
            Access::Allowed(Some("feed".into()))
        );
        assert_eq!(
            check(&keys, Some("Bearer s3cret"), Scope::Orders),
            Access::Forbidden("feed".into())
        );
        assert_eq!(
            check(&keys, Some("bEARER s3cret"), Scope::Ingest),
            Access::Allowed(Some("feed".into()))
        );
        assert_eq!(
            check(&keys, Some("Bearer nope"), Scope::Ingest),
            Access::Unauthenticated
        );
        assert_eq!(check(&keys, None, Scope::Ingest), Access::Unauthenticated);
        assert_eq!(
            check(&keys, Some("Basic s3cret"), Scope::Ingest),
            Access::Unauthenticated
        );
        assert!(ApiKey::parse("x:abc:ingest").is_err());
        assert!(ApiKey::parse(&format!("x:{}:write", hash_key("k"))).is_err());
        assert!(!format!("{:?}", keys[0]).contains(&hash_key("s3cret")));
    }
}
