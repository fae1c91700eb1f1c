//! Market-data reads: the latest trade and quote (Redis cache first), trades in a time
//! range, and OHLCV bars.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::query::BarInterval;
use christmas_core::{Quote, Symbol, Trade};
use serde_json::{json, Value};

use crate::http::auth::{Authorized, Read};
use crate::http::params::{PathParam, QueryParams};
use crate::http::reply::error;
use crate::http::schemas as doc;
use crate::state::AppState;
use crate::timefmt::{format_ns, parse_ns};

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
#[utoipa::path(
    get, path = "/api/market-data", tag = "market data",
    summary = "The latest trade and quote of a symbol: the Redis cache, else the database",
    params(("symbol" = String, Query, pattern = r"^[!-~]{1,31}$",
            description = "1 to 31 bytes of UTF-8 without NUL (the pattern gives the ASCII form)")),
    responses(
        (status = 200, description = "the latest ticks (null when none)", body = doc::Latest),
        (status = 400, description = "a bad or missing symbol, or a bad query string", body = doc::ErrorBody),
        (status = 503, description = "the database is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn latest(
    State(s): State<AppState>,
    QueryParams(q): QueryParams,
    _key: Authorized<Read>,
) -> Response {
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

/// The common part of the ranged reads: the path's symbol, `from` and `to`.
fn range_read(
    symbol: &str,
    q: &HashMap<String, String>,
    default_from: i64,
    default_to: i64,
) -> Result<(Symbol, i64, i64), Response> {
    let symbol = symbol_param(Some(&symbol.to_string()))?;
    Ok((
        symbol,
        time_param(q, "from", default_from)?,
        time_param(q, "to", default_to)?,
    ))
}

/// `GET /api/market-data/{symbol}/trades?from&to&limit`
#[utoipa::path(
    get, path = "/api/market-data/{symbol}/trades", tag = "market data",
    summary = "Trades with from <= time < to, oldest first (the read replica when configured)",
    params(
        ("symbol" = String, Path, pattern = r"^[!-~]{1,31}$",
         description = "1 to 31 bytes of UTF-8 without NUL (the pattern gives the ASCII form)"),
        ("from" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18}|(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$",
         description = "RFC 3339, or integer nanoseconds since the epoch (default: the beginning)"),
        ("to" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18}|(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$",
         description = "RFC 3339, or integer nanoseconds since the epoch (default: the end)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "default 1000"),
    ),
    responses(
        (status = 200, description = "the trades", body = doc::Trades),
        (status = 400, description = "a bad parameter, named", body = doc::ErrorBody),
        (status = 503, description = "the database is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn trades(
    State(s): State<AppState>,
    PathParam(symbol): PathParam,
    QueryParams(q): QueryParams,
    _key: Authorized<Read>,
) -> Response {
    let (symbol, from, to) = match range_read(&symbol, &q, i64::MIN / 2, i64::MAX / 2) {
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
#[utoipa::path(
    get, path = "/api/market-data/{symbol}/bars", tag = "market data",
    summary = "OHLCV bars whose start is in [from rounded down, to) (default: the last day)",
    description = "`from` after `to` is a 400 naming `from`.",
    params(
        ("symbol" = String, Path, pattern = r"^[!-~]{1,31}$",
         description = "1 to 31 bytes of UTF-8 without NUL (the pattern gives the ASCII form)"),
        ("interval" = Option<String>, Query, pattern = "^(1m|5m|1h|1d)$", description = "default 1m"),
        ("from" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18}|(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$",
         description = "RFC 3339, or integer nanoseconds since the epoch (default: a day before now)"),
        ("to" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18}|(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$",
         description = "RFC 3339, or integer nanoseconds since the epoch (default: now)"),
    ),
    responses(
        (status = 200, description = "the bars", body = doc::Bars),
        (status = 400, description = "a bad parameter, named", body = doc::ErrorBody),
        (status = 503, description = "the database is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn bars(
    State(s): State<AppState>,
    PathParam(symbol): PathParam,
    QueryParams(q): QueryParams,
    _key: Authorized<Read>,
) -> Response {
    let now = christmas_core::query::unix_ns(std::time::SystemTime::now());
    let (symbol, from, to) = match range_read(&symbol, &q, now - 86_400_000_000_000, now) {
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
