//! How the engine connects to PostgreSQL: every connection gets an application name (so an
//! operator can find it in `pg_stat_activity`), a connect timeout and TCP keepalives (so a
//! silently dead peer is noticed within about a minute instead of hours), and TLS as the
//! URL's `sslmode` and `sslrootcert` ask, the way libpq reads them (see [`crate::tls`]).

use std::fmt;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pg::url::split_tls_params;
use crate::tls::{rustls_cause, tls_error, SslMode, TlsSettings};
use crate::{Error, Result};

/// The settings every engine connection uses. [`ConnectPolicy::default`] is what the
/// engine applies; the fields are public so an embedding application can see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// How long establishing a connection may take (default 5 s).
    pub connect_timeout: Duration,
    /// Idle time before the first TCP keepalive probe (default 15 s).
    pub keepalives_idle: Duration,
}

impl Default for ConnectPolicy {
    fn default() -> Self {
        ConnectPolicy {
            connect_timeout: Duration::from_secs(5),
            keepalives_idle: Duration::from_secs(15),
        }
    }
}

impl ConnectPolicy {
    /// Applies the policy to `config`, naming the connection `application_name`. What the
    /// URL sets itself (`application_name`, `connect_timeout`, `keepalives_idle`) wins: an
    /// operator's setting for a replica or a pooler is never silently replaced.
    pub fn apply(&self, config: &mut Config, application_name: &str) {
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        // The driver has no "unset" for keepalives_idle: its default (2 hours) means unset.
        if config.get_keepalives_idle() == Config::new().get_keepalives_idle() {
            config.keepalives_idle(self.keepalives_idle);
        }
    }
}

/// A parsed database URL: the driver's config, and the TLS it asks for (the driver reads
/// `sslmode` only as far as `require` and not `sslrootcert` at all).
#[derive(Clone)]
pub struct PgUrl {
    pub(crate) config: Config,
    tls: TlsSettings,
    /// Built once from `tls` (the CA file is read at parse time); `None` for `disable`.
    connector: Option<MakeRustlsConnect>,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config may hold a password; show only where it points.
        f.debug_struct("PgUrl")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls)
            .finish()
    }
}

impl PgUrl {
    /// Parses a `postgres://` URL or a `key=value` string, `sslmode` (`disable`, `prefer`
    /// — the default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM
    /// file, or `system`) included. Reads the root certificate file.
    pub fn parse(url: &str) -> Result<PgUrl> {
        let (rest, mode, root_certs) = split_tls_params(url)?;
        let mut config: Config = rest
            .parse()
            .map_err(|e| Error::pg("parsing the database URL", e))?;
        let tls = TlsSettings {
            mode: mode.unwrap_or(SslMode::Prefer),
            root_certs,
        };
        config.ssl_mode(match tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let connector = match tls.mode {
            SslMode::Disable => None,
            _ => Some(MakeRustlsConnect::new(tls.client_config("sslrootcert")?)),
        };
        Ok(PgUrl {
            config,
            tls,
            connector,
        })
    }

    /// The TLS settings.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }
}

/// Parses a `postgres://` URL (or key=value string): see [`PgUrl::parse`].
pub(crate) fn parse_url(url: &str) -> Result<PgUrl> {
    PgUrl::parse(url)
}

/// Connects to `url` with the default [`ConnectPolicy`] and its TLS settings, naming the
/// connection `application_name`. For tools that need one plain client (replay, bench).
pub async fn connect_url(url: &str, application_name: &str) -> Result<Client> {
    connect(&PgUrl::parse(url)?, application_name, "connecting").await
}

/// Connects with the default [`ConnectPolicy`], naming the connection `application_name`;
/// `context` says what for in the error. The connection's task is spawned on the current
/// runtime and logs at debug level when it closes.
pub(crate) async fn connect(
    url: &PgUrl,
    application_name: &str,
    context: &'static str,
) -> Result<Client> {
    let mut config = url.config.clone();
    ConnectPolicy::default().apply(&mut config, application_name);
    let name = application_name.to_owned();
    let failed = |e: tokio_postgres::Error| match rustls_cause(&e) {
        Some(r) => tls_error(context, "PostgreSQL", r),
        None => Error::pg(context, e),
    };
    let client = match &url.connector {
        None => {
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(watch(connection, name));
            client
        }
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await.map_err(failed)?;
            tokio::spawn(watch(connection, name));
            client
        }
    };
    Ok(client)
}

/// Drives a connection, logging at debug level when it closes.
async fn watch<F>(connection: F, name: String)
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(connection = %name, error = %e, "PostgreSQL connection closed");
    }
}

/// True when `e` leaves a statement's outcome unknown or the session unusable: no server
/// error at all (the connection broke), or SQLSTATE class 08 (connection exception), 57
/// (operator intervention: admin shutdown, terminated backend) or 40 (transaction rollback:
/// serialization failure, deadlock).
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none_or(|db| {
        let c = db.code().code();
        c.starts_with("08") || c.starts_with("57") || c.starts_with("40")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_url, ConnectPolicy};

    #[test]
    fn the_policy_fills_in_what_the_url_leaves_out() {
        let mut c = parse_url("postgres://u@127.0.0.1/db").unwrap().config;
        ConnectPolicy::default().apply(&mut c, "christmas-reader");
        assert_eq!(c.get_application_name(), Some("christmas-reader"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(15));
    }

    #[test]
    fn what_the_url_sets_wins() {
        let mut c = parse_url(
            "postgres://u@127.0.0.1/db?application_name=ops&connect_timeout=30&keepalives_idle=60",
        )
        .unwrap()
        .config;
        ConnectPolicy::default().apply(&mut c, "christmas-reader");
        assert_eq!(c.get_application_name(), Some("ops"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(60));
    }
}
