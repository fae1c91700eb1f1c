//! The HTTP API. [`router`] builds it; tests call it directly or over a socket.
//!
//! Every error is JSON: `{"error": "...", "field": "..."}` (plus `index` for a bad tick).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use christmas_core::frame::AckLevel;
use christmas_core::query::BarInterval;
use christmas_core::{Quote, Symbol, Trade};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::auth::{self, Access, Scope};
use crate::server::AppState;
use crate::timefmt::{format_ns, parse_ns};
use crate::{metrics_text, ticks};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// All routes, with request ids, timeouts, logs and metrics around them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/ticks", post(post_ticks))
        .route("/api/market-data", get(latest))
        .route("/api/market-data/{symbol}/trades", get(trades))
        .route("/api/market-data/{symbol}/bars", get(bars))
        .route(
            "/api/orders",
            post(crate::orders::submit).get(crate::orders::list),
        )
        .route(
            "/api/orders/{id}",
            get(crate::orders::get).delete(crate::orders::cancel),
        )
        .route("/api/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, None, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A JSON error response.
pub fn error(status: StatusCode, field: Option<&str>, message: impl std::fmt::Display) -> Response {
    let mut body = json!({ "error": message.to_string() });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

/// Request id, timeout, log line and metrics for every request.
///
/// The log line is at `debug` for answered requests, `info` for client errors and `warn`
/// for server errors: a line per request at tens of thousands a second costs more than
/// the request (`RUST_LOG=christmas_ingest=debug` turns the full access log on).
///
/// The request span is at `debug` for the same reason: the JSON formatter renders an
/// enabled span's fields when it opens, whether or not a line is ever logged inside it
/// (about 6 % of the daemon's CPU under `wrk` on `POST /api/orders`). The access line
/// carries the id either way.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| v.len() <= 64 && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            let id = format!(
                "{:08x}-{}",
                s.boot,
                s.requests.fetch_add(1, Ordering::Relaxed)
            );
            HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("-"))
        });
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let start = Instant::now();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    let id_text = id.to_str().unwrap_or("-");
    let span = tracing::debug_span!("request", id = id_text, %method, %route);
    let mut resp = match tokio::time::timeout(
        s.config.request_timeout(),
        next.run(req).instrument(span),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, None, "request timed out"),
    };
    let micros = start.elapsed().as_micros() as u64;
    let status = resp.status().as_u16();
    s.http.record(method.as_str(), route, status, micros);
    match status {
        500.. => tracing::warn!(id = id_text, %method, %route, status, micros, "request"),
        400..=499 => tracing::info!(id = id_text, %method, %route, status, micros, "request"),
        _ => tracing::debug!(id = id_text, %method, %route, status, micros, "request"),
    }
    resp.headers_mut().insert("x-request-id", id);
    resp
}

/// 401/403 unless the request's key has `scope` (or no key is needed).
pub fn authorize(s: &AppState, headers: &HeaderMap, scope: Scope) -> Result<(), Response> {
    account(s, headers, scope).map(|_| ())
}

/// The account (key name) the request acts for: `default` when no keys are configured.
pub fn account(s: &AppState, headers: &HeaderMap, scope: Scope) -> Result<String, Response> {
    if !s.config.needs_key(scope) {
        return Ok("default".to_string());
    }
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    match auth::check(&s.config.api_keys, header, scope) {
        Access::Allowed(name) => Ok(name.unwrap_or_else(|| "default".to_string())),
        Access::Unauthenticated => Err(error(
            StatusCode::UNAUTHORIZED,
            Some("authorization"),
            "missing or unknown API key (Authorization: Bearer <key>)",
        )),
        Access::Forbidden(name) => Err(error(
            StatusCode::FORBIDDEN,
            Some("authorization"),
            format!("key {name:?} may not {scope:?}"),
        )),
    }
}

pub fn engine_error(e: christmas_core::Error) -> Response {
    match e {
        christmas_core::Error::Closed => {
            error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down")
        }
        other => error(StatusCode::SERVICE_UNAVAILABLE, None, other),
    }
}

/// `POST /api/ticks?ack=accepted|committed`
async fn post_ticks(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = authorize(&s, &headers, Scope::Ingest) {
        return r;
    }
    let ack = match q.get("ack").map(|a| a.parse::<AckLevel>()).transpose() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, Some("ack"), e),
    };
    if ack == AckLevel::Durable && s.config.spool_dir.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            Some("ack"),
            "ack=durable needs a spool (spool_dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have; use accepted or committed",
        );
    }
    let limit = s.config.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("body"),
                format!("body larger than {limit} bytes"),
            )
        }
    };
    let parsed = match ticks::parse(&bytes) {
        Ok(p) => p,
        Err(e) => return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("invalid tick at index {}: {}: {}", e.index, e.field, e.reason),
                "index": e.index,
                "field": e.field,
                "reason": e.reason,
            })),
        )
            .into_response(),
    };
    if parsed.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            Some("body"),
            "no ticks in the request",
        );
    }
    let (n_trades, n_quotes) = (parsed.trades.len(), parsed.quotes.len());
    match ack {
        AckLevel::Committed | AckLevel::Durable => {
            let durable = ack == AckLevel::Durable;
            let receipts = async {
                let t = match (n_trades, durable) {
                    (0, _) => None,
                    (_, true) => Some(s.trades.push_durable(&parsed.trades).await?),
                    (_, false) => Some(s.trades.push_with_receipt(&parsed.trades).await?),
                };
                let q = match (n_quotes, durable) {
                    (0, _) => None,
                    (_, true) => Some(s.quotes.push_durable(&parsed.quotes).await?),
                    (_, false) => Some(s.quotes.push_with_receipt(&parsed.quotes).await?),
                };
                if let Some(t) = t {
                    t.wait().await?;
                }
                if let Some(q) = q {
                    q.wait().await?;
                }
                christmas_core::Result::Ok(())
            };
            let key = if durable { "durable" } else { "committed" };
            match receipts.await {
                Ok(_) => (
                    StatusCode::CREATED,
                    Json(
                        json!({ key: n_trades + n_quotes, "trades": n_trades, "quotes": n_quotes }),
                    ),
                )
                    .into_response(),
                Err(e) => engine_error(e),
            }
        }
        _ => {
            let pushed = async {
                s.trades.push_batch_async(&parsed.trades).await?;
                s.quotes.push_batch_async(&parsed.quotes).await
            };
            match pushed.await {
                Ok(()) => (
                    StatusCode::ACCEPTED,
                    Json(json!({ "accepted": n_trades + n_quotes, "trades": n_trades, "quotes": n_quotes })),
                )
                    .into_response(),
                Err(e) => engine_error(e),
            }
        }
    }
}

fn trade_json(t: &Trade) -> Value {
    json!({
        "time": format_ns(t.time_ns),
        "time_ns": t.time_ns,
        "price": t.price,
        "volume": t.volume,
        "side": (t.side.code() as char).to_string(),
        "exchange_seq": t.exchange_seq,
    })
}

fn quote_json(q: &Quote) -> Value {
    json!({
        "time": format_ns(q.time_ns),
        "time_ns": q.time_ns,
        "bid": q.bid,
        "ask": q.ask,
        "bid_size": q.bid_size,
        "ask_size": q.ask_size,
    })
}

fn symbol_param(s: Option<&String>) -> Result<Symbol, Response> {
    let s = s.ok_or_else(|| error(StatusCode::BAD_REQUEST, Some("symbol"), "required"))?;
    Symbol::new(s).map_err(|e| error(StatusCode::BAD_REQUEST, Some("symbol"), e))
}

fn time_param(q: &HashMap<String, String>, field: &str, default: i64) -> Result<i64, Response> {
    match q.get(field) {
        None => Ok(default),
        Some(v) => parse_ns(v).map_err(|e| error(StatusCode::BAD_REQUEST, Some(field), e)),
    }
}

/// `GET /api/market-data?symbol=ESU4`: latest trade and quote, from the Redis cache when it
/// has them, else from the database.
async fn latest(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&s, &headers, Scope::Read) {
        return r;
    }
    let symbol = match symbol_param(q.get("symbol")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(cache) = &s.cache {
        match cache.get(symbol).await {
            Ok(l) if l.trade.is_some() || l.quote.is_some() => {
                return Json(json!({
                    "symbol": symbol.as_str(),
                    "source": "redis",
                    "trade": l.trade.map(|(t, seq)| { let mut v = trade_json(&t); v["seq"] = json!(seq); v }),
                    "quote": l.quote.map(|(q, seq)| { let mut v = quote_json(&q); v["seq"] = json!(seq); v }),
                }))
                .into_response()
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "latest cache unavailable; reading the database"),
        }
    }
    match s.reader.latest(symbol).await {
        Ok(l) => Json(json!({
            "symbol": symbol.as_str(),
            "source": "database",
            "trade": l.trade.as_ref().map(trade_json),
            "quote": l.quote.as_ref().map(quote_json),
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e),
    }
}

/// The common part of the ranged reads: the key, the path's symbol, `from` and `to`.
fn range_read(
    s: &AppState,
    headers: &HeaderMap,
    symbol: &str,
    q: &HashMap<String, String>,
    default_from: i64,
    default_to: i64,
) -> Result<(Symbol, i64, i64), Response> {
    authorize(s, headers, Scope::Read)?;
    let symbol = symbol_param(Some(&symbol.to_string()))?;
    Ok((
        symbol,
        time_param(q, "from", default_from)?,
        time_param(q, "to", default_to)?,
    ))
}

/// `GET /api/market-data/{symbol}/trades?from&to&limit`
async fn trades(
    State(s): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (symbol, from, to) = match range_read(&s, &headers, &symbol, &q, i64::MIN / 2, i64::MAX / 2)
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 1_000,
        Some(Ok(l)) if (1..=100_000).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                Some("limit"),
                "must be 1 to 100000",
            )
        }
    };
    match s.reader.trades(symbol, from, to, limit).await {
        Ok(t) => Json(json!({
            "symbol": symbol.as_str(),
            "trades": t.iter().map(trade_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e),
    }
}

/// `GET /api/market-data/{symbol}/bars?interval=1m&from&to`
async fn bars(
    State(s): State<AppState>,
    Path(symbol): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let now = christmas_core::query::unix_ns(std::time::SystemTime::now());
    let (symbol, from, to) =
        match range_read(&s, &headers, &symbol, &q, now - 86_400_000_000_000, now) {
            Ok(r) => r,
            Err(r) => return r,
        };
    let interval = match q
        .get("interval")
        .map_or(Ok(BarInterval::Minute1), |i| i.parse())
    {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, Some("interval"), e),
    };
    if from > to {
        return error(
            StatusCode::BAD_REQUEST,
            Some("from"),
            "must not be after to",
        );
    }
    match s.reader.bars(symbol, interval, from, to).await {
        Ok(b) => Json(json!({
            "symbol": symbol.as_str(),
            "interval": interval.as_str(),
            "bars": b.iter().map(|b| json!({
                "start": format_ns(b.start_ns),
                "start_ns": b.start_ns,
                "open": b.open, "high": b.high, "low": b.low, "close": b.close,
                "volume": b.volume, "trades": b.trades,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, None, e),
    }
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

/// `GET /health`: the process is alive.
async fn health(State(s): State<AppState>) -> Response {
    Json(json!({ "status": "ok", "uptime_s": s.started.elapsed().as_secs() })).into_response()
}

/// `GET /ready`: database and Redis reachable, rings below the high-water mark.
async fn ready(State(s): State<AppState>) -> Response {
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
    let fullest = [s.trades.metrics(), s.quotes.metrics()]
        .iter()
        .flat_map(|m| {
            m.shards
                .iter()
                .map(|sh| sh.ring_depth as f64 / sh.ring_capacity.max(1) as f64)
        })
        .fold(0.0, f64::max);
    let rings = fullest < s.config.ready_ring_fraction;
    let open = !s.trades.is_closed() && !s.quotes.is_closed();
    let ok = database && redis.unwrap_or(true) && rings && open;
    let body = Json(json!({
        "ready": ok,
        "checks": { "database": database, "redis": redis, "rings": rings, "fullest_ring": fullest, "accepting": open },
    }));
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(s): State<AppState>) -> Response {
    let text = metrics_text::render(&s);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
