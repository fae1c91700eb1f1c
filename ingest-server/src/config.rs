//! [`DaemonConfig`]: a TOML file plus environment overrides, validated at start.
//!
//! Every field has a default; a file may set any of them (unknown keys are refused). Then
//! the environment wins: `DATABASE_URL`, `READ_DATABASE_URL`, `REDIS_URL`,
//! `ORDER_EVENTS_URL`, `ORDER_EVENTS_TLS_CA`,
//! `CHRISTMAS_HTTP_ADDR`, `CHRISTMAS_TCP_ADDR`, `CHRISTMAS_OPS_ADDR`, `CHRISTMAS_SHARDS`, `CHRISTMAS_LINGER_MS`,
//! `CHRISTMAS_AUTH_READS`, `CHRISTMAS_WEB_DIR`, `CHRISTMAS_WEB_ASSET_BASE`,
//! `CHRISTMAS_API_KEYS` (`name:sha256hex:scope+scope,…`), `CHRISTMAS_SPOOL_DIR`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::auth::{ApiKey, Scope};

/// The daemon's settings. Field docs are the user documentation.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// HTTP listen address (default `127.0.0.1:8080`).
    pub http_addr: String,
    /// TCP ingest listen address (default `127.0.0.1:9090`; empty turns it off).
    pub tcp_addr: String,
    /// PostgreSQL to write to. Required. TLS as libpq reads it: `sslmode` (`disable`,
    /// `prefer` — the default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert`
    /// (a CA file, or `system`), e.g. `postgres://…/christmas?sslmode=verify-full&sslrootcert=/etc/ca.pem`.
    pub database_url: Option<String>,
    /// PostgreSQL to read market data and orders from (a replica); default:
    /// `database_url`. While it is down or lags more than `replica_max_lag_ms`, reads go to
    /// the primary.
    pub read_database_url: Option<String>,
    /// How far the replica may lag before reads go to the primary (default 5,000 ms).
    pub replica_max_lag_ms: u64,
    /// Redis for the fan-out and the latest-tick cache; unset turns both off. `rediss://…`
    /// (and `rediss+sentinel://`, `rediss+cluster://`) over TLS, verifying the certificate
    /// against `?sslrootcert=/etc/ca.pem` or the system's roots; `?sslmode=require` skips
    /// the check, `verify-ca` the host name.
    pub redis_url: Option<String>,
    /// Where `order.accepted` events go: a RabbitMQ queue (`amqp://user:pass@host:port/vhost`,
    /// or `amqps://…` over TLS) or a Redis stream (`redis://…`). Unset: `redis_url` (the
    /// default backend, Redis streams); both unset: no events.
    pub order_events_url: Option<String>,
    /// For an `amqps://` events URL: a PEM file of the CA certificates that signed a
    /// private broker's certificate, trusted besides the system's roots. Unset: the
    /// system's roots only. Read at start.
    pub order_events_tls_ca: Option<String>,
    /// The events stream (Redis) or queue (RabbitMQ; its dead-letter queue is
    /// `<name>.dead`), default `orders:events`. Workers name the same.
    pub order_events_stream: String,
    /// Fan-out payload: `json` or `rkyv`.
    pub fanout_format: String,
    /// Messages kept in each symbol's replay stream `md:{SYMBOL}:ticks` (default 10,000;
    /// 0 turns the streams off).
    pub fanout_stream_max_len: usize,
    /// How far back each replay stream reaches, ms (default 60,000; 0: no age bound). This
    /// is what bounds Redis's memory under load (about ticks/s × age × 145 bytes in JSON),
    /// where one message may hold hundreds of ticks.
    pub fanout_stream_max_age_ms: u64,
    /// How long a symbol's Redis keys (`md:{SYMBOL}:ticks`, `md:{SYMBOL}:latest`) outlive
    /// its last message, ms (default 600,000; 0: forever). Redis holds about 4.6 KiB per
    /// symbol active within it, plus its stream's messages (`docs/operations.md`, "Redis
    /// memory per symbol"), so this bounds Redis's memory under symbol cardinality; a read
    /// of an expired symbol's latest tick goes to PostgreSQL.
    pub fanout_key_ttl_ms: u64,
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
    /// Largest request body, bytes (413 beyond; default 8 MiB).
    pub max_body_bytes: usize,
    /// Largest TCP frame, bytes (default 8 MiB).
    pub max_frame_bytes: usize,
    /// A request taking longer is answered 503 (default 30 s; `ack=committed` waits for
    /// the commit within it).
    pub request_timeout_ms: u64,
    /// HTTP connections open at once (default 1,024); further ones wait in the listen
    /// backlog (this size, capped by `net.core.somaxconn`). TCP has its own budget
    /// (`tcp_max_connections`), so neither port can lock the other out.
    pub max_connections: usize,
    /// HTTP connections one client address may hold open (default 256; 0: no cap). Beyond,
    /// a new connection is closed at once. Behind a proxy every client is the proxy's
    /// address: raise it to the proxy's connection pool, or 0.
    pub http_max_connections_per_address: usize,
    /// How long a client may take to send a request's head, and how long a kept-alive
    /// connection may sit idle waiting for its next request (default 10,000 ms); then the
    /// connection is closed.
    pub http_header_timeout_ms: u64,
    /// How long a request body may take to arrive in full once its head is in (default
    /// 20,000 ms); then 408 and the connection is closed. Within `request_timeout_ms`.
    pub http_body_timeout_ms: u64,
    /// How long an answer's write may stay blocked because the client reads nothing
    /// (default 30,000 ms); then the connection is closed. A `GET /api/stream` client
    /// that falls behind is dropped sooner by its buffer bounds.
    pub http_write_timeout_ms: u64,
    /// TCP ingest connections open at once (default 1,024); further ones wait in the
    /// listen backlog (this size).
    pub tcp_max_connections: usize,
    /// TCP connections one client address may hold open (default 64; 0: no cap). Beyond,
    /// a new connection is closed at once.
    pub tcp_max_connections_per_address: usize,
    /// With API keys configured: how long a TCP connection has to send its first frame,
    /// which carries the key (default 5,000 ms); then it is closed.
    pub tcp_auth_timeout_ms: u64,
    /// With API keys configured: the largest first frame of a TCP connection, bytes
    /// (default 64 KiB). The key is checked before any larger frame is buffered: a client
    /// whose batches are larger sends a frame with its key (and producer) and no records
    /// first.
    pub tcp_auth_frame_bytes: usize,
    /// How long a TCP frame's body may take to arrive once its length is read (default
    /// 30,000 ms); then the connection is closed.
    pub tcp_frame_timeout_ms: u64,
    /// A listener for operations alone (`/health`, `/ready`, `/metrics`), with its own
    /// connection budget (`ops_max_connections`), so probes and scrapes answer while the
    /// HTTP port is flooded (default empty: none; the main port serves them too).
    pub ops_addr: String,
    /// Connections the operations listener holds at once (default 64).
    pub ops_max_connections: usize,
    /// `/ready` fails when any ring is fuller than this fraction (default 0.8).
    pub ready_ring_fraction: f64,
    /// How long shutdown may take to drain and flush (default 30 s).
    pub shutdown_timeout_ms: u64,
    /// Whether market-data reads need a key with the `read` scope (default false: open).
    pub auth_reads: bool,
    /// API keys; none configured means no authentication (a warning is logged).
    pub api_keys: Vec<ApiKey>,
    /// Order writer connections, each committing one group of orders at a time (default 2).
    pub order_connections: usize,
    /// Most orders committed in one transaction (default 1,024).
    pub order_max_group: usize,
    /// Orders per second each account (API key) may submit; beyond, 429 with Retry-After
    /// (default 50,000).
    pub order_rate_per_second: f64,
    /// Orders an account may send in a burst above the rate (default 10,000).
    pub order_rate_burst: f64,
    /// An order still `accepted` this long after its `order.accepted` event reached the
    /// broker, while the workers are not behind, is announced again, once: the broker lost
    /// the event (default 60,000 ms; 0 turns the re-check off). On RabbitMQ a lost queue is
    /// declared again and its orders announced again at the next round.
    pub order_events_recheck_after_ms: u64,
    /// Directory of the spool (unset: no spool, and `ack=durable` is refused). With it,
    /// `ack=durable` answers once the ticks are fsynced there, the daemon keeps accepting
    /// while PostgreSQL is down (up to `spool_max_bytes`), and what a crash left is
    /// written on the next start.
    pub spool_dir: Option<String>,
    /// fsync the spool after every batch (0, the default) or at most this many ms after a
    /// batch (fewer fsyncs; durable acks wait that long).
    pub spool_fsync_ms: u64,
    /// Most bytes of spool per shard and record kind (default 1 GiB); when full, ingest
    /// waits (then 503s) until PostgreSQL catches up.
    pub spool_max_bytes: u64,
    /// Most bytes of spooled batches per shard and record kind kept in memory for the
    /// writer (default 64 MiB); a larger backlog (PostgreSQL away) is read back from disk,
    /// and those ticks are not fanned out (`christmas_fanout_spilled_total`).
    pub spool_memory_bytes: u64,
    /// Messages each `GET /api/stream` client may have waiting (default 1,024); a client
    /// that falls further behind is sent `event: dropped` and disconnected, so it never
    /// slows the others.
    pub stream_client_buffer: usize,
    /// Bytes of messages each `GET /api/stream` client may have waiting (default 4 MiB);
    /// beyond, as beyond `stream_client_buffer`, the client is dropped.
    pub stream_client_buffer_bytes: usize,
    /// Directory of the built page (`scripts/web.sh build` writes `web/dist`); unset: `web/dist`
    /// when it exists. Without it `/` answers how to build the page.
    pub web_dir: Option<String>,
    /// Where the page's assets are loaded from, e.g. a CDN origin `https://cdn.example.com`
    /// (default: this daemon). The CDN fetches `/assets/…` from the daemon.
    pub web_asset_base: Option<String>,
}

impl std::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold passwords; keys are hashes but need not be shown.
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("DaemonConfig")
            .field("http_addr", &self.http_addr)
            .field("tcp_addr", &self.tcp_addr)
            .field("database_url", &set(&self.database_url))
            .field("read_database_url", &set(&self.read_database_url))
            .field("replica_max_lag_ms", &self.replica_max_lag_ms)
            .field("redis_url", &set(&self.redis_url))
            .field("order_events_url", &set(&self.order_events_url))
            .field("order_events_tls_ca", &self.order_events_tls_ca)
            .field("order_events_stream", &self.order_events_stream)
            .field("fanout_format", &self.fanout_format)
            .field("fanout_stream_max_len", &self.fanout_stream_max_len)
            .field("fanout_stream_max_age_ms", &self.fanout_stream_max_age_ms)
            .field("fanout_key_ttl_ms", &self.fanout_key_ttl_ms)
            .field("shards", &self.shards)
            .field("linger_ms", &self.linger_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field(
                "http_max_connections_per_address",
                &self.http_max_connections_per_address,
            )
            .field("http_header_timeout_ms", &self.http_header_timeout_ms)
            .field("http_body_timeout_ms", &self.http_body_timeout_ms)
            .field("http_write_timeout_ms", &self.http_write_timeout_ms)
            .field("tcp_max_connections", &self.tcp_max_connections)
            .field(
                "tcp_max_connections_per_address",
                &self.tcp_max_connections_per_address,
            )
            .field("tcp_auth_timeout_ms", &self.tcp_auth_timeout_ms)
            .field("tcp_auth_frame_bytes", &self.tcp_auth_frame_bytes)
            .field("tcp_frame_timeout_ms", &self.tcp_frame_timeout_ms)
            .field("ops_addr", &self.ops_addr)
            .field("ops_max_connections", &self.ops_max_connections)
            .field("ready_ring_fraction", &self.ready_ring_fraction)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("auth_reads", &self.auth_reads)
            .field("api_keys", &self.api_keys.len())
            .field("order_connections", &self.order_connections)
            .field("order_max_group", &self.order_max_group)
            .field("order_rate_per_second", &self.order_rate_per_second)
            .field("order_rate_burst", &self.order_rate_burst)
            .field(
                "order_events_recheck_after_ms",
                &self.order_events_recheck_after_ms,
            )
            .field("spool_dir", &self.spool_dir)
            .field("spool_fsync_ms", &self.spool_fsync_ms)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("spool_memory_bytes", &self.spool_memory_bytes)
            .field("stream_client_buffer", &self.stream_client_buffer)
            .field(
                "stream_client_buffer_bytes",
                &self.stream_client_buffer_bytes,
            )
            .field("web_dir", &self.web_dir)
            .field("web_asset_base", &self.web_asset_base)
            .finish()
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            http_addr: "127.0.0.1:8080".into(),
            tcp_addr: "127.0.0.1:9090".into(),
            database_url: None,
            read_database_url: None,
            replica_max_lag_ms: 5_000,
            redis_url: None,
            order_events_url: None,
            order_events_tls_ca: None,
            order_events_stream: "orders:events".into(),
            fanout_format: "json".into(),
            fanout_stream_max_len: 10_000,
            fanout_stream_max_age_ms: 60_000,
            fanout_key_ttl_ms: 600_000,
            shards: 2,
            linger_ms: 40,
            max_body_bytes: 8 << 20,
            max_frame_bytes: 8 << 20,
            request_timeout_ms: 30_000,
            max_connections: 1_024,
            http_max_connections_per_address: 256,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 20_000,
            http_write_timeout_ms: 30_000,
            tcp_max_connections: 1_024,
            tcp_max_connections_per_address: 64,
            tcp_auth_timeout_ms: 5_000,
            tcp_auth_frame_bytes: 64 << 10,
            tcp_frame_timeout_ms: 30_000,
            ops_addr: String::new(),
            ops_max_connections: 64,
            ready_ring_fraction: 0.8,
            shutdown_timeout_ms: 30_000,
            auth_reads: false,
            api_keys: Vec::new(),
            order_connections: 2,
            order_max_group: 1_024,
            order_rate_per_second: 50_000.0,
            order_rate_burst: 10_000.0,
            order_events_recheck_after_ms: 60_000,
            spool_dir: None,
            spool_fsync_ms: 0,
            spool_max_bytes: christmas_core::spool::SpoolConfig::DEFAULT_MAX_BYTES,
            spool_memory_bytes: christmas_core::spool::SpoolConfig::DEFAULT_MEMORY_BYTES,
            stream_client_buffer: 1_024,
            stream_client_buffer_bytes: 4 << 20,
            web_dir: None,
            web_asset_base: None,
        }
    }
}

impl DaemonConfig {
    /// Reads `path` (if any) and applies the environment. Call [`DaemonConfig::validate`]
    /// after any further overrides (command-line flags).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("in config file {}", p.display()))?
            }
            None => DaemonConfig::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Applies environment overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = var("DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = var("READ_DATABASE_URL") {
            self.read_database_url = Some(v);
        }
        if let Some(v) = var("REDIS_URL") {
            self.redis_url = Some(v);
        }
        if let Some(v) = var("ORDER_EVENTS_URL") {
            self.order_events_url = Some(v).filter(|u| !u.is_empty());
        }
        if let Some(v) = var("ORDER_EVENTS_TLS_CA") {
            self.order_events_tls_ca = Some(v).filter(|p| !p.is_empty());
        }
        if let Some(v) = var("CHRISTMAS_HTTP_ADDR") {
            self.http_addr = v;
        }
        if let Some(v) = var("CHRISTMAS_TCP_ADDR") {
            self.tcp_addr = v;
        }
        if let Some(v) = var("CHRISTMAS_OPS_ADDR") {
            self.ops_addr = v;
        }
        if let Some(v) = var("CHRISTMAS_SHARDS") {
            self.shards = v.parse().context("CHRISTMAS_SHARDS must be a number")?;
        }
        if let Some(v) = var("CHRISTMAS_LINGER_MS") {
            self.linger_ms = v.parse().context("CHRISTMAS_LINGER_MS must be a number")?;
        }
        if let Some(v) = var("CHRISTMAS_AUTH_READS") {
            self.auth_reads = v
                .parse()
                .context("CHRISTMAS_AUTH_READS must be true or false")?;
        }
        if let Some(v) = var("CHRISTMAS_WEB_DIR") {
            self.web_dir = Some(v).filter(|d| !d.is_empty());
        }
        if let Some(v) = var("CHRISTMAS_WEB_ASSET_BASE") {
            self.web_asset_base = Some(v).filter(|d| !d.is_empty());
        }
        if let Some(v) = var("CHRISTMAS_SPOOL_DIR") {
            self.spool_dir = Some(v).filter(|d| !d.is_empty());
        }
        if let Some(v) = var("CHRISTMAS_API_KEYS") {
            self.api_keys = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(ApiKey::parse)
                .collect::<Result<_>>()
                .context("CHRISTMAS_API_KEYS")?;
        }
        Ok(())
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.database_url.is_none() {
            bail!("database_url: required (set DATABASE_URL or database_url in the config file)");
        }
        self.http_addr
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("http_addr: {:?} is not host:port", self.http_addr))?;
        if !self.tcp_addr.is_empty() {
            self.tcp_addr
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("tcp_addr: {:?} is not host:port", self.tcp_addr))?;
        }
        if let Some(r) = &self.redis_url {
            christmas_core::fanout::RedisTarget::parse(r).context("redis_url")?;
        }
        if let Some(u) = &self.order_events_url {
            let amqp = u.starts_with("amqp://") || u.starts_with("amqps://");
            if !amqp {
                christmas_core::fanout::RedisTarget::parse(u).context("order_events_url")?;
            }
        }
        if self.order_events_tls_ca.is_some() {
            let events = self.order_events_url.as_ref().or(self.redis_url.as_ref());
            if !events.is_some_and(|u| u.starts_with("amqps://")) {
                bail!(
                    "order_events_tls_ca: is for an amqps:// order_events_url (RabbitMQ over TLS)"
                );
            }
        }
        self.fanout_format
            .parse::<christmas_core::fanout::PayloadFormat>()
            .context("fanout_format")?;
        if (1..1_000).contains(&self.fanout_key_ttl_ms) {
            bail!("fanout_key_ttl_ms: must be 0 (no expiry) or at least 1,000");
        }
        if !(1..=256).contains(&self.shards) {
            bail!("shards: must be between 1 and 256");
        }
        if self.linger_ms > 10_000 {
            bail!("linger_ms: must be at most 10,000");
        }
        if !(1024..=1 << 30).contains(&self.max_body_bytes) {
            bail!("max_body_bytes: must be between 1 KiB and 1 GiB");
        }
        if !(1024..=1 << 30).contains(&self.max_frame_bytes) {
            bail!("max_frame_bytes: must be between 1 KiB and 1 GiB");
        }
        if self.request_timeout_ms == 0 {
            bail!("request_timeout_ms: must be positive");
        }
        if self.max_connections == 0 {
            bail!("max_connections: must be positive");
        }
        if self.tcp_max_connections == 0 {
            bail!("tcp_max_connections: must be positive");
        }
        if self.ops_max_connections == 0 {
            bail!("ops_max_connections: must be positive");
        }
        if !self.ops_addr.is_empty() {
            self.ops_addr
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("ops_addr: {:?} is not host:port", self.ops_addr))?;
        }
        for (field, ms) in [
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_body_timeout_ms", self.http_body_timeout_ms),
            ("http_write_timeout_ms", self.http_write_timeout_ms),
            ("tcp_auth_timeout_ms", self.tcp_auth_timeout_ms),
            ("tcp_frame_timeout_ms", self.tcp_frame_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                bail!("{field}: must be between 1 and 3,600,000 ms");
            }
        }
        if !(256..=self.max_frame_bytes).contains(&self.tcp_auth_frame_bytes) {
            bail!("tcp_auth_frame_bytes: must be between 256 and max_frame_bytes");
        }
        if !(self.ready_ring_fraction > 0.0 && self.ready_ring_fraction <= 1.0) {
            bail!("ready_ring_fraction: must be in (0, 1]");
        }
        if !(1..=64).contains(&self.order_connections) {
            bail!("order_connections: must be between 1 and 64");
        }
        if !(1..=65_536).contains(&self.order_max_group) {
            bail!("order_max_group: must be between 1 and 65,536");
        }
        if !(self.order_rate_per_second > 0.0 && self.order_rate_burst >= 1.0) {
            bail!("order_rate_per_second / order_rate_burst: must be > 0 and ≥ 1");
        }
        if let Some(spool) = self.spool()? {
            spool
                .validate(christmas_core::IngestorConfig::default().batch_max_bytes)
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("spool.", "spool_")))?;
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            k.validate().with_context(|| format!("api_keys[{i}]"))?;
        }
        Ok(())
    }

    /// The spool, when `spool_dir` is set.
    pub fn spool(&self) -> Result<Option<christmas_core::spool::SpoolConfig>> {
        use christmas_core::spool::{FsyncPolicy, SpoolConfig};
        let Some(dir) = &self.spool_dir else {
            return Ok(None);
        };
        if self.spool_fsync_ms > 10_000 {
            bail!("spool_fsync_ms: must be at most 10,000");
        }
        Ok(Some(SpoolConfig {
            fsync: match self.spool_fsync_ms {
                0 => FsyncPolicy::EveryBatch,
                ms => FsyncPolicy::Every(Duration::from_millis(ms)),
            },
            max_bytes: self.spool_max_bytes,
            memory_bytes: self.spool_memory_bytes,
            ..SpoolConfig::new(dir)
        }))
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Whether `scope` needs a key.
    pub fn needs_key(&self, scope: Scope) -> bool {
        !self.api_keys.is_empty() && (scope != Scope::Read || self.auth_reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DaemonConfig {
        DaemonConfig {
            database_url: Some("postgres://u@h/db".into()),
            ..DaemonConfig::default()
        }
    }

    #[test]
    fn files_parse_and_unknown_keys_are_refused() {
        let c: DaemonConfig = toml::from_str(
            r#"
            http_addr = "0.0.0.0:80"
            shards = 4
            [[api_keys]]
            name = "feed"
            sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            scopes = ["ingest"]
            "#,
        )
        .unwrap();
        assert_eq!(c.shards, 4);
        assert_eq!(c.api_keys[0].scopes, vec![Scope::Ingest]);
        assert!(toml::from_str::<DaemonConfig>("shard = 4").is_err());
    }

    #[test]
    fn an_events_tls_ca_needs_an_amqps_events_url() {
        let mut c = base();
        c.apply_env(|k| match k {
            "ORDER_EVENTS_URL" => Some("amqps://u:p@broker:5671/%2f".into()),
            "ORDER_EVENTS_TLS_CA" => Some("/etc/christmas/ca.pem".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.order_events_tls_ca.as_deref(),
            Some("/etc/christmas/ca.pem")
        );
        c.validate().unwrap();
        for url in [
            None,
            Some("amqp://u:p@broker:5672/%2f"),
            Some("redis://h:1/"),
        ] {
            let bad = DaemonConfig {
                order_events_url: url.map(Into::into),
                ..c.clone()
            };
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.starts_with("order_events_tls_ca:"), "{e}");
        }
    }

    #[test]
    fn environment_wins_and_errors_name_the_field() {
        let mut c = base();
        c.apply_env(|k| match k {
            "REDIS_URL" => Some("redis://h:1/".into()),
            "CHRISTMAS_SHARDS" => Some("3".into()),
            "CHRISTMAS_LINGER_MS" => Some("40".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (c.redis_url.as_deref(), c.shards, c.linger_ms),
            (Some("redis://h:1/"), 3, 40)
        );
        c.validate().unwrap();
        let bad = [
            DaemonConfig {
                database_url: None,
                ..base()
            },
            DaemonConfig {
                http_addr: "nowhere".into(),
                ..base()
            },
            DaemonConfig {
                shards: 0,
                ..base()
            },
            DaemonConfig {
                linger_ms: 10_001,
                ..base()
            },
            DaemonConfig {
                redis_url: Some("http://x".into()),
                ..base()
            },
            DaemonConfig {
                fanout_format: "xml".into(),
                ..base()
            },
        ];
        let fields = [
            "database_url",
            "http_addr",
            "shards",
            "linger_ms",
            "redis_url",
            "fanout_format",
        ];
        for (c, f) in bad.iter().zip(fields) {
            let e = format!("{:#}", c.validate().unwrap_err());
            assert!(e.starts_with(f), "{f}: {e}");
        }
        assert!(!format!("{:?}", base()).contains("postgres://"));
    }
}
