//! `POST /api/ticks?ack=accepted|durable|committed`: a JSON array or NDJSON of trades and
//! quotes (the format is [`crate::ticks`]), pushed through the engine's
//! [`Ingress`](christmas_core::Ingress) and answered once they reached the ack level. A
//! refused record is a 400 with its `index` (and `line` in NDJSON) and `field`; a large body
//! is parsed on the blocking pool, so that health checks and small requests go on meanwhile.
//!
//! A client that may retry names itself, so a retry is stored once
//! ([`christmas_core::producer`]): `Producer-Id` with `Producer-Seq` (the sequence of the
//! request's first tick; its ticks take the next ones, so the next request starts at
//! `Producer-Seq` + ticks or later), or `Idempotency-Key` alone (the IETF httpapi draft's
//! header: the key is a producer of one request). The answer counts the ticks a retry left
//! out as `duplicates`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::producer::ProducerId;
use christmas_core::{AckLevel, Ticks};
use serde_json::json;

use crate::http::auth::{Authorized, Ingest};
use crate::http::body;
use crate::http::params::QueryParams;
use crate::http::reply::{bad_request, closing, engine_error, error};
use crate::state::AppState;
use crate::ticks;

/// `POST /api/ticks`: 202 with `accepted`, or 201 with `committed` / `durable`, and the
/// counts of trades and quotes.
#[utoipa::path(
    post, path = "/api/ticks", tag = "ingest",
    summary = "Ingest trades and quotes (a JSON array, or NDJSON); all or nothing",
    description = "Unknown and repeated keys are refused; a bad record is a 400 with its `index` (and `line` in NDJSON), `field` and `reason`. A client that may retry names itself (`Producer-Id` + `Producer-Seq`, or `Idempotency-Key`): a retry is then stored once and the answer counts what it left out as `duplicates`.",
    params(
        ("ack" = Option<String>, Query, pattern = "^(accepted|committed|durable)$",
         description = "`accepted` (default): 202 once in the engine's rings; `committed`: 201 once committed to PostgreSQL; `durable`: 201 once fsynced in the spool (400 without `spool_dir`)"),
        ("Producer-Id" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,200}$",
         description = "The client's stable producer name, with `Producer-Seq`: a resend of ticks this producer already stored is left out."),
        ("Producer-Seq" = Option<u64>, Header, nullable = false, minimum = 1, maximum = 4611686018427387904_u64,
         description = "The sequence of the request's first tick (needs `Producer-Id`); its last tick's must stay within 2^63 - 1 (400 naming `producer_seq` beyond), so the document gives 2^62 as the bound."),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,184}$",
         description = "Instead of `Producer-Id`: the key names a producer of one request."),
    ),
    request_body(content(
        (crate::http::schemas::TickArray = "application/json"),
        (crate::http::schemas::Tick = "application/x-ndjson"),
    ), description = "At most `max_body_bytes` bytes; at least one tick."),
    responses(
        (status = 201, description = "committed (`ack=committed`) or durable (`ack=durable`)", body = crate::http::schemas::TicksAnswer),
        (status = 202, description = "accepted (`ack=accepted`)", body = crate::http::schemas::TicksAnswer),
        (status = 400, description = "a bad record, parameter or header, named", body = crate::http::schemas::ErrorBody),
        (status = 408, description = "the body did not arrive within `http.body_timeout_ms`; the connection is closed", body = crate::http::schemas::ErrorBody),
        (status = 413, description = "the body is over `max_body_bytes`; the connection is closed", body = crate::http::schemas::ErrorBody),
        (status = 503, description = "shutting down, or the store is unreachable (with `ack=committed`)", body = crate::http::schemas::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn post_ticks(
    State(s): State<AppState>,
    QueryParams(q): QueryParams,
    _key: Authorized<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ack = match ack_level(&s, &q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let producer = match producer(&headers) {
        Ok(p) => p,
        Err(r) => return closing(r),
    };
    let limit = s.config.http.max_body_bytes;
    let mut bufs = RequestBuffers::take();
    let too_large = || format!("body larger than {limit} bytes");
    if let Err(r) = body::read_into(&s, body, limit, &mut bufs.body, too_large).await {
        return r;
    }
    let bufs = match parse_off_the_workers(bufs).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return refused(&e),
        Err(r) => return r,
    };
    if bufs.ticks.is_empty() {
        return bad_request("body", "no ticks in the request");
    }
    let pushed = match &producer {
        Some((id, first_seq)) => s.ingress.push_from(id, *first_seq, &bufs.ticks, ack).await,
        None => s.ingress.push(&bufs.ticks, ack).await,
    };
    // The records are in the rings: the buffers can serve the next request while this one
    // waits for its ack.
    drop(bufs);
    let acked = match pushed {
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
    let mut body = json!({
        ack.as_str(): acked.records(),
        "trades": acked.trades,
        "quotes": acked.quotes,
    });
    if producer.is_some() {
        body["duplicates"] = acked.duplicates.into();
    }
    (status, Json(body)).into_response()
}

/// The request's producer and its first sequence, from `Producer-Id` + `Producer-Seq` or
/// `Idempotency-Key`; `None` when it names none. A 400 naming the header otherwise.
fn producer(headers: &HeaderMap) -> Result<Option<(ProducerId, u64)>, Response> {
    let text = |name: &'static str| -> Result<Option<&str>, Response> {
        match headers.get(name).map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v.trim())),
            Some(Err(_)) => Err(bad_request(name, "must be printable ASCII")),
        }
    };
    let id = text("Producer-Id")?;
    let seq = text("Producer-Seq")?;
    let key = text("Idempotency-Key")?;
    let named = |r: Result<ProducerId, christmas_core::FieldError>| {
        r.map_err(|e| bad_request(e.field, e.reason))
    };
    match (id, seq, key) {
        (None, None, None) => Ok(None),
        (Some(_), _, Some(_)) => Err(bad_request(
            "Idempotency-Key",
            "send either Idempotency-Key or Producer-Id with Producer-Seq, not both",
        )),
        (None, None, Some(key)) => {
            // The draft's keys are often quoted structured-field strings.
            let key = key.trim_matches('"');
            Ok(Some((named(ProducerId::for_idempotency_key(key))?, 1)))
        }
        (None, Some(_), _) => Err(bad_request("Producer-Id", "Producer-Seq needs a Producer-Id")),
        (Some(_), None, _) => Err(bad_request(
            "Producer-Seq",
            "Producer-Id needs a Producer-Seq: the sequence of the request's first tick (1 or more)",
        )),
        (Some(id), Some(seq), None) => {
            let seq = seq
                .parse::<u64>()
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| bad_request("Producer-Seq", "must be a whole number from 1"))?;
            Ok(Some((named(ProducerId::new(id))?, seq)))
        }
    }
}

/// Bodies above this are parsed on a blocking thread: a few hundred KiB parse in about a
/// millisecond, a full 8 MiB body in tens, which would stall the async workers (and
/// `/health`) for that long.
const PARSE_INLINE_BYTES: usize = 256 << 10;

/// A request's body and the ticks read from it, kept between requests (see [`IDLE`]): a
/// 5,000-tick body is about 600 KB and its ticks 300 KB, and reading each request into fresh
/// memory cost a page fault per 4 KiB and a copy at every doubling of the vectors.
#[derive(Debug, Default)]
struct RequestBuffers {
    body: Vec<u8>,
    ticks: Ticks,
}

/// Buffers not in use, shared by every connection (a lock per request, not per tick).
static IDLE: Mutex<Vec<RequestBuffers>> = Mutex::new(Vec::new());
/// Idle buffers kept at most: with [`KEEP_BODY_BYTES`] and [`KEEP_RECORDS`], about 40 MB
/// when all are full; requests beyond allocate their own.
const IDLE_BUFFERS: usize = 16;
/// A body buffer larger than this is freed after its request.
const KEEP_BODY_BYTES: usize = 1 << 20;
/// Records of each kind a kept buffer has room for.
const KEEP_RECORDS: usize = 16_384;

impl RequestBuffers {
    /// An idle set, or a new empty one.
    fn take() -> Self {
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        idle.pop().unwrap_or_default()
    }
}

impl Drop for RequestBuffers {
    /// Gives the buffers back for the next request, unless they grew too large.
    fn drop(&mut self) {
        if self.body.capacity() > KEEP_BODY_BYTES {
            return;
        }
        self.body.clear();
        self.ticks.clear_and_release_over(KEEP_RECORDS);
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_BUFFERS {
            idle.push(RequestBuffers {
                body: std::mem::take(&mut self.body),
                ticks: std::mem::take(&mut self.ticks),
            });
        }
    }
}

/// [`ticks::parse_into`] of the body into the buffers' ticks, inline for a small body, on
/// Tokio's blocking pool for a large one.
async fn parse_off_the_workers(
    mut bufs: RequestBuffers,
) -> Result<Result<RequestBuffers, ticks::TickError>, Response> {
    let inline = bufs.body.len() <= PARSE_INLINE_BYTES;
    let parse = move || {
        let RequestBuffers { body, ticks } = &mut bufs;
        ticks::parse_into(body, ticks).map(|()| bufs)
    };
    if inline {
        return Ok(parse());
    }
    tokio::task::spawn_blocking(parse).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("parsing the ticks failed: {e}"),
        )
    })
}

/// The 400 for a refused record: where it is (`index`, and `line` in NDJSON) and why.
fn refused(e: &ticks::TickError) -> Response {
    let at = match e.line {
        Some(line) => format!("index {} (line {line})", e.index),
        None => format!("index {}", e.index),
    };
    let mut body = json!({
        "error": format!("invalid tick at {at}: {}: {}", e.field, e.reason),
        "index": e.index,
        "field": e.field,
        "reason": e.reason,
    });
    if let Some(line) = e.line {
        body["line"] = line.into();
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
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
            "ack=durable needs a spool (spool.dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have; use accepted or committed",
        ));
    }
    Ok(ack)
}
