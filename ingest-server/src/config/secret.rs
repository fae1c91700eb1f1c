//! [`Secret`]: a setting that may hold a password (a database, Redis or broker URL).

use serde::{Deserialize, Serialize, Serializer};

/// A string that `Debug`, `Display` and `Serialize` never show whole: a URL is shown with
/// its password (and any `password=` query parameter) replaced by `***`, anything else
/// as `***`. [`Secret::expose`] gives the value itself, for the code that connects.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value as it may be logged.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".into();
        };
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let authority = match authority.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => format!("{name}:***@{host}"),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let path = match path.split_once('?') {
            Some((p, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{p}?{}", query.join("&"))
            }
            None => path.to_string(),
        };
        format!("{scheme}://{authority}{path}")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<&String> for Secret {
    fn from(s: &String) -> Self {
        Secret(s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (value, shown) in [
            (
                "postgres://christmas:hunter2@db:5432/christmas?sslmode=require",
                "postgres://christmas:***@db:5432/christmas?sslmode=require",
            ),
            (
                "amqps://u:hunter2@broker:5671/%2f",
                "amqps://u:***@broker:5671/%2f",
            ),
            (
                "postgres://db/christmas?user=c&password=hunter2",
                "postgres://db/christmas?user=c&password=***",
            ),
            ("redis://h:6379/", "redis://h:6379/"),
            ("hunter2", "***"),
        ] {
            let s = Secret::from(value);
            assert_eq!(s.to_string(), shown);
            assert_eq!(format!("{s:?}"), format!("{shown:?}"));
            assert_eq!(serde_json::to_value(&s).unwrap(), shown);
            assert_eq!(s.expose(), value);
        }
        let parsed: Secret = serde_json::from_str("\"x:hunter2\"").unwrap();
        assert_eq!(parsed.expose(), "x:hunter2");
    }
}
