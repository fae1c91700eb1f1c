//! The daemon's state: [`AppState`], the engine behind every HTTP handler and TCP
//! connection (pipelines, reader, latest-tick cache, order desk, limits, request counters).
//!
//! It sits below the protocols: `http`, `tcp`, `metrics` and `server` import it; it
//! imports none of them.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use christmas_core::fanout::{FanoutConfig, LatestCache};
use christmas_core::orders::{OrderDesk, OrderDeskConfig};
use christmas_core::query::MarketDataReader;
use christmas_core::{IngestorConfig, Ingress, Sink};
use hdrhistogram::Histogram;

use crate::budget::ConnectionBudget;
use crate::config::DaemonConfig;
use crate::live_feed::LiveFeed;
use crate::ratelimit::RateLimiter;

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<Engine>);

/// The engine behind the daemon, shared by every handler and connection through
/// [`AppState`].
#[derive(Debug)]
pub struct Engine {
    /// The validated config.
    pub config: DaemonConfig,
    /// The trade and quote pipelines: the one way ticks go in (HTTP and TCP alike).
    pub ingress: Ingress,
    /// Market-data reads (the replica when configured).
    pub reader: MarketDataReader,
    /// The fan-out's latest-tick hashes, when Redis is configured.
    pub cache: Option<LatestCache>,
    /// HTTP request counters and latency.
    pub http: HttpMetrics,
    /// Process start.
    pub started: Instant,
    /// Request ids: `<boot>-<n>`.
    pub boot: u32,
    /// Next request number.
    pub requests: AtomicU64,
    /// The HTTP port's connections.
    pub http_connections: ConnectionBudget,
    /// The TCP ingest port's connections.
    pub tcp_connections: ConnectionBudget,
    /// The operations port's connections.
    pub ops_connections: ConnectionBudget,
    /// Orders: group commit, idempotency, events.
    pub orders: OrderDesk,
    /// Per-account order rate.
    pub order_limiter: RateLimiter,
    /// The live feed of `GET /api/stream`, when Redis is configured.
    pub stream: Option<Arc<LiveFeed>>,
}

impl std::ops::Deref for AppState {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.0
    }
}

/// (method, route, status) and how many requests had them.
pub type RequestCount = ((String, String, u16), u64);

/// Request counts by (method, route, status) and request latency.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Counts; a handful of entries, searched in place so counting allocates nothing.
    pub counts: Mutex<Vec<RequestCount>>,
    /// Latency, microseconds.
    pub latency_us: Mutex<Histogram<u64>>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut h = Histogram::new(3).expect("3 significant figures is valid");
        h.auto(true);
        HttpMetrics {
            counts: Mutex::default(),
            latency_us: Mutex::new(h),
        }
    }
}

impl HttpMetrics {
    /// Counts one request.
    pub fn record(&self, method: &str, route: &str, status: u16, micros: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts
            .iter_mut()
            .find(|((m, r, s), _)| *s == status && m == method && r == route)
        {
            Some((_, n)) => *n += 1,
            None => {
                counts.push(((method.to_string(), route.to_string(), status), 1));
                counts.sort();
            }
        }
        drop(counts);
        let _ = self
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(micros);
    }
}

impl AppState {
    /// Starts the engine the config describes: both pipelines (with fan-out when Redis is
    /// configured), the reader and the latest-tick cache.
    pub async fn start(config: DaemonConfig) -> Result<AppState> {
        config.validate()?;
        let url = config.database_url.clone().context("database_url")?;
        let fanout = match &config.redis_url {
            Some(r) => Some(FanoutConfig {
                format: config.fanout_format.parse()?,
                stream_max_len: config.fanout_stream_max_len,
                stream_max_age: Duration::from_millis(config.fanout_stream_max_age_ms),
                key_ttl: Duration::from_millis(config.fanout_key_ttl_ms),
                ..FanoutConfig::new(r)
            }),
            None => None,
        };
        let ingress = Ingress::start(IngestorConfig {
            sink: Some(Sink::Postgres(url.clone())),
            shards: config.shards,
            linger: Duration::from_millis(config.linger_ms),
            stream: "daemon".into(),
            fanout,
            spool: config.spool()?,
            ..IngestorConfig::default()
        })
        .await
        .context("starting the trade and quote pipelines")?;
        let max_lag = Duration::from_millis(config.replica_max_lag_ms);
        // Connects on the first read: with a spool the daemon starts while PostgreSQL is
        // down, takes ticks into the spool, and answers reads 503 until it is back.
        let reader = match &config.read_database_url {
            Some(replica) => MarketDataReader::connect_later(replica, Some((&url, max_lag))),
            None => MarketDataReader::connect_later(&url, None),
        }
        .context("read_database_url / database_url")?;
        match tokio::time::timeout(Duration::from_secs(2), reader.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "PostgreSQL unreachable at start: reads answer 503 until it is back")
            }
            Err(_) => tracing::warn!(
                "PostgreSQL did not answer within 2 s at start: reads answer 503 until it does"
            ),
        }
        let cache = config
            .redis_url
            .as_deref()
            .map(LatestCache::new)
            .transpose()?;
        let orders = OrderDesk::start(OrderDeskConfig {
            read_database_url: config.read_database_url.clone(),
            // Events go where `order_events_url` says, else beside the fan-out on Redis.
            redis_url: config
                .order_events_url
                .clone()
                .or_else(|| config.redis_url.clone()),
            events_tls_ca: config.order_events_tls_ca.as_ref().map(Into::into),
            events_stream: config.order_events_stream.clone(),
            connections: config.order_connections,
            max_group: config.order_max_group,
            max_replica_lag: max_lag,
            events_recheck_after: Duration::from_millis(config.order_events_recheck_after_ms),
            ..OrderDeskConfig::new(&url)
        })
        .await
        .context("starting the order desk")?;
        let stream = match &config.redis_url {
            Some(r) => Some(LiveFeed::start(
                r,
                config.fanout_format.parse()?,
                config.stream_client_buffer,
                config.stream_client_buffer_bytes,
            )?),
            None => None,
        };
        if config.api_keys.is_empty() {
            tracing::warn!("no api_keys configured: every endpoint is open");
        }
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        Ok(AppState(Arc::new(Engine {
            http_connections: ConnectionBudget::new(
                config.max_connections,
                config.http_max_connections_per_address,
            ),
            tcp_connections: ConnectionBudget::new(
                config.tcp_max_connections,
                config.tcp_max_connections_per_address,
            ),
            ops_connections: ConnectionBudget::new(config.ops_max_connections, 0),
            order_limiter: RateLimiter::new(config.order_rate_per_second, config.order_rate_burst),
            orders,
            stream,
            config,
            ingress,
            reader,
            cache,
            http: HttpMetrics::default(),
            started: Instant::now(),
            boot,
            requests: AtomicU64::new(0),
        })))
    }
}
