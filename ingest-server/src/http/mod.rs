//! The HTTP API: [`router`] builds it (routes, the request middleware, the 404 fallback);
//! the handlers live by area in the submodules. Tests call it directly or over a socket.
//!
//! Every error is JSON: `{"error": "...", "field": "..."}` (plus `index` for a bad tick).
//! A handler that needs an API key says so with an [`Authorized`](auth::Authorized)
//! argument.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use tracing::Instrument;

use crate::state::AppState;

pub mod api_doc;
pub mod auth;
pub mod body;
pub mod engine;
pub mod market_data;
pub mod ops;
pub mod orders;
pub mod params;
pub mod reply;
pub mod schemas;
pub mod stream;
pub mod ticks;

/// The API's routes (the page's are [`crate::web::routes`]). Each handler carries its
/// `#[utoipa::path]`, and the OpenAPI test checks that the document ([`api_doc`]) has a
/// path for each of these and no other (besides the page's `/`).
fn api_routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/ticks", post(ticks::post_ticks)),
        ("/api/market-data", get(market_data::latest)),
        ("/api/market-data/{symbol}/trades", get(market_data::trades)),
        ("/api/market-data/{symbol}/bars", get(market_data::bars)),
        ("/api/orders", post(orders::submit).get(orders::list)),
        ("/api/orders/{id}", get(orders::get).delete(orders::cancel)),
        ("/api/stream", get(stream::stream)),
        ("/api/engine", get(engine::engine)),
        ("/api/openapi.json", get(api_doc::openapi)),
        ("/health", get(ops::health)),
        ("/ready", get(ops::ready)),
        ("/metrics", get(ops::metrics)),
    ]
}

/// The paths [`router`] serves besides the page's files.
pub fn api_paths() -> Vec<&'static str> {
    api_routes().into_iter().map(|(path, _)| path).collect()
}

/// All routes, with request ids, timeouts, logs and metrics around them.
pub fn router(state: AppState) -> Router {
    api_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, method)| r.route(path, method))
        .merge(crate::web::routes(&state))
        .fallback(|| async { reply::error(StatusCode::NOT_FOUND, None, "no such endpoint") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The operations listener's routes (`/health`, `/ready`, `/metrics`), with the same
/// request middleware; anything else is a 404.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async {
            reply::error(
                StatusCode::NOT_FOUND,
                None,
                "the operations port serves /health, /ready and /metrics",
            )
        })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A JSON 405 naming the method; axum adds the `Allow` header to it.
async fn method_not_allowed(method: Method) -> Response {
    reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        Some("method"),
        format!("{method} is not allowed here (see Allow)"),
    )
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
        Err(_) => reply::error(StatusCode::SERVICE_UNAVAILABLE, None, "request timed out"),
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
