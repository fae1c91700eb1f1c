//! Reading a request body whole: at most `limit` bytes (413 beyond), within
//! `http.body_timeout_ms` of the head (408 beyond). Both refusals close the connection, as
//! the rest of the body is left unread.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;

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
        Ok(Err(_)) => Err(refused(too_large)),
        Err(_) => Err(timed_out(s)),
    }
}

/// [`read`] into `buf`, emptied first: a caller that keeps its buffer between requests
/// reads each body into memory it already has, where [`read`] allocates the body's size
/// afresh (page faults on every large request) and copies the chunks once more.
pub async fn read_into(
    s: &AppState,
    body: Body,
    limit: usize,
    buf: &mut Vec<u8>,
    too_large: impl FnOnce() -> String,
) -> Result<(), Response> {
    buf.clear();
    let announced = HttpBody::size_hint(&body).exact().unwrap_or(0);
    if announced > limit as u64 {
        return Err(refused(too_large));
    }
    buf.reserve(announced as usize);
    let read = async {
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            // A body that fails to arrive is refused as `read` refuses it.
            let chunk = chunk.map_err(|_| ())?;
            if buf.len() + chunk.len() > limit {
                return Err(());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    let within = std::time::Duration::from_millis(s.config.http.body_timeout_ms);
    match tokio::time::timeout(within, read).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => Err(refused(too_large)),
        Err(_) => Err(timed_out(s)),
    }
}

fn refused(too_large: impl FnOnce() -> String) -> Response {
    closing(error(
        StatusCode::PAYLOAD_TOO_LARGE,
        Some("body"),
        too_large(),
    ))
}

fn timed_out(s: &AppState) -> Response {
    closing(error(
        StatusCode::REQUEST_TIMEOUT,
        Some("body"),
        format!(
            "the body did not arrive within {} ms (http.body_timeout_ms)",
            s.config.http.body_timeout_ms
        ),
    ))
}
