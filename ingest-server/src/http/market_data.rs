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
