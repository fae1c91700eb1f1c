//! `POST /api/ticks?ack=accepted|durable|committed`: a JSON array or NDJSON of trades and
//! quotes (the format is [`crate::ticks`]), pushed through the engine's
//! [`Ingress`](christmas_core::Ingress) and answered once they reached the ack level.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::AckLevel;
use serde_json::json;

use crate::http::auth::{Authorized, Ingest};
use crate::http::reply::{bad_request, engine_error, error};
use crate::state::AppState;
use crate::ticks;

/// `POST /api/ticks`: 202 with `accepted`, or 201 with `committed` / `durable`, and the
/// counts of trades and quotes.
pub async fn post_ticks(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    _key: Authorized<Ingest>,
    body: Body,
) -> Response {
    let ack = match ack_level(&s, &q) {
        Ok(a) => a,
        Err(r) => return r,
    };
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
        return bad_request("body", "no ticks in the request");
    }
    let acked = match s.ingress.push(&parsed, ack).await {
        Ok(pending) => pending.wait().await,
        Err(e) => Err(e),
    };
    let acked = match acked {
        Ok(a) => a,
        Err(e) => return engine_error(e),
    };
    let status = match ack {
        AckLevel::Accepted => StatusCode::ACCEPTED,
        AckLevel::Durable | AckLevel::Committed => StatusCode::CREATED,
    };
    let body = json!({
        ack.as_str(): acked.records(),
        "trades": acked.trades,
        "quotes": acked.quotes,
    });
    (status, Json(body)).into_response()
}

/// The `ack` query parameter (default `accepted`); `durable` only with a spool.
fn ack_level(s: &AppState, q: &HashMap<String, String>) -> Result<AckLevel, Response> {
    let ack = match q.get("ack").map(|a| a.parse::<AckLevel>()).transpose() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => return Err(bad_request("ack", e)),
    };
    if !s.ingress.supports(ack) {
        return Err(bad_request(
            "ack",
            "ack=durable needs a spool (spool_dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have; use accepted or committed",
        ));
    }
    Ok(ack)
}
