//! Certificates for the TLS tests: a private CA and a server certificate for 127.0.0.1 and
//! localhost, made by `scripts/services.sh tls-certs` (openssl) as for the development
//! broker, and a CA that signed nothing the tests use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::host::run;

/// Makes `dir/ca.pem`, `dir/server.pem` and `dir/server.key` (a fresh CA of its own).
pub fn make_certs(dir: &Path) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    run(Command::new("bash").arg(script).arg("tls-certs").arg(dir))
}

/// The certificate of a CA that signed nothing the tests use.
pub fn unrelated_ca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/unrelated-ca.pem")
}
