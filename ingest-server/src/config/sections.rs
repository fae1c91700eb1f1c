//! The tables of [`DaemonConfig`](super::DaemonConfig): `[http]`, `[tcp]`, `[ops]`,
//! `[orders]`, `[spool]`, `[fanout]`, `[stream]`, `[web]`. Those with a counterpart in
//! `christmas-core` build it (`OrderSettings::desk`, `SpoolSettings::core`,
//! `FanoutSettings::core`), so the daemon's start copies no field by hand.

use std::time::Duration;

use anyhow::{bail, Result};
use christmas_core::fanout::FanoutConfig;
use christmas_core::orders::OrderDeskConfig;
use christmas_core::spool::{FsyncPolicy, SpoolConfig};
use serde::{Deserialize, Serialize};

use super::Secret;

/// `[http]`: the HTTP listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Listen address (default `127.0.0.1:8080`).
    pub addr: String,
    /// Largest request body, bytes (413 beyond; default 8 MiB).
    pub max_body_bytes: usize,
    /// A request taking longer is answered 503 (default 30 s; `ack=committed` waits for
    /// the commit within it).
    pub request_timeout_ms: u64,
    /// Connections open at once (default 1,024); further ones wait in the listen backlog
    /// (this size, capped by `net.core.somaxconn`). TCP has its own budget
    /// (`tcp.max_connections`), so neither port can lock the other out.
    pub max_connections: usize,
    /// Connections one client address may hold open (default 256; 0: no cap). Beyond, a
    /// new connection is closed at once. Behind a proxy every client is the proxy's
    /// address: raise it to the proxy's connection pool, or 0.
    pub max_connections_per_address: usize,
    /// How long a client may take to send a request's head, and how long a kept-alive
    /// connection may sit idle waiting for its next request (default 10,000 ms); then the
    /// connection is closed.
    pub header_timeout_ms: u64,
    /// How long a request body may take to arrive in full once its head is in (default
    /// 20,000 ms); then 408 and the connection is closed. Within `request_timeout_ms`.
    pub body_timeout_ms: u64,
    /// How long an answer's write may stay blocked because the client reads nothing
    /// (default 30,000 ms); then the connection is closed. A `GET /api/stream` client
    /// that falls behind is dropped sooner by its buffer bounds.
    pub write_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            addr: "127.0.0.1:8080".into(),
            max_body_bytes: 8 << 20,
            request_timeout_ms: 30_000,
            max_connections: 1_024,
            max_connections_per_address: 256,
            header_timeout_ms: 10_000,
            body_timeout_ms: 20_000,
            write_timeout_ms: 30_000,
        }
    }
}

/// `[tcp]`: the TCP ingest listener.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Listen address (default `127.0.0.1:9090`; empty turns it off).
    pub addr: String,
    /// Largest frame, bytes (default 8 MiB).
    pub max_frame_bytes: usize,
    /// Connections open at once (default 1,024); further ones wait in the listen backlog
    /// (this size).
    pub max_connections: usize,
    /// Connections one client address may hold open (default 64; 0: no cap). Beyond, a
    /// new connection is closed at once.
    pub max_connections_per_address: usize,
    /// With API keys configured: how long a connection has to send its first frame,
    /// which carries the key (default 5,000 ms); then it is closed.
    pub auth_timeout_ms: u64,
    /// With API keys configured: the largest first frame of a connection, bytes (default
    /// 64 KiB). The key is checked before any larger frame is buffered: a client whose
    /// batches are larger sends a frame with its key (and producer) and no records first.
    pub auth_frame_bytes: usize,
    /// How long a frame's body may take to arrive once its length is read (default
    /// 30,000 ms); then the connection is closed.
    pub frame_timeout_ms: u64,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            addr: "127.0.0.1:9090".into(),
            max_frame_bytes: 8 << 20,
            max_connections: 1_024,
            max_connections_per_address: 64,
            auth_timeout_ms: 5_000,
            auth_frame_bytes: 64 << 10,
            frame_timeout_ms: 30_000,
        }
    }
}

/// `[ops]`: a listener for operations alone (`/health`, `/ready`, `/metrics`), with its own
/// connection budget, so probes and scrapes answer while the HTTP port is flooded.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSettings {
    /// Listen address (default empty: none; the main port serves them too).
    pub addr: String,
    /// Connections it holds at once (default 64).
    pub max_connections: usize,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings {
            addr: String::new(),
            max_connections: 64,
        }
    }
}

/// `[orders]`: the order desk and its `order.accepted` events.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSettings {
    /// Writer connections, each committing one group of orders at a time (default 2).
    pub connections: usize,
    /// Most orders committed in one transaction (default 1,024).
    pub max_group: usize,
    /// Orders per second each account (API key) may submit; beyond, 429 with Retry-After
    /// (default 50,000).
    pub rate_per_second: f64,
    /// Orders an account may send in a burst above the rate (default 10,000).
    pub rate_burst: f64,
    /// Where `order.accepted` events go: a RabbitMQ queue (`amqp://user:pass@host:port/vhost`,
    /// or `amqps://…` over TLS) or a Redis stream (`redis://…`). Unset: `redis_url` (the
    /// default backend, Redis streams); both unset: no events.
    pub events_url: Option<Secret>,
    /// For an `amqps://` events URL: a PEM file of the CA certificates that signed a
    /// private broker's certificate, trusted besides the system's roots. Unset: the
    /// system's roots only. Read at start.
    pub events_tls_ca: Option<String>,
    /// The events stream (Redis) or queue (RabbitMQ; its dead-letter queue is
    /// `<name>.dead`), default `orders:events`. Workers name the same.
    pub events_stream: String,
    /// An order still `accepted` this long after its `order.accepted` event reached the
    /// broker, while the workers are not behind, is announced again, once: the broker lost
    /// the event (default 60,000 ms; 0 turns the re-check off). On RabbitMQ a lost queue is
    /// declared again and its orders announced again at the next round.
    pub events_recheck_after_ms: u64,
}

impl Default for OrderSettings {
    fn default() -> Self {
        OrderSettings {
            connections: 2,
            max_group: 1_024,
            rate_per_second: 50_000.0,
            rate_burst: 10_000.0,
            events_url: None,
            events_tls_ca: None,
            events_stream: "orders:events".into(),
            events_recheck_after_ms: 60_000,
        }
    }
}

impl OrderSettings {
    /// The core's desk config: orders in `database`, reads from `replica` (lagging at most
    /// `max_lag`), events to `events_url`, else beside the fan-out on `redis`.
    pub fn desk(
        &self,
        database: &Secret,
        replica: Option<&Secret>,
        redis: Option<&Secret>,
        max_lag: Duration,
    ) -> OrderDeskConfig {
        OrderDeskConfig {
            read_database_url: replica.map(|u| u.expose().to_string()),
            redis_url: self
                .events_url
                .as_ref()
                .or(redis)
                .map(|u| u.expose().to_string()),
            events_tls_ca: self.events_tls_ca.as_ref().map(Into::into),
            events_stream: self.events_stream.clone(),
            connections: self.connections,
            max_group: self.max_group,
            max_replica_lag: max_lag,
            events_recheck_after: Duration::from_millis(self.events_recheck_after_ms),
            ..OrderDeskConfig::new(database.expose())
        }
    }
}

/// `[spool]`: batches written to disk before PostgreSQL. Without `dir`, no spool, and
/// `ack=durable` is refused.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSettings {
    /// Directory of the spool (unset: no spool). With it, `ack=durable` answers once the
    /// ticks are fsynced there, the daemon keeps accepting while PostgreSQL is down (up to
    /// `max_bytes`), and what a crash left is written on the next start.
    pub dir: Option<String>,
    /// fsync after every batch (0, the default) or at most this many ms after a batch
    /// (fewer fsyncs; durable acks wait that long).
    pub fsync_ms: u64,
    /// Most bytes of spool per shard and record kind (default 1 GiB); when full, ingest
    /// waits (then 503s) until PostgreSQL catches up.
    pub max_bytes: u64,
    /// Most bytes of spooled batches per shard and record kind kept in memory for the
    /// writer (default 64 MiB); a larger backlog (PostgreSQL away) is read back from disk,
    /// and those ticks are not fanned out (`christmas_fanout_spilled_total`).
    pub memory_bytes: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            dir: None,
            fsync_ms: 0,
            max_bytes: SpoolConfig::DEFAULT_MAX_BYTES,
            memory_bytes: SpoolConfig::DEFAULT_MEMORY_BYTES,
        }
    }
}

impl SpoolSettings {
    /// The core's spool config, when `dir` is set.
    pub fn core(&self) -> Result<Option<SpoolConfig>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if self.fsync_ms > 10_000 {
            bail!("spool.fsync_ms: must be at most 10,000");
        }
        Ok(Some(SpoolConfig {
            fsync: match self.fsync_ms {
                0 => FsyncPolicy::EveryBatch,
                ms => FsyncPolicy::Every(Duration::from_millis(ms)),
            },
            max_bytes: self.max_bytes,
            memory_bytes: self.memory_bytes,
            ..SpoolConfig::new(dir)
        }))
    }
}

/// `[fanout]`: what the Redis fan-out publishes (on when `redis_url` is set).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutSettings {
    /// Payload: `json` or `rkyv`.
    pub format: String,
    /// Messages kept in each symbol's replay stream `md:{SYMBOL}:ticks` (default 10,000;
    /// 0 turns the streams off).
    pub stream_max_len: usize,
    /// How far back each replay stream reaches, ms (default 60,000; 0: no age bound). This
    /// is what bounds Redis's memory under load (about ticks/s × age × 145 bytes in JSON),
    /// where one message may hold hundreds of ticks.
    pub stream_max_age_ms: u64,
    /// How long a symbol's Redis keys (`md:{SYMBOL}:ticks`, `md:{SYMBOL}:latest`) outlive
    /// its last message, ms (default 600,000; 0: forever). Redis holds about 4.6 KiB per
    /// symbol active within it, plus its stream's messages (`docs/operations.md`, "Redis
    /// memory per symbol"), so this bounds Redis's memory under symbol cardinality; a read
    /// of an expired symbol's latest tick goes to PostgreSQL.
    pub key_ttl_ms: u64,
    /// The shortest time between two publishing round trips to Redis, ms (default 50; 0:
    /// each as soon as the last returns; at most 1,000). What is committed in between goes
    /// out together, one message per symbol instead of one per symbol and commit: at half
    /// load that halves the messages and gives Redis's and the daemon's CPU back to the
    /// commits (`docs/operations.md`, "Fan-out rounds"). A tick's delivery waits at most
    /// this much longer, on top of its commit.
    pub round_interval_ms: u64,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings {
            format: "json".into(),
            stream_max_len: 10_000,
            stream_max_age_ms: 60_000,
            key_ttl_ms: 600_000,
            round_interval_ms: 50,
        }
    }
}

impl FanoutSettings {
    /// The core's fan-out config, publishing to `redis`.
    pub fn core(&self, redis: &Secret) -> Result<FanoutConfig> {
        Ok(FanoutConfig {
            format: self.format.parse()?,
            stream_max_len: self.stream_max_len,
            stream_max_age: Duration::from_millis(self.stream_max_age_ms),
            key_ttl: Duration::from_millis(self.key_ttl_ms),
            round_interval: Duration::from_millis(self.round_interval_ms),
            ..FanoutConfig::new(redis.expose())
        })
    }
}

/// `[stream]`: each `GET /api/stream` client's buffer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Messages each client may have waiting (default 1,024); a client that falls further
    /// behind is sent `event: dropped` and disconnected, so it never slows the others.
    pub client_buffer: usize,
    /// Bytes of messages each client may have waiting (default 4 MiB); beyond, as beyond
    /// `client_buffer`, the client is dropped.
    pub client_buffer_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            client_buffer: 1_024,
            client_buffer_bytes: 4 << 20,
        }
    }
}

/// `[web]`: the page served at `/`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Directory of the built page (`scripts/web.sh build` writes `web/dist`); unset:
    /// `web/dist` when it exists. Without it `/` answers how to build the page.
    pub dir: Option<String>,
    /// Where the page's assets are loaded from, e.g. a CDN origin `https://cdn.example.com`
    /// (default: this daemon). The CDN fetches `/assets/…` from the daemon.
    pub asset_base: Option<String>,
}
