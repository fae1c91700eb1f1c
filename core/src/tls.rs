//! TLS to PostgreSQL and Redis, in the words libpq users know: a [`SslMode`] (`disable`,
//! `prefer`, `require`, `verify-ca`, `verify-full`) and a root certificate file
//! (`sslrootcert`). Both stores take the same two settings in their URL
//! (`postgres://…?sslmode=verify-full&sslrootcert=/etc/ca.pem`,
//! `rediss://…?sslmode=verify-full&sslrootcert=/etc/ca.pem`).
//!
//! rustls on the ring provider (the one the AMQP client already builds); a failed
//! handshake becomes [`Error::Tls`] with a [`TlsErrorKind`] read once, here, from rustls's
//! own error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

use crate::error::{Error, Result, TlsErrorKind};

/// How a connection uses TLS and what it checks, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain otherwise
    /// (PostgreSQL's default).
    Prefer,
    /// TLS or no connection; the certificate is not checked, unless a root certificate file
    /// is given (then as `verify-ca`, as libpq does).
    Require,
    /// TLS, and the server's certificate chains to a trusted root; its host name is not
    /// checked.
    VerifyCa,
    /// TLS, a trusted chain, and a certificate naming the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling (`verify-full`, …).
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True when the server's certificate is checked against trusted roots.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where trusted root certificates come from (libpq's `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RootCerts {
    /// The system's trust store (`sslrootcert=system`, and the default).
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

impl RootCerts {
    /// `system` or a file's path.
    pub fn parse(s: &str) -> RootCerts {
        if s == "system" {
            RootCerts::System
        } else {
            RootCerts::File(PathBuf::from(s))
        }
    }
}

/// The TLS settings of one store's URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// What TLS is used for and what is checked.
    pub mode: SslMode,
    /// The trusted roots; `None`: the system's. Given with `require`, it makes the mode
    /// `verify-ca` (as in libpq).
    pub root_certs: Option<RootCerts>,
}

impl TlsSettings {
    /// The mode in force: `require` with a root certificate file checks the chain.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_certs) {
            (SslMode::Require, Some(RootCerts::File(_))) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    /// The rustls client config these settings call for; reads the root certificate file.
    /// `field` names the setting in a [`Error::Config`] about that file.
    pub(crate) fn client_config(&self, field: &'static str) -> Result<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(field, format!("no TLS protocol version to offer: {e}")))?;
        let mode = self.effective_mode();
        if !mode.verifies() {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth());
        }
        let roots = Arc::new(self.roots(field)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| Error::config(field, format!("no usable root certificate: {e}")))?;
        let config = if mode == SslMode::VerifyCa {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
                .with_no_client_auth()
        } else {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        };
        Ok(config)
    }

    /// The PEM of the root certificate file, when one is named (Redis's client reads PEM).
    pub(crate) fn root_pem(&self, field: &'static str) -> Result<Option<Vec<u8>>> {
        match &self.root_certs {
            Some(RootCerts::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::config(field, format!("reading {}: {e}", path.display()))
                })?;
                // Parsed now, so a file that is not PEM certificates is refused here.
                roots_from_pem(&pem, path, field)?;
                Ok(Some(pem))
            }
            _ => Ok(None),
        }
    }

    fn roots(&self, field: &'static str) -> Result<RootCertStore> {
        match &self.root_certs {
            Some(RootCerts::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::config(field, format!("reading {}: {e}", path.display()))
                })?;
                roots_from_pem(&pem, path, field)
            }
            None | Some(RootCerts::System) => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(Error::config(
                        field,
                        "the system has no trusted root certificates; name a CA file",
                    ));
                }
                Ok(roots)
            }
        }
    }
}

fn roots_from_pem(pem: &[u8], path: &Path, field: &'static str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            Error::config(
                field,
                format!("{}: not PEM certificates: {e}", path.display()),
            )
        })?;
        roots.add(cert).map_err(|e| {
            Error::config(
                field,
                format!("{}: not a CA certificate: {e}", path.display()),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(Error::config(
            field,
            format!("{}: holds no certificate", path.display()),
        ));
    }
    Ok(roots)
}

/// `%XX` escapes decoded (a URL's query).
pub(crate) fn percent_decode(s: &str) -> std::result::Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the query")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the query is not UTF-8")
}

/// The rustls error somewhere in `e`'s chain of causes. TLS connectors report it inside
/// an `io::Error`, whose `source()` skips it, and the Redis driver holds that `io::Error`
/// in an `Arc`, so each link is looked into as well as followed.
pub(crate) fn rustls_cause<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    fn within<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let io = e.downcast_ref::<std::io::Error>()?;
        io.get_ref()?.downcast_ref::<rustls::Error>()
    }
    loop {
        if let Some(r) = within(e) {
            return Some(r);
        }
        if let Some(shared) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            if let Some(r) = within(&**shared) {
                return Some(r);
            }
        }
        e = e.source()?;
    }
}

/// What kind of TLS failure `e` is.
pub(crate) fn classify(e: &rustls::Error) -> TlsErrorKind {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsErrorKind::HostMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsErrorKind::Expired,
            _ => TlsErrorKind::UntrustedCertificate,
        },
        _ => TlsErrorKind::Handshake,
    }
}

/// A TLS failure of `store` while doing `context`.
pub(crate) fn tls_error(context: &'static str, store: &'static str, e: &rustls::Error) -> Error {
    Error::Tls {
        store,
        context,
        kind: classify(e),
        reason: e.to_string(),
    }
}

/// `require` and `prefer`: encrypted, the certificate unchecked (libpq's behaviour). The
/// handshake's signatures are still checked, so the peer holds the key it presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the name in the certificate is not
/// compared with the host.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(e) if classify(&e) == TlsErrorKind::HostMismatch => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_with_a_ca_file_is_verify_ca() {
        let s = TlsSettings {
            mode: SslMode::Require,
            root_certs: Some(RootCerts::parse("/etc/ca.pem")),
        };
        assert_eq!(s.effective_mode(), SslMode::VerifyCa);
        let s = TlsSettings {
            mode: SslMode::Require,
            root_certs: None,
        };
        assert_eq!(s.effective_mode(), SslMode::Require);
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(m).unwrap().as_str(), m);
        }
        assert_eq!(SslMode::parse("allow"), None);
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_config_error() {
        let s = TlsSettings {
            mode: SslMode::VerifyFull,
            root_certs: Some(RootCerts::File("/nonexistent/ca.pem".into())),
        };
        match s.client_config("sslrootcert") {
            Err(Error::Config { field, .. }) => assert_eq!(field, "sslrootcert"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let dir = std::env::temp_dir().join(format!("christmas-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let s = TlsSettings {
            mode: SslMode::VerifyFull,
            root_certs: Some(RootCerts::File(empty)),
        };
        match s.client_config("sslrootcert") {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, "sslrootcert");
                assert!(reason.contains("no certificate"), "{reason}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
