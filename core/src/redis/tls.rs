//! TLS to Redis: a `rediss://` URL (or `rediss+sentinel://`, `rediss+cluster://`) with
//! libpq's words in its query: `sslmode` (`require`, `verify-ca`, `verify-full` — the
//! default) and `sslrootcert` (a PEM file of CA certificates, or `system`). The driver
//! ignores query parameters it does not know, so the URL travels whole and is read here
//! when a client is made (the CA file too).

use redis::cluster::ClusterClientBuilder;
use redis::{IntoConnectionInfo, TlsCertificates};

use crate::error::{Error, Result};
use crate::redis::error::redis_error;
use crate::tls::{percent_decode, RootCerts, SslMode, TlsSettings};

/// The field named in configuration errors.
const FIELD: &str = "redis_url";

/// The TLS settings of `url`: `None` for `redis://`.
pub(crate) fn settings(url: &str) -> Result<Option<TlsSettings>> {
    let tls = url.starts_with("rediss://") || url.starts_with("rediss+");
    let mut mode = None;
    let mut root_certs = None;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).map_err(|why| Error::config(FIELD, why))?;
        match k {
            "sslmode" => {
                mode = Some(
                    SslMode::parse(&v)
                        .filter(|m| !matches!(m, SslMode::Disable | SslMode::Prefer))
                        .ok_or_else(|| {
                            Error::config(
                                "sslmode",
                                format!(
                                "{v:?}: a rediss:// URL takes require, verify-ca or verify-full"
                            ),
                            )
                        })?,
                )
            }
            "sslrootcert" => root_certs = Some(RootCerts::parse(&v)),
            _ => {}
        }
    }
    if !tls {
        if mode.is_some() || root_certs.is_some() {
            return Err(Error::config(
                "sslmode",
                "sslmode and sslrootcert need a rediss:// URL (TLS)",
            ));
        }
        return Ok(None);
    }
    // The CA file is read when a client is made (so `check-config` can judge a deployment's
    // URL on a machine without its mounted files).
    Ok(Some(TlsSettings {
        mode: mode.unwrap_or(SslMode::VerifyFull),
        root_certs,
    }))
}

/// The query that carries `tls` on a URL this crate builds (a Sentinel's master, a
/// cluster's nodes): empty for none.
pub(crate) fn query(tls: Option<&TlsSettings>) -> String {
    let Some(tls) = tls else {
        return String::new();
    };
    let mut q = format!("?sslmode={}", tls.mode.as_str());
    match &tls.root_certs {
        Some(RootCerts::System) => q.push_str("&sslrootcert=system"),
        Some(RootCerts::File(path)) => {
            q.push_str("&sslrootcert=");
            for b in path.to_string_lossy().bytes() {
                if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
                    q.push(b as char);
                } else {
                    q.push_str(&format!("%{b:02X}"));
                }
            }
        }
        None => {}
    }
    q
}

/// The driver builds its rustls config on the process's default provider. When none is
/// installed, ring (what the engine builds) becomes it: the driver would pick it from
/// rustls's features anyway, and a build that also has aws-lc-rs would otherwise panic
/// there. An application's own default stays.
fn ensure_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The driver's TLS certificates for `tls` (the CA file's PEM; none: the system's roots).
fn certificates(tls: &TlsSettings) -> Result<TlsCertificates> {
    Ok(TlsCertificates {
        client_tls: None,
        root_cert: tls.root_pem("sslrootcert")?,
    })
}

/// A client for the one server at `url`, with its TLS settings applied.
pub(crate) fn node_client(url: &str) -> Result<redis::Client> {
    let parsing = |e| redis_error("parsing the Redis URL", e);
    let Some(tls) = settings(url)? else {
        return redis::Client::open(url).map_err(parsing);
    };
    ensure_provider();
    let mode = tls.effective_mode();
    // The driver's own spelling of "no verification".
    let url = match mode {
        SslMode::Require => format!("{}#insecure", url.split('#').next().unwrap_or(url)),
        _ => url.to_string(),
    };
    let info = url.as_str().into_connection_info().map_err(parsing)?;
    let client = redis::Client::build_with_tls(info, certificates(&tls)?).map_err(parsing)?;
    if mode != SslMode::VerifyCa {
        return Ok(client);
    }
    let info = client.get_connection_info().clone();
    let mut addr = info.addr().clone();
    addr.set_danger_accept_invalid_hostnames(true);
    redis::Client::open(info.set_addr(addr)).map_err(parsing)
}

/// A cluster client builder for `nodes` (URLs made by [`RedisTarget::parse`], sharing one
/// TLS setting), with that setting applied.
///
/// [`RedisTarget::parse`]: crate::redis::RedisTarget::parse
pub(crate) fn cluster_builder(nodes: &[String]) -> Result<ClusterClientBuilder> {
    let tls = match nodes.first() {
        Some(first) => settings(first)?,
        None => None,
    };
    let builder = ClusterClientBuilder::new(nodes.to_vec());
    let Some(tls) = tls else {
        return Ok(builder);
    };
    ensure_provider();
    Ok(match tls.effective_mode() {
        SslMode::Require => builder.tls(redis::TlsMode::Insecure),
        mode => builder
            .certs(certificates(&tls)?)
            .danger_accept_invalid_hostnames(mode == SslMode::VerifyCa),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rediss_verifies_fully_unless_told() {
        assert_eq!(settings("redis://h:6379/0").unwrap(), None);
        let s = settings("rediss://h:6380/0").unwrap().unwrap();
        assert_eq!((s.mode, s.root_certs), (SslMode::VerifyFull, None));
        let s = settings("rediss+cluster://h:7000?sslmode=require")
            .unwrap()
            .unwrap();
        assert_eq!(s.effective_mode(), SslMode::Require);
        let s = TlsSettings {
            mode: SslMode::VerifyCa,
            root_certs: Some(RootCerts::System),
        };
        assert_eq!(
            settings(&format!("rediss://h{}", query(Some(&s))))
                .unwrap()
                .unwrap(),
            s
        );
    }

    #[test]
    fn tls_words_on_a_plain_url_or_a_missing_ca_are_config_errors() {
        // The syntax is judged where the URL is parsed; the CA file when a client is made.
        assert!(settings("rediss://h?sslrootcert=/nonexistent/ca.pem").is_ok());
        for (url, want) in [
            ("redis://h?sslmode=require", "sslmode"),
            ("rediss://h?sslmode=disable", "sslmode"),
            ("rediss://h?sslrootcert=/nonexistent/ca.pem", "sslrootcert"),
        ] {
            match node_client(url) {
                Err(Error::Config { field, .. }) => assert_eq!(field, want, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
