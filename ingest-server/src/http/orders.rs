//! The order endpoints.
//!
//! ```json
//! POST /api/orders
//! {"client_order_id":"c-1","symbol":"ESZ6","side":"buy","type":"limit","quantity":2,
//!  "limit_price":6000.25,"time_in_force":"day"}
//! ```
//!
//! 201 with the order once it is committed; 200 with the original when this account
//! already sent this `client_order_id` with the same body; 409 when with another body. The
//! account is the API key's name (`default` without keys).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::orders::{
    CancelOutcome, NewOrder, OrderFilter, OrderStatus, SubmitOutcome, TimeInForce,
};
use christmas_core::Symbol;
use serde_json::{json, Map, Value};

use crate::http::auth::{Authorized, Orders};
use crate::http::reply::{bad_request as bad, engine_error, error};
use crate::state::AppState;

/// An order body is small; anything larger is refused with 413.
const MAX_ORDER_BYTES: usize = 16 << 10;

const FIELDS: &[&str] = &[
    "client_order_id",
    "symbol",
    "side",
    "type",
    "quantity",
    "limit_price",
    "time_in_force",
];

fn string<'a>(o: &'a Map<String, Value>, field: &str) -> Result<&'a str, Response> {
    o.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(field, "required string"))
}

/// The body's shape, for the fast path: a well-formed body parses straight into it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody<'a> {
    #[serde(borrow)]
    client_order_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    symbol: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    side: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    order_type: std::borrow::Cow<'a, str>,
    quantity: f64,
    limit_price: Option<f64>,
    #[serde(borrow)]
    time_in_force: Option<std::borrow::Cow<'a, str>>,
}

/// Parses and validates an order body for `account`.
pub fn parse_order(account: String, body: &[u8]) -> Result<NewOrder, Response> {
    match serde_json::from_slice::<OrderBody<'_>>(body) {
        Ok(b) => {
            let order = NewOrder {
                account,
                client_order_id: b.client_order_id.into_owned(),
                symbol: Symbol::new(&b.symbol).map_err(|e| bad("symbol", e))?,
                side: b.side.parse().map_err(|e| bad("side", e))?,
                order_type: b.order_type.parse().map_err(|e| bad("type", e))?,
                quantity: b.quantity,
                limit_price: b.limit_price,
                time_in_force: match b.time_in_force {
                    Some(t) => t.parse().map_err(|e| bad("time_in_force", e))?,
                    None => TimeInForce::Day,
                },
            };
            validated(order)
        }
        // Anything else goes the slow way, which names the offending field.
        Err(_) => parse_order_slowly(account, body),
    }
}

fn validated(order: NewOrder) -> Result<NewOrder, Response> {
    order.validate().map_err(|e| match e {
        christmas_core::Error::InvalidField { field, reason } => bad(field, reason),
        other => bad("body", other),
    })?;
    Ok(order)
}

fn parse_order_slowly(account: String, body: &[u8]) -> Result<NewOrder, Response> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("not JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| bad("body", "an order is a JSON object"))?;
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(k, "unknown field"));
    }
    let symbol = Symbol::new(string(o, "symbol")?).map_err(|e| bad("symbol", e))?;
    let side = string(o, "side")?.parse().map_err(|e| bad("side", e))?;
    let order_type = string(o, "type")?.parse().map_err(|e| bad("type", e))?;
    let quantity = o
        .get("quantity")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad("quantity", "required number"))?;
    let limit_price = match o.get("limit_price") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_f64()
                .ok_or_else(|| bad("limit_price", "must be a number"))?,
        ),
    };
    let time_in_force = match o.get("time_in_force") {
        None => TimeInForce::Day,
        Some(Value::String(t)) => t.parse().map_err(|e| bad("time_in_force", e))?,
        Some(_) => return Err(bad("time_in_force", "must be a string")),
    };
    let order = NewOrder {
        account,
        client_order_id: string(o, "client_order_id")?.to_string(),
        symbol,
        side,
        order_type,
        quantity,
        limit_price,
        time_in_force,
    };
    validated(order)
}

fn order_response(status: StatusCode, o: &christmas_core::orders::Order) -> Response {
    (
        status,
        [("content-type", "application/json")],
        o.json_bytes(),
    )
        .into_response()
}

/// `POST /api/orders`
pub async fn submit(
    State(s): State<AppState>,
    Authorized { account, .. }: Authorized<Orders>,
    body: axum::body::Body,
) -> Response {
    if let Err(wait) = s.order_limiter.take(&account) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            format!("account {account:?} is over its order rate; retry in {secs} s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    let body = match axum::body::to_bytes(body, MAX_ORDER_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("body"),
                format!("an order is at most {MAX_ORDER_BYTES} bytes"),
            )
        }
    };
    let order = match parse_order(account, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    match s.orders.submit(order).await {
        Ok(SubmitOutcome::Created(o)) => order_response(StatusCode::CREATED, &o),
        Ok(SubmitOutcome::Existing(o)) => order_response(StatusCode::OK, &o),
        Ok(SubmitOutcome::Conflict(o)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "this client_order_id was used for a different order",
                "field": "client_order_id",
                "order": o.to_json(),
            })),
        )
            .into_response(),
        Err(christmas_core::Error::InvalidField { field, reason }) => bad(field, reason),
        Err(e) => engine_error(e),
    }
}

/// The order a `/api/orders/{id}` request names, and the account asking for it.
#[derive(Debug)]
pub struct OrderRef {
    /// The key's name; `default` when no key is needed.
    pub account: String,
    /// The order's id.
    pub id: i64,
}

impl FromRequestParts<AppState> for OrderRef {
    type Rejection = Response;

    /// The path first, then the key (401/403), then the id (400): a bad id from a caller
    /// without a key is refused for the key.
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        let Authorized { account, .. } = Authorized::<Orders>::from_request_parts(parts, s).await?;
        let id = id.parse().map_err(|_| bad("id", "must be an integer"))?;
        Ok(OrderRef { account, id })
    }
}

/// `GET /api/orders/{id}`
pub async fn get(State(s): State<AppState>, OrderRef { account, id }: OrderRef) -> Response {
    match s.orders.get(&account, id).await {
        Ok(Some(o)) => Json(o.to_json()).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, Some("id"), "no such order"),
        Err(e) => engine_error(e),
    }
}

/// `GET /api/orders?status=&symbol=&limit=`
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    Authorized { account, .. }: Authorized<Orders>,
) -> Response {
    let status = match q
        .get("status")
        .map(|v| v.parse::<OrderStatus>())
        .transpose()
    {
        Ok(st) => st,
        Err(e) => return bad("status", e),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(l)) if (1..=10_000).contains(&l) => l,
        Some(_) => return bad("limit", "must be 1 to 10000"),
    };
    let filter = OrderFilter {
        status,
        symbol: q.get("symbol").cloned(),
        limit,
    };
    match s.orders.list(&account, &filter).await {
        Ok(orders) => Json(json!({
            "orders": orders.iter().map(|o| o.to_json()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => engine_error(e),
    }
}

/// `DELETE /api/orders/{id}`: cancel unless final.
pub async fn cancel(State(s): State<AppState>, OrderRef { account, id }: OrderRef) -> Response {
    match s.orders.cancel(&account, id).await {
        Ok(CancelOutcome::Cancelled(o)) => Json(o.to_json()).into_response(),
        Ok(CancelOutcome::Final(o)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("the order is {} and cannot be cancelled", o.status),
                "field": "id",
                "order": o.to_json(),
            })),
        )
            .into_response(),
        Ok(CancelOutcome::NotFound) => error(StatusCode::NOT_FOUND, Some("id"), "no such order"),
        Err(e) => engine_error(e),
    }
}
