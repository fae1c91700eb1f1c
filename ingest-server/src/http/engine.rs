//! `GET /api/engine`: the engine's counters as one small JSON object, for the page's engine
//! panel and any dashboard that cannot read Prometheus text. nginx refuses `/metrics` (it
//! is scraped per daemon), so the page behind nginx reads this instead.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::MetricsSnapshot;
use serde_json::{json, Value};

use crate::http::auth::{Authorized, Read};
use crate::state::AppState;

fn kind(m: &MetricsSnapshot) -> Value {
    let ring_capacity: u64 = m.shards.iter().map(|s| s.ring_capacity).sum();
    json!({
        "accepted": m.accepted(),
        "committed": m.rows_committed(),
        "ring_depth": m.ring_depth(),
        "ring_capacity": ring_capacity,
        "spool_bytes": m.spool.as_ref().map(|s| s.disk_bytes),
        "spool_max_bytes": m.spool.as_ref().map(|s| s.max_bytes),
        "fanout_dropped": m.fanout.as_ref().map(|f| f.dropped),
        "fanout_published": m.fanout.as_ref().map(|f| f.published),
    })
}

/// `GET /api/engine`: counters since start (the page turns them into rates) and gauges.
#[utoipa::path(
    get, path = "/api/engine", tag = "operations",
    summary = "The engine's counters and gauges as JSON (the page's engine panel; nginx refuses /metrics)",
    description = "Per record kind (`trades`, `quotes`): `accepted`, `committed`, `ring_depth`, `ring_capacity`, `spool_bytes`, `spool_max_bytes`, `fanout_dropped`, `fanout_published`; `uptime_s`; `replica` (`configured`, `reads_on_replica`, `lag_ms`, `max_lag_ms`); `stream` (`clients`, `dropped_slow`; null without Redis).",
    responses((status = 200, description = "counters and gauges", body = Object, content_type = "application/json")),
    security(("bearer" = [])),
)]
pub async fn engine(State(s): State<AppState>, _key: Authorized<Read>) -> Response {
    let m = s.ingress.metrics();
    let stream = s.stream.as_ref().map(|f| {
        json!({
            "clients": f.counters.clients.load(Relaxed),
            "dropped_slow": f.counters.dropped_slow.load(Relaxed),
        })
    });
    let reads_on_replica = s.reader.on_replica().await;
    Json(json!({
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "trades": kind(&m.trades),
        "quotes": kind(&m.quotes),
        // The reader measures the replica's lag on the replica (at most once a second) and
        // answers from the primary beyond `replica_max_lag_ms`. `lag_ms` is null without a
        // replica and while it cannot be reached.
        "replica": {
            "configured": s.config.read_database_url.is_some(),
            "reads_on_replica": reads_on_replica,
            "lag_ms": s.reader.replica_lag().map(|d| d.as_secs_f64() * 1e3),
            "max_lag_ms": s.config.replica_max_lag_ms,
        },
        "stream": stream,
    }))
    .into_response()
}
