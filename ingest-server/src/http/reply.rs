//! Replies every handler shares: the JSON error (`{"error": "...", "field": "..."}`) and
//! how an engine error reads to a client.

use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A JSON error response: `{"error": message}`, plus `"field"` when one field is at fault.
pub fn error(status: StatusCode, field: Option<&str>, message: impl std::fmt::Display) -> Response {
    let mut body = json!({ "error": message.to_string() });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

/// `reply` with `Connection: close`, for a refusal sent before the request body was read:
/// the unread rest of the body is still on the connection, so the server closes it after
/// this reply, and the header tells the client not to reuse it.
pub fn closing(mut reply: Response) -> Response {
    reply
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    reply
}

/// 400 naming the offending `field`.
pub fn bad_request(field: &str, reason: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, Some(field), reason)
}

/// 503 for an engine that refused the work: shutting down, or a store unreachable.
pub fn engine_error(e: christmas_core::Error) -> Response {
    match e {
        christmas_core::Error::Closed => {
            error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down")
        }
        christmas_core::Error::InvalidField { field, reason } => bad_request(field, reason),
        other => error(StatusCode::SERVICE_UNAVAILABLE, None, other),
    }
}
