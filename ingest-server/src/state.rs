//! The daemon's state: [`AppState`], the engine behind every HTTP handler and TCP
//! connection (pipelines, reader, latest-tick cache, order desk, limits, request counters).
//!
//! It sits below the protocols: `http`, `tcp`, `metrics` and `server` import it; it
//! imports none of them.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use christmas_core::fanout::LatestCache;
use christmas_core::orders::OrderDesk;
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
    /// TCP ack delivery, microseconds: from the moment the last of a frame's batches
    /// reached the frame's ack level to its ack written to the socket (the wait behind
    /// earlier frames' acks included).
    pub tcp_ack_us: Mutex<Histogram<u64>>,
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

/// An empty latency histogram of 3 significant figures that grows to fit any value.
fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant figures is valid");
    h.auto(true);
    h
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            counts: Mutex::default(),
            latency_us: Mutex::new(histogram()),
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
        let url = config.database_url.as_ref().context("database_url")?;
        let redis = config.redis_url.as_ref();
        let ingress = Ingress::start(IngestorConfig {
            sink: Some(Sink::Postgres(url.expose().to_string())),
            shards: config.shards,
            linger: Duration::from_millis(config.linger_ms),
            stream: "daemon".into(),
            fanout: redis.map(|r| config.fanout.core(r)).transpose()?,
            spool: config.spool.core()?,
            ..IngestorConfig::default()
        })
        .await
        .context("starting the trade and quote pipelines")?;
        let max_lag = config.replica_max_lag();
        let replica = config.read_database_url.as_ref();
        // Connects on the first read: with a spool the daemon starts while PostgreSQL is
        // down, takes ticks into the spool, and answers reads 503 until it is back.
        let reader = match replica {
            Some(r) => MarketDataReader::connect_later(r.expose(), Some((url.expose(), max_lag))),
            None => MarketDataReader::connect_later(url.expose(), None),
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
        let cache = redis.map(|r| LatestCache::new(r.expose())).transpose()?;
        let orders = OrderDesk::start(config.orders.desk(url, replica, redis, max_lag))
            .await
            .context("starting the order desk")?;
        let stream = match redis {
            Some(r) => Some(LiveFeed::start(
                r.expose(),
                config.fanout.format.parse()?,
                config.stream.client_buffer,
                config.stream.client_buffer_bytes,
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
                config.http.max_connections,
                config.http.max_connections_per_address,
            ),
            tcp_connections: ConnectionBudget::new(
                config.tcp.max_connections,
                config.tcp.max_connections_per_address,
            ),
            ops_connections: ConnectionBudget::new(config.ops.max_connections, 0),
            order_limiter: RateLimiter::new(
                config.orders.rate_per_second,
                config.orders.rate_burst,
            ),
            orders,
            stream,
            config,
            ingress,
            reader,
            cache,
            http: HttpMetrics::default(),
            tcp_ack_us: Mutex::new(histogram()),
            started: Instant::now(),
            boot,
            requests: AtomicU64::new(0),
        })))
    }
}
