//! Operations endpoints: liveness, readiness and Prometheus metrics (the OpenAPI document
//! is [`super::api_doc::openapi`]).
//! None needs a key: probes and scrapers do not carry one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::metrics;
use crate::state::AppState;

/// `GET /health`: the process is alive.
#[utoipa::path(
    get, path = "/health", tag = "operations", summary = "The process is alive",
    responses((status = 200, description = "`{\"status\": \"ok\", \"uptime_s\": n}`", body = Object, content_type = "application/json")),
)]
pub async fn health(State(s): State<AppState>) -> Response {
    Json(json!({ "status": "ok", "uptime_s": s.started.elapsed().as_secs() })).into_response()
}

/// `GET /ready`: database and Redis reachable, rings below the high-water mark; the order
/// events broker's state is shown beside them.
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    summary = "Database and Redis reachable, rings below the high-water mark",
    responses(
        (status = 200, description = "ready: `{\"ready\": true, \"checks\": {...}}`", body = Object, content_type = "application/json"),
        (status = 503, description = "not ready: `{\"ready\": false, \"checks\": {...}}`", body = Object, content_type = "application/json"),
    ),
)]
pub async fn ready(State(s): State<AppState>) -> Response {
    // A silent network (a cut link, no RST) must not hang the probe.
    let within = std::time::Duration::from_secs(2);
    let database = matches!(
        tokio::time::timeout(within, s.reader.ping()).await,
        Ok(Ok(()))
    );
    let redis = match &s.cache {
        Some(c) => Some(matches!(
            tokio::time::timeout(within, c.ping()).await,
            Ok(Ok(()))
        )),
        None => None,
    };
    let metrics = s.ingress.metrics();
    let fullest = [metrics.trades, metrics.quotes]
        .iter()
        .flat_map(|m| {
            m.shards
                .iter()
                .map(|sh| sh.ring_depth as f64 / sh.ring_capacity.max(1) as f64)
        })
        .fold(0.0, f64::max);
    let rings = fullest < s.config.ready_ring_fraction;
    let open = s.ingress.is_open();
    let ok = database && redis.unwrap_or(true) && rings && open;
    // Shown, not required: while the events broker is down orders are still taken and
    // their events wait in the outbox, so the daemon stays in the balancer.
    let orders = s.orders.metrics();
    let events = orders
        .events_backend
        .map(|backend| json!({ "backend": backend, "connected": orders.events_broker_up }));
    let body = Json(json!({
        "ready": ok,
        "checks": { "database": database, "redis": redis, "rings": rings, "fullest_ring": fullest, "accepting": open, "order_events": events },
    }));
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", summary = "Prometheus text",
    responses((status = 200, description = "metrics", body = String, content_type = "text/plain")),
)]
pub async fn metrics(State(s): State<AppState>) -> Response {
    // Judges the replica (at most once a second), so the lag gauge is fresh.
    s.reader.on_replica().await;
    let text = metrics::render(&s);
    ([("content-type", metrics::CONTENT_TYPE)], text).into_response()
}
