//! The TLS parameters of a PostgreSQL connection string that the driver does not read
//! (`sslrootcert`, and `sslmode`'s `verify-ca` and `verify-full`): taken out of the URL
//! (`postgres://…?sslmode=…&sslrootcert=…`) or the `key=value` string before the rest goes
//! to the driver.

use crate::error::{Error, Result};
use crate::tls::{percent_decode, RootCerts, SslMode};

/// `url` without `sslmode` and `sslrootcert`, and what they said.
pub(crate) fn split_tls_params(url: &str) -> Result<(String, Option<SslMode>, Option<RootCerts>)> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => {
                mode = Some(SslMode::parse(value).ok_or_else(|| {
                    Error::config(
                        "sslmode",
                        format!(
                            "{value:?}: expected disable, prefer, require, verify-ca or verify-full"
                        ),
                    )
                })?);
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(RootCerts::parse(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let (k, v) = (
                        percent_decode(k).map_err(bad_url)?,
                        percent_decode(v).map_err(bad_url)?,
                    );
                    if !take(&k, &v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (k, v) in key_values(url)? {
            if !take(&k, &v)? {
                kept.push(format!(
                    "{k}='{}'",
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

fn bad_url(reason: &str) -> Error {
    Error::config("database_url", reason)
}

/// The pairs of a libpq `key=value` string: spaces around `=` allowed, values in single
/// quotes with `\'` and `\\` escapes.
fn key_values(s: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(bad_url(&format!("expected `=` after {key:?}")));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(it.next()),
                    Some(c) => value.push(c),
                    None => return Err(bad_url("unterminated quoted value")),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_leave_the_url_and_the_rest_stays() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u:p@db:5432/md?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/md?application_name=x");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root, Some(RootCerts::File("/etc/ca.pem".into())));

        let (rest, mode, root) =
            split_tls_params("postgres://db/md?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(rest, "postgres://db/md");
        assert_eq!(
            (mode, root),
            (Some(SslMode::Require), Some(RootCerts::System))
        );

        let (rest, mode, root) = split_tls_params("postgres://db/md").unwrap();
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://db/md", None, None)
        );
    }

    #[test]
    fn key_value_strings_too() {
        let (rest, mode, root) = split_tls_params(
            "host=db user=u password='it\\'s' sslmode = verify-ca sslrootcert='/a b/ca.pem'",
        )
        .unwrap();
        assert_eq!(rest, "host='db' user='u' password='it\\'s'");
        assert_eq!(mode, Some(SslMode::VerifyCa));
        assert_eq!(root, Some(RootCerts::File("/a b/ca.pem".into())));
        // What is left still parses, to the same password.
        let c: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(c.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn an_unknown_sslmode_is_a_config_error() {
        for url in ["postgres://db/md?sslmode=allow", "host=db sslmode=verify"] {
            match split_tls_params(url) {
                Err(Error::Config { field, .. }) => assert_eq!(field, "sslmode"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
