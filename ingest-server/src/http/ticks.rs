//! `POST /api/ticks?ack=accepted|durable|committed`: a JSON array or NDJSON of trades and
//! quotes (the format is [`crate::ticks`]), answered once the ticks reached the ack level.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::frame::AckLevel;
use serde_json::json;

use crate::http::auth::{Authorized, Ingest};
use crate::http::reply::{bad_request, engine_error, error};
use crate::state::AppState;
use crate::ticks::{self, ParsedTicks};

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
    if let Err(e) = push(&s, &parsed, ack).await {
        return engine_error(e);
    }
    let (n_trades, n_quotes) = (parsed.trades.len(), parsed.quotes.len());
    let (status, key) = match ack {
        AckLevel::Accepted => (StatusCode::ACCEPTED, "accepted"),
        AckLevel::Durable => (StatusCode::CREATED, "durable"),
        AckLevel::Committed => (StatusCode::CREATED, "committed"),
    };
    let body = json!({ key: n_trades + n_quotes, "trades": n_trades, "quotes": n_quotes });
    (status, Json(body)).into_response()
}

/// The `ack` query parameter (default `accepted`); `durable` only with a spool.
fn ack_level(s: &AppState, q: &HashMap<String, String>) -> Result<AckLevel, Response> {
    let ack = match q.get("ack").map(|a| a.parse::<AckLevel>()).transpose() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => return Err(bad_request("ack", e)),
    };
    if ack == AckLevel::Durable && s.config.spool_dir.is_none() {
        return Err(bad_request(
            "ack",
            "ack=durable needs a spool (spool_dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have; use accepted or committed",
        ));
    }
    Ok(ack)
}

/// The ack-level dispatch: pushes the request's trades and quotes and returns once they
/// reached `ack` (in the rings, spooled and fsynced, or committed).
async fn push(s: &AppState, parsed: &ParsedTicks, ack: AckLevel) -> christmas_core::Result<()> {
    let durable = match ack {
        AckLevel::Accepted => {
            s.trades.push_batch_async(&parsed.trades).await?;
            return s.quotes.push_batch_async(&parsed.quotes).await;
        }
        AckLevel::Durable => true,
        AckLevel::Committed => false,
    };
    // Both kinds are handed over before either is awaited, so they commit side by side.
    let trades = match (parsed.trades.is_empty(), durable) {
        (true, _) => None,
        (false, true) => Some(s.trades.push_durable(&parsed.trades).await?),
        (false, false) => Some(s.trades.push_with_receipt(&parsed.trades).await?),
    };
    let quotes = match (parsed.quotes.is_empty(), durable) {
        (true, _) => None,
        (false, true) => Some(s.quotes.push_durable(&parsed.quotes).await?),
        (false, false) => Some(s.quotes.push_with_receipt(&parsed.quotes).await?),
    };
    if let Some(t) = trades {
        t.wait().await?;
    }
    if let Some(q) = quotes {
        q.wait().await?;
    }
    Ok(())
}
