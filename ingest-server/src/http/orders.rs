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
//! account is the API key's name (`default` without keys). Unknown and repeated keys are a
//! 400 naming the key.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use christmas_core::orders::{
    CancelOutcome, NewOrder, OrderFilter, OrderSide, OrderStatus, OrderType, SubmitOutcome,
    TimeInForce,
};
use christmas_core::Symbol;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::json;

use crate::http::auth::{Authorized, Orders};
use crate::http::params::{PathParam, QueryParams};
use crate::http::reply::{bad_request as bad, engine_error, error};
use crate::http::schemas as doc;
use crate::json_fields::{Keys, Scalar};
use crate::state::AppState;

/// An order body is small; anything larger is refused with 413.
const MAX_ORDER_BYTES: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ClientOrderId,
    Symbol,
    Side,
    Type,
    Quantity,
    LimitPrice,
    TimeInForce,
}

const FIELDS: &[(&str, Field)] = &[
    ("client_order_id", Field::ClientOrderId),
    ("symbol", Field::Symbol),
    ("side", Field::Side),
    ("type", Field::Type),
    ("quantity", Field::Quantity),
    ("limit_price", Field::LimitPrice),
    ("time_in_force", Field::TimeInForce),
];

/// A field refused: its name and why.
type Refusal = (String, String);

fn no(field: &str, reason: impl std::fmt::Display) -> Refusal {
    (field.to_string(), reason.to_string())
}

/// Parses and validates an order body for `account`: one pass over the object, refusing
/// unknown and repeated keys by name (a second `client_order_id` must not pick another
/// order), then [`NewOrder::validate`].
pub fn parse_order(account: String, body: &[u8]) -> Result<NewOrder, Response> {
    let mut refused = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = OrderBody {
        refused: &mut refused,
    }
    .deserialize(&mut de)
    .and_then(|draft| de.end().map(|()| draft));
    let draft = match (read, refused) {
        (Ok(draft), _) => draft,
        (Err(_), Some((field, reason))) => return Err(bad(&field, reason)),
        (Err(e), None) => return Err(bad("body", format!("not a JSON object of an order: {e}"))),
    };
    let required = |field| bad(field, "required");
    let order = NewOrder {
        account,
        client_order_id: draft
            .client_order_id
            .ok_or_else(|| required("client_order_id"))?,
        symbol: draft.symbol.ok_or_else(|| required("symbol"))?,
        side: draft.side.ok_or_else(|| required("side"))?,
        order_type: draft.order_type.ok_or_else(|| required("type"))?,
        quantity: draft.quantity.ok_or_else(|| required("quantity"))?,
        limit_price: draft.limit_price,
        time_in_force: draft.time_in_force.unwrap_or(TimeInForce::Day),
    };
    order.validate().map_err(|e| match e {
        christmas_core::Error::InvalidField { field, reason } => bad(field, reason),
        other => bad("body", other),
    })?;
    Ok(order)
}

/// An order's fields as read so far.
#[derive(Default)]
struct Draft {
    client_order_id: Option<String>,
    symbol: Option<Symbol>,
    side: Option<OrderSide>,
    order_type: Option<OrderType>,
    quantity: Option<f64>,
    limit_price: Option<f64>,
    time_in_force: Option<TimeInForce>,
}

impl Draft {
    /// Reads `field`'s value, checking its type and, for the words, its content.
    fn read(&mut self, field: Field, v: Scalar<'_>) -> Result<(), Refusal> {
        let text = |name| v.as_str().ok_or_else(|| no(name, "must be a string"));
        let number = |name| v.as_f64().ok_or_else(|| no(name, "must be a number"));
        match field {
            Field::ClientOrderId => {
                self.client_order_id = Some(text("client_order_id")?.to_string())
            }
            Field::Symbol => {
                let symbol = Symbol::parse(text("symbol")?).map_err(|e| no("symbol", e.reason))?;
                self.symbol = Some(symbol);
            }
            Field::Side => self.side = Some(text("side")?.parse().map_err(|e| no("side", e))?),
            Field::Type => {
                self.order_type = Some(text("type")?.parse().map_err(|e| no("type", e))?)
            }
            Field::Quantity => self.quantity = Some(number("quantity")?),
            Field::LimitPrice if v.is_null() => self.limit_price = None,
            Field::LimitPrice => self.limit_price = Some(number("limit_price")?),
            Field::TimeInForce => {
                let tif = text("time_in_force")?;
                self.time_in_force = Some(tif.parse().map_err(|e| no("time_in_force", e))?);
            }
        }
        Ok(())
    }
}

/// The order object; a refused field is left in `refused` and stops the parse.
struct OrderBody<'a> {
    refused: &'a mut Option<Refusal>,
}

impl<'de> DeserializeSeed<'de> for OrderBody<'_> {
    type Value = Draft;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Draft, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OrderBody<'_> {
    type Value = Draft;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an order (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Draft, A::Error> {
        let mut keys = Keys::new(FIELDS);
        let mut draft = Draft::default();
        while let Some(key) = keys.next(&mut map)? {
            let outcome = match key {
                Ok(field) => draft.read(field, map.next_value()?),
                Err(e) => Err(no(e.field(), e.reason())),
            };
            if let Err(refusal) = outcome {
                *self.refused = Some(refusal);
                return Err(de::Error::custom("refused"));
            }
        }
        Ok(draft)
    }
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
#[utoipa::path(
    post, path = "/api/orders", tag = "orders",
    summary = "Place an order: answered once committed; idempotent on client_order_id per account",
    request_body(content = doc::NewOrder, content_type = "application/json", description = "At most 16384 bytes."),
    responses(
        (status = 200, description = "a repeat: the original order", body = doc::Order),
        (status = 201, description = "stored", body = doc::Order),
        (status = 400, description = "a bad, unknown or repeated field, named", body = doc::ErrorBody),
        (status = 408, description = "the body did not arrive within `http.body_timeout_ms`; the connection is closed", body = doc::ErrorBody),
        (status = 409, description = "this client_order_id was used with another body; `order` is the original", body = doc::ErrorBody),
        (status = 413, description = "the body is over 16384 bytes; the connection is closed", body = doc::ErrorBody),
        (status = 429, description = "over the account's order rate", body = doc::ErrorBody,
         headers(("Retry-After" = u64, description = "seconds"))),
        (status = 503, description = "shutting down, or the store is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
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
    let body = match crate::http::body::read(&s, body, MAX_ORDER_BYTES, || {
        format!("an order is at most {MAX_ORDER_BYTES} bytes")
    })
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
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
        let PathParam(id) = PathParam::from_request_parts(parts, s).await?;
        let Authorized { account, .. } = Authorized::<Orders>::from_request_parts(parts, s).await?;
        let id = id.parse().map_err(|_| bad("id", "must be an integer"))?;
        Ok(OrderRef { account, id })
    }
}

/// `GET /api/orders/{id}`
#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders",
    summary = "One of the account's orders",
    params(("id" = i64, Path, description = "the order's id (any 64-bit integer)")),
    responses(
        (status = 200, description = "the order", body = doc::Order),
        (status = 400, description = "the id is not an integer", body = doc::ErrorBody),
        (status = 404, description = "no such order for this account", body = doc::ErrorBody),
        (status = 503, description = "the store is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get(State(s): State<AppState>, OrderRef { account, id }: OrderRef) -> Response {
    match s.orders.get(&account, id).await {
        Ok(Some(o)) => Json(o.to_json()).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, Some("id"), "no such order"),
        Err(e) => engine_error(e),
    }
}

/// `GET /api/orders?status=&symbol=&limit=`
#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    summary = "The account's orders, newest first (the read replica when configured)",
    params(
        ("status" = Option<doc::OrderStatus>, Query),
        ("symbol" = Option<String>, Query, pattern = "^[^\\x00]*$", description = "any text without NUL"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "default 100"),
    ),
    responses(
        (status = 200, description = "the orders", body = doc::OrderList),
        (status = 400, description = "a bad parameter, named", body = doc::ErrorBody),
        (status = 503, description = "the store is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(s): State<AppState>,
    QueryParams(q): QueryParams,
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
#[utoipa::path(
    delete, path = "/api/orders/{id}", tag = "orders",
    summary = "Cancel an order, unless it is filled, rejected or cancelled (409)",
    params(("id" = i64, Path, description = "the order's id (any 64-bit integer)")),
    responses(
        (status = 200, description = "cancelled", body = doc::Order),
        (status = 400, description = "the id is not an integer", body = doc::ErrorBody),
        (status = 404, description = "no such order for this account", body = doc::ErrorBody),
        (status = 409, description = "the order is final; `order` is it", body = doc::ErrorBody),
        (status = 503, description = "the store is unreachable", body = doc::ErrorBody),
    ),
    security(("bearer" = [])),
)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The field a refused body is refused for.
    fn refused_field(body: &str) -> String {
        let r = parse_order("a".into(), body.as_bytes()).unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let bytes = body_bytes(r);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["field"].as_str().unwrap().to_string()
    }

    fn body_bytes(r: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(axum::body::to_bytes(r.into_body(), usize::MAX))
            .unwrap()
            .to_vec()
    }

    const ORDER: &str =
        r#""symbol":"ESZ6","side":"buy","type":"limit","quantity":2,"limit_price":6000.25"#;

    #[test]
    fn a_well_formed_order_parses() {
        let o = parse_order(
            "a".into(),
            format!(r#"{{"client_order_id":"c\u002d1",{ORDER}}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!((o.client_order_id.as_str(), o.quantity), ("c-1", 2.0));
        assert_eq!(o.time_in_force, TimeInForce::Day);
    }

    #[test]
    fn repeated_unknown_and_mistyped_keys_are_named() {
        for (body, field) in [
            (
                format!(r#"{{"client_order_id":"c-1",{ORDER},"client_order_id":"c-2"}}"#),
                "client_order_id",
            ),
            (
                format!(r#"{{"client_order_id":"c-1",{ORDER},"quantity":9}}"#),
                "quantity",
            ),
            (
                format!(r#"{{"client_order_id":"c-1",{ORDER},"venue":"X"}}"#),
                "venue",
            ),
            (
                format!(r#"{{"client_order_id":1,{ORDER}}}"#),
                "client_order_id",
            ),
            (
                format!(r#"{{"client_order_id":"c-1",{ORDER},"time_in_force":[]}}"#),
                "time_in_force",
            ),
            (
                format!(
                    r#"{{"client_order_id":"c-1",{}}}"#,
                    ORDER.replace("buy", "up")
                ),
                "side",
            ),
            (format!("{{{ORDER}}}"), "client_order_id"),
            ("[1]".to_string(), "body"),
            ("{".to_string(), "body"),
        ] {
            assert_eq!(refused_field(&body), field, "{body}");
        }
    }
}
