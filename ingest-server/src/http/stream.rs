//! `GET /api/stream?symbols=A,B`: live trades and quotes as Server-Sent Events.
//!
//! **Why SSE and not WebSocket.** The feed goes one way (server to browser); SSE is plain
//! HTTP/1.1, so it passes nginx, the auth extractor, the request log and every proxy
//! unchanged, and the browser's `EventSource` reconnects by itself and sends
//! `Last-Event-ID`, which is exactly the resume this feed offers. A WebSocket would need an
//! upgrade path through nginx, its own framing, and a hand-written reconnect on the page.
//!
//! **Events.** `trade` / `quote`: one fan-out message (the Redis JSON form, `first_seq` …
//! `first_seq + n − 1`); `gap`: `{symbol, kind, from, to, reason}` (ticks this client will
//! not get: `missed`, `not_retained`; or `restarted`, the engine's sequences began again);
//! `dropped`: `{reason, buffer, buffer_bytes}` then the stream ends (the client read too slowly);
//! `closing`: the daemon is shutting down. Comments (`: keep-alive`) every 15 s.
//!
//! **Ids.** Each tick event's `id` is the client's position in every symbol it watches:
//! `SYM:trade_seq:quote_seq` joined by `,`. A reconnect sending it as `Last-Event-ID` (the
//! browser does so by itself) is resumed from the symbol's capped Redis stream; what the
//! stream no longer holds is reported as a `gap`.
//!
//! **Auth.** As the other reads (`read` scope when `auth_reads` is on). `EventSource`
//! cannot set headers, so the key may also come in the cookie `christmas_key` (the page
//! sets it, `Path=/api/stream; SameSite=Strict`). Not a query parameter: a URL lands in
//! access logs, proxy logs and browser history; a cookie does not.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use christmas_core::fanout::{TickKind, TickMessage};
use christmas_core::Symbol;
use serde_json::json;
use tokio::sync::mpsc;

use crate::http::auth::{Authorized, Read};
use crate::http::params::QueryParams;
use crate::http::reply::{bad_request, error};
use crate::live_feed::{source_hash, Ending, Frame, JoinError, LiveFeed, Registration};
use crate::state::AppState;

/// Most symbols one stream may watch.
pub const MAX_SYMBOLS: usize = 64;
/// How often an idle stream sends a comment, so proxies and browsers keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Stream entries read per round trip when resuming.
const RESUME_PAGE: usize = 500;
/// Most entries read back when resuming one symbol (the stream keeps about this many).
const RESUME_MAX: usize = 20_000;
/// Most frames taken from a client's buffer into one chunk of its body.
const FRAMES_PER_CHUNK: usize = 64;
/// The cookie `EventSource` clients send their key in.
pub const KEY_COOKIE: &str = "christmas_key";

/// [`Authorized<Read>`], also taking the key from the `christmas_key` cookie.
#[derive(Debug)]
pub struct StreamReader(pub Authorized<Read>);

impl FromRequestParts<AppState> for StreamReader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            if let Some(key) = cookie(&parts.headers, KEY_COOKIE) {
                if let Ok(v) = HeaderValue::try_from(format!("Bearer {key}")) {
                    parts.headers.insert(header::AUTHORIZATION, v);
                }
            }
        }
        Authorized::<Read>::from_request_parts(parts, s)
            .await
            .map(StreamReader)
    }
}

/// The value of cookie `name`, if the request has it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// `GET /api/stream?symbols=A,B`: see the module doc.
#[utoipa::path(
    get, path = "/api/stream", tag = "market data",
    summary = "Live trades and quotes as Server-Sent Events, relayed from the Redis fan-out",
    description = "Events: `trade` / `quote` (data: one fan-out message `{source, symbol, kind, first_seq, trades, quotes}`; tick i has sequence first_seq + i, per symbol and kind), `gap` (`{symbol, kind, reason, from?, to?}`; reason `missed`, `not_retained` or `restarted`), `dropped` (`{reason, buffer, buffer_bytes}`: the client read too slowly; the stream ends), `closing` (the daemon is shutting down). Comments `: keep-alive` every 15 s. Each tick event's id is `SYM:trade_seq:quote_seq` for every watched symbol, joined by `,`; sent back as `Last-Event-ID` the stream resumes from each symbol's capped Redis stream, with a `gap` for what it no longer holds. Needs the `read` scope when `auth_reads` is on: `Authorization: Bearer` or the `christmas_key` cookie.",
    params(
        ("symbols" = String, Query, pattern = r"^[!-+\--9;-~]{1,31}(,[!-+\--9;-~]{1,31}){0,63}$",
         description = "1 to 64 symbols, comma-separated (none may hold `:`)"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume after this id (the last one received)."),
    ),
    responses(
        (status = 200, description = "the event stream", body = String, content_type = "text/event-stream"),
        (status = 400, description = "bad symbols or Last-Event-ID, named", body = crate::http::schemas::ErrorBody),
        (status = 503, description = "no Redis configured, Redis unreachable, or shutting down", body = crate::http::schemas::ErrorBody),
    ),
    security(("bearer" = []), ("keyCookie" = [])),
)]
pub async fn stream(
    State(s): State<AppState>,
    _key: StreamReader,
    QueryParams(q): QueryParams,
    headers: HeaderMap,
) -> Response {
    let Some(feed) = s.stream.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "no live feed: the daemon has no Redis (redis_url)",
        );
    };
    let symbols = match parse_symbols(q.get("symbols")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| parse_cursor(id, &symbols))
        .unwrap_or_default();
    let (registration, rx) = match feed.join(&symbols).await {
        Ok(r) => r,
        Err(JoinError::Closing) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, None, "shutting down")
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, None, e),
    };
    let mut client = ClientFeed::new(feed.clone(), registration, rx, symbols);
    // "retry" sets how soon the browser reconnects after the stream ends.
    client.out.extend_from_slice(b"retry: 1000\n\n");
    if !resume.is_empty() {
        client.resume(&feed, resume).await;
    }
    let body = futures_util::stream::unfold(client, |mut c| async move {
        c.next_chunk().await.map(|b| (Ok::<_, Infallible>(b), c))
    });
    let mut reply = Response::new(Body::from_stream(body));
    let h = reply.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx passes each event on at once instead of filling its buffer first.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    reply
}

/// `symbols=A,B`: 1 to [`MAX_SYMBOLS`] distinct symbols, none holding `:` or `,` (the id
/// uses them).
fn parse_symbols(raw: Option<&String>) -> Result<Vec<Symbol>, Response> {
    let raw = raw.ok_or_else(|| bad_request("symbols", "required (symbols=A,B)"))?;
    let mut out: Vec<Symbol> = Vec::new();
    for s in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if s.contains(':') {
            return Err(bad_request("symbols", format!("{s:?} holds a ':'")));
        }
        let sym = Symbol::new(s).map_err(|e| bad_request("symbols", e))?;
        if !out.contains(&sym) {
            out.push(sym);
        }
    }
    if out.is_empty() || out.len() > MAX_SYMBOLS {
        return Err(bad_request(
            "symbols",
            format!("between 1 and {MAX_SYMBOLS} symbols, comma-separated"),
        ));
    }
    Ok(out)
}

/// Sequences a client has seen for one symbol and kind, and the engine run they count in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    seq: u64,
    /// [`source_hash`] of the run; 0 when it came from a `Last-Event-ID` (unknown).
    source: u64,
}

/// Where a client is in one symbol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Position {
    trade: Seen,
    quote: Seen,
}

impl Position {
    fn of(&mut self, kind: TickKind) -> &mut Seen {
        match kind {
            TickKind::Trade => &mut self.trade,
            TickKind::Quote => &mut self.quote,
        }
    }
}

/// The positions in a `Last-Event-ID`, for the subscribed symbols (others are ignored);
/// empty when it names none of them or does not parse.
fn parse_cursor(id: &str, symbols: &[Symbol]) -> Vec<(usize, Position)> {
    let mut out = Vec::new();
    for entry in id.split(',') {
        let mut f = entry.rsplitn(3, ':');
        let (Some(q), Some(t), Some(sym)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(t), Ok(q)) = (t.parse::<u64>(), q.parse::<u64>()) else {
            continue;
        };
        if let Some(i) = symbols.iter().position(|s| s.as_str() == sym) {
            let seen = |seq| Seen { seq, source: 0 };
            out.push((
                i,
                Position {
                    trade: seen(t),
                    quote: seen(q),
                },
            ));
        }
    }
    out
}

/// One client's stream: its buffer from the [`LiveFeed`], its positions, and the SSE bytes
/// waiting to go out. The events found waiting at each turn leave as one chunk of the body
/// (one write for many events, not three body frames each); the shared JSON is copied into
/// it, which costs less than a frame of its own.
struct ClientFeed {
    registration: Registration,
    rx: mpsc::Receiver<Arc<Frame>>,
    symbols: Vec<Symbol>,
    positions: Vec<Position>,
    out: BytesMut,
    keep_alive: tokio::time::Interval,
    buffer: usize,
    buffer_bytes: usize,
    done: bool,
}

impl ClientFeed {
    fn new(
        feed: Arc<LiveFeed>,
        registration: Registration,
        rx: mpsc::Receiver<Arc<Frame>>,
        symbols: Vec<Symbol>,
    ) -> Self {
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ClientFeed {
            registration,
            rx,
            positions: vec![Position::default(); symbols.len()],
            symbols,
            out: BytesMut::new(),
            keep_alive,
            buffer: feed.buffer,
            buffer_bytes: feed.buffer_bytes,
            done: false,
        }
    }

    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.out.is_empty() {
                return Some(self.out.split().freeze());
            }
            if self.done {
                return None;
            }
            if self.end_if_told() {
                continue;
            }
            let client = self.registration.client.clone();
            tokio::select! {
                biased;
                _ = client.woken.notified() => {
                    self.end_if_told();
                }
                frame = self.rx.recv() => match frame {
                    Some(f) => {
                        client.taken(&f);
                        self.on_frame(&f);
                        // What else is waiting goes in the same chunk.
                        for _ in 1..FRAMES_PER_CHUNK {
                            let Ok(f) = self.rx.try_recv() else { break };
                            client.taken(&f);
                            self.on_frame(&f);
                        }
                    }
                    None => self.done = true,
                },
                _ = self.keep_alive.tick() => {
                    self.out.extend_from_slice(b": keep-alive\n\n");
                }
            }
        }
    }

    /// Queues the last event and ends the stream when the feed dropped or closed it.
    fn end_if_told(&mut self) -> bool {
        let (event, data) = match self.registration.client.ending() {
            Ending::Open => return false,
            Ending::Slow => (
                "dropped",
                json!({
                    "reason": "slow consumer: the client's buffer filled before it read",
                    "buffer": self.buffer,
                    "buffer_bytes": self.buffer_bytes,
                }),
            ),
            Ending::Closing => ("closing", json!({"reason": "the daemon is shutting down"})),
        };
        // The id keeps the position, so the reconnect resumes where this client stood.
        self.push_event(event, true, data.to_string().as_bytes());
        self.done = true;
        true
    }

    /// Queues the events `frame` makes for this client: a gap or a restart first when the
    /// sequence does not follow, nothing for a repeat, the ticks past the position only.
    fn on_frame(&mut self, frame: &Frame) {
        let Some(i) = self.symbols.iter().position(|s| *s == frame.symbol) else {
            return;
        };
        let m = &frame.message;
        let kind = m.kind;
        let seen = *self.positions[i].of(kind);
        let (first, last) = (m.first_seq, m.last_seq());
        let restarted = match seen.source {
            0 => seen.seq > 0 && last <= seen.seq,
            s => s != frame.source,
        };
        let mut from = seen.seq + 1;
        if restarted {
            self.gap(i, kind, None, "restarted");
            from = 1;
        } else if seen.seq > 0 && last < from {
            return;
        } else if seen.seq > 0 && first > from {
            self.gap(i, kind, Some((from, first - 1)), "missed");
        }
        *self.positions[i].of(kind) = Seen {
            seq: last,
            source: frame.source,
        };
        let name = match kind {
            TickKind::Trade => "trade",
            TickKind::Quote => "quote",
        };
        if first >= from || seen.seq == 0 || restarted {
            self.push_event(name, true, &frame.json);
        } else if let Ok(j) = serde_json::to_vec(&tail(m, from)) {
            self.push_event(name, true, &j);
        }
    }

    fn gap(&mut self, i: usize, kind: TickKind, range: Option<(u64, u64)>, reason: &str) {
        let mut data = json!({
            "symbol": self.symbols[i].as_str(),
            "kind": kind,
            "reason": reason,
        });
        if let Some((from, to)) = range {
            data["from"] = json!(from);
            data["to"] = json!(to);
        }
        self.push_event("gap", false, data.to_string().as_bytes());
    }

    /// Queues one event: `id: SYM:trade_seq:quote_seq,…` (every watched symbol's position)
    /// when `with_id`, then its name and `data`.
    fn push_event(&mut self, event: &str, with_id: bool, data: &[u8]) {
        let out = &mut self.out;
        out.reserve(64 + self.symbols.len() * 24 + data.len());
        if with_id {
            out.extend_from_slice(b"id: ");
            for (i, (s, p)) in self.symbols.iter().zip(&self.positions).enumerate() {
                let sep = if i == 0 { "" } else { "," };
                // Writing to a BytesMut cannot fail.
                let _ = write!(out, "{sep}{}:{}:{}", s.as_str(), p.trade.seq, p.quote.seq);
            }
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n\n");
    }

    /// Replays, from each symbol's capped stream, what came after `cursor`; a gap where the
    /// stream no longer reaches back that far. Live frames queued meanwhile are repeats
    /// and are skipped by sequence.
    async fn resume(&mut self, feed: &LiveFeed, cursor: Vec<(usize, Position)>) {
        for (i, p) in cursor {
            self.positions[i] = p;
            let symbol = self.symbols[i];
            let mut messages: Vec<TickMessage> = Vec::new();
            let mut before = "+".to_string();
            // Read back until both kinds reach the position (or the stream's start).
            let mut reached = [p.trade.seq == 0, p.quote.seq == 0];
            while !(reached[0] && reached[1]) && messages.len() < RESUME_MAX {
                let page = match feed.retained_before(symbol, &before, RESUME_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::debug!(error = %e, "resume: reading the stream failed");
                        break;
                    }
                };
                let Some((last_id, _)) = page.last() else {
                    break;
                };
                before = last_id.clone();
                for (_, m) in page {
                    let k = usize::from(m.kind == TickKind::Quote);
                    let at = if k == 0 { p.trade.seq } else { p.quote.seq };
                    reached[k] |= m.first_seq <= at + 1;
                    messages.push(m);
                }
            }
            // The newest retained message of each kind names the run the replay follows;
            // one that ends before the position means the engine restarted since.
            for kind in [TickKind::Trade, TickKind::Quote] {
                let seen = self.positions[i].of(kind);
                match messages.iter().find(|m| m.kind == kind) {
                    Some(newest) if seen.seq > 0 => {
                        let restarted = newest.last_seq() < seen.seq;
                        seen.source = source_hash(&newest.source);
                        if restarted {
                            seen.seq = 0;
                            self.gap(i, kind, None, "restarted");
                        }
                    }
                    // Nothing of this kind retained: the gap cannot be measured yet; the
                    // next live message shows it.
                    None if seen.seq > 0 => self.gap(i, kind, None, "not_retained"),
                    _ => {}
                }
            }
            for m in messages.into_iter().rev() {
                let source = source_hash(&m.source);
                let run = self.positions[i].of(m.kind).source;
                if run != 0 && run != source {
                    continue;
                }
                if let Ok(json) = serde_json::to_vec(&m) {
                    self.on_frame(&Frame {
                        message: m,
                        symbol,
                        json: json.into(),
                        source,
                    });
                }
            }
        }
    }
}

/// The part of `m` from sequence `from` on.
fn tail(m: &TickMessage, from: u64) -> TickMessage {
    let skip = (from - m.first_seq) as usize;
    TickMessage {
        source: m.source.clone(),
        symbol: m.symbol.clone(),
        kind: m.kind,
        first_seq: from,
        trades: m.trades.iter().skip(skip).copied().collect(),
        quotes: m.quotes.iter().skip(skip).copied().collect(),
    }
}
