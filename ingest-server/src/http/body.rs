//! Reading a request body whole: at most `limit` bytes (413 beyond), within
//! `http.body_timeout_ms` of the head (408 beyond). Both refusals close the connection, as
//! the rest of the body is left unread.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;

use crate::http::reply::{closing, error};
use crate::state::AppState;

/// The body's bytes, or the 413 / 408 reply; `too_large` says what the limit is.
pub async fn read(
    s: &AppState,
    body: Body,
    limit: usize,
    too_large: impl FnOnce() -> String,
) -> Result<Bytes, Response> {
    let within = std::time::Duration::from_millis(s.config.http.body_timeout_ms);
    match tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(closing(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("body"),
            too_large(),
        ))),
        Err(_) => Err(closing(error(
            StatusCode::REQUEST_TIMEOUT,
            Some("body"),
            format!(
                "the body did not arrive within {} ms (http.body_timeout_ms)",
                s.config.http.body_timeout_ms
            ),
        ))),
    }
}
