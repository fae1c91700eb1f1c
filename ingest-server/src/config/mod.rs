//! [`DaemonConfig`]: a TOML file plus environment overrides, validated at start.
//!
//! Every key has a default; a file may set any of them (unknown keys are refused). Keys
//! live in tables by what they tune: `[http]`, `[tcp]`, `[ops]`, `[orders]`, `[spool]`,
//! `[fanout]`, `[stream]`, `[web]` ([`sections`]); the URLs, `shards`, `linger_ms`,
//! `api_keys` and a few more stay at the top. Then the environment wins, one variable per
//! key: `CHRISTMAS_<TABLE>_<KEY>` (`CHRISTMAS_SPOOL_DIR`), `CHRISTMAS_<KEY>` at the top
//! (`CHRISTMAS_SHARDS`), and `DATABASE_URL`, `READ_DATABASE_URL`, `REDIS_URL` for the URLs
//! ([`sources`]). Settings that may hold a password are [`Secret`]s: `Debug` never shows it.
//!
//! The flat keys of the previous release (`spool_dir`, `order_connections`, …) are still
//! read, each as its key in a table, with a warning naming that key.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::auth::{ApiKey, Scope};

mod secret;
pub mod sections;
pub mod sources;

pub use secret::Secret;
pub use sections::{
    FanoutSettings, HttpSettings, OpsSettings, OrderSettings, SpoolSettings, StreamSettings,
    TcpSettings, WebSettings,
};

/// The daemon's settings. Field docs are the user documentation; each table (`[http]`,
/// `[orders]`, …) is one of the structs below.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// PostgreSQL to write to. Required. TLS as libpq reads it: `sslmode` (`disable`,
    /// `prefer` — the default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert`
    /// (a CA file, or `system`), e.g. `postgres://…/christmas?sslmode=verify-full&sslrootcert=/etc/ca.pem`.
    pub database_url: Option<Secret>,
    /// PostgreSQL to read market data and orders from (a replica); default:
    /// `database_url`. While it is down or lags more than `replica_max_lag_ms`, reads go to
    /// the primary.
    pub read_database_url: Option<Secret>,
    /// How far the replica may lag before reads go to the primary (default 5,000 ms).
    pub replica_max_lag_ms: u64,
    /// Redis for the fan-out and the latest-tick cache; unset turns both off. `rediss://…`
    /// (and `rediss+sentinel://`, `rediss+cluster://`) over TLS, verifying the certificate
    /// against `?sslrootcert=/etc/ca.pem` or the system's roots; `?sslmode=require` skips
    /// the check, `verify-ca` the host name.
    pub redis_url: Option<Secret>,
    /// Shards per record kind.
    pub shards: usize,
    /// How long a batch's first row waits before the batch is sealed, when no sealed batch
    /// is already waiting for its writer (default 40 ms; the library's default is 5 ms).
    /// Every commit costs CPU whatever its size (PostgreSQL's transaction and WAL flush,
    /// the spool's fsync), so a daemon sealing every 5 ms spent about a sixth of a 2-core
    /// machine on commits at half its ingest ceiling; at 40 ms it has that back
    /// (`docs/operations.md`, "Batching"). `ack=committed` answers wait up to this much
    /// longer at low rates; `ack=durable` answers do not (their batches seal within 5 ms).
    pub linger_ms: u64,
    /// `/ready` fails when any ring is fuller than this fraction (default 0.8).
    pub ready_ring_fraction: f64,
    /// How long shutdown may take to drain and flush (default 30 s).
    pub shutdown_timeout_ms: u64,
    /// Whether market-data reads need a key with the `read` scope (default false: open).
    pub auth_reads: bool,
    /// API keys; none configured means no authentication (a warning is logged).
    #[serde(skip_serializing)]
    pub api_keys: Vec<ApiKey>,
    /// `[http]`: the HTTP listener.
    pub http: HttpSettings,
    /// `[tcp]`: the TCP ingest listener.
    pub tcp: TcpSettings,
    /// `[ops]`: the operations listener.
    pub ops: OpsSettings,
    /// `[orders]`: the order desk.
    pub orders: OrderSettings,
    /// `[spool]`: the on-disk spool.
    pub spool: SpoolSettings,
    /// `[fanout]`: the Redis fan-out.
    pub fanout: FanoutSettings,
    /// `[stream]`: `GET /api/stream` clients.
    pub stream: StreamSettings,
    /// `[web]`: the page served at `/`.
    pub web: WebSettings,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            database_url: None,
            read_database_url: None,
            replica_max_lag_ms: 5_000,
            redis_url: None,
            shards: 2,
            linger_ms: 40,
            ready_ring_fraction: 0.8,
            shutdown_timeout_ms: 30_000,
            auth_reads: false,
            api_keys: Vec::new(),
            http: HttpSettings::default(),
            tcp: TcpSettings::default(),
            ops: OpsSettings::default(),
            orders: OrderSettings::default(),
            spool: SpoolSettings::default(),
            fanout: FanoutSettings::default(),
            stream: StreamSettings::default(),
            web: WebSettings::default(),
        }
    }
}

impl DaemonConfig {
    /// Reads `path` (if any) and applies the environment, logging a warning for each old
    /// key used. Call [`DaemonConfig::validate`] after any further overrides (flags).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?,
            ),
            None => None,
        };
        let (config, warnings) = sources::read(text.as_deref(), |k| std::env::var(k).ok())
            .with_context(|| match path {
                Some(p) => format!("in config file {} or the environment", p.display()),
                None => "in the environment".into(),
            })?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(config)
    }

    /// The config a TOML tree describes (after old keys are moved and the environment
    /// applied).
    fn deserialize_tree(tree: toml::Table) -> Result<Self> {
        Ok(DaemonConfig::deserialize(toml::Value::Table(tree))?)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.database_url.is_none() {
            bail!("database_url: required (set DATABASE_URL or database_url in the config file)");
        }
        let addr = |field: &str, a: &str| {
            a.parse::<std::net::SocketAddr>()
                .map(|_| ())
                .with_context(|| format!("{field}: {a:?} is not host:port"))
        };
        addr("http.addr", &self.http.addr)?;
        if !self.tcp.addr.is_empty() {
            addr("tcp.addr", &self.tcp.addr)?;
        }
        if !self.ops.addr.is_empty() {
            addr("ops.addr", &self.ops.addr)?;
        }
        if let Some(r) = &self.redis_url {
            christmas_core::fanout::RedisTarget::parse(r.expose()).context("redis_url")?;
        }
        self.validate_orders()?;
        self.fanout
            .format
            .parse::<christmas_core::fanout::PayloadFormat>()
            .context("fanout.format")?;
        if self.fanout.round_interval_ms > 1_000 {
            bail!("fanout.round_interval_ms: must be at most 1,000");
        }
        if (1..1_000).contains(&self.fanout.key_ttl_ms) {
            bail!("fanout.key_ttl_ms: must be 0 (no expiry) or at least 1,000");
        }
        if !(1..=256).contains(&self.shards) {
            bail!("shards: must be between 1 and 256");
        }
        if self.linger_ms > 10_000 {
            bail!("linger_ms: must be at most 10,000");
        }
        if !(1024..=1 << 30).contains(&self.http.max_body_bytes) {
            bail!("http.max_body_bytes: must be between 1 KiB and 1 GiB");
        }
        if !(1024..=1 << 30).contains(&self.tcp.max_frame_bytes) {
            bail!("tcp.max_frame_bytes: must be between 1 KiB and 1 GiB");
        }
        for (field, n) in [
            ("http.request_timeout_ms", self.http.request_timeout_ms),
            ("http.max_connections", self.http.max_connections as u64),
            ("tcp.max_connections", self.tcp.max_connections as u64),
            ("ops.max_connections", self.ops.max_connections as u64),
        ] {
            if n == 0 {
                bail!("{field}: must be positive");
            }
        }
        for (field, ms) in [
            ("http.header_timeout_ms", self.http.header_timeout_ms),
            ("http.body_timeout_ms", self.http.body_timeout_ms),
            ("http.write_timeout_ms", self.http.write_timeout_ms),
            ("tcp.auth_timeout_ms", self.tcp.auth_timeout_ms),
            ("tcp.frame_timeout_ms", self.tcp.frame_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                bail!("{field}: must be between 1 and 3,600,000 ms");
            }
        }
        if !(256..=self.tcp.max_frame_bytes).contains(&self.tcp.auth_frame_bytes) {
            bail!("tcp.auth_frame_bytes: must be between 256 and tcp.max_frame_bytes");
        }
        if !(self.ready_ring_fraction > 0.0 && self.ready_ring_fraction <= 1.0) {
            bail!("ready_ring_fraction: must be in (0, 1]");
        }
        if let Some(spool) = self.spool.core()? {
            let batch = christmas_core::IngestorConfig::default().batch_max_bytes;
            spool.validate(batch).map_err(|e| match e {
                christmas_core::Error::Config { field, reason } => {
                    anyhow::anyhow!("{field}: {reason}")
                }
                e => e.into(),
            })?;
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            k.validate().with_context(|| format!("api_keys[{i}]"))?;
        }
        Ok(())
    }

    /// The `[orders]` checks.
    fn validate_orders(&self) -> Result<()> {
        let o = &self.orders;
        if let Some(u) = &o.events_url {
            let u = u.expose();
            if !(u.starts_with("amqp://") || u.starts_with("amqps://")) {
                christmas_core::fanout::RedisTarget::parse(u).context("orders.events_url")?;
            }
        }
        if o.events_tls_ca.is_some() {
            let events = o.events_url.as_ref().or(self.redis_url.as_ref());
            if !events.is_some_and(|u| u.expose().starts_with("amqps://")) {
                bail!(
                    "orders.events_tls_ca: is for an amqps:// orders.events_url (RabbitMQ over TLS)"
                );
            }
        }
        if !(1..=64).contains(&o.connections) {
            bail!("orders.connections: must be between 1 and 64");
        }
        if !(1..=65_536).contains(&o.max_group) {
            bail!("orders.max_group: must be between 1 and 65,536");
        }
        if !(o.rate_per_second > 0.0 && o.rate_burst >= 1.0) {
            bail!("orders.rate_per_second / orders.rate_burst: must be > 0 and ≥ 1");
        }
        Ok(())
    }

    /// `http.request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.http.request_timeout_ms)
    }

    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// `replica_max_lag_ms` as a duration.
    pub fn replica_max_lag(&self) -> Duration {
        Duration::from_millis(self.replica_max_lag_ms)
    }

    /// Whether `scope` needs a key.
    pub fn needs_key(&self, scope: Scope) -> bool {
        !self.api_keys.is_empty() && (scope != Scope::Read || self.auth_reads)
    }
}

#[cfg(test)]
mod tests;
