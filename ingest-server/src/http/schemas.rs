//! The JSON bodies of the HTTP API as `utoipa` schema types, for the OpenAPI document
//! ([`super::api_doc`]). The handlers read and write these bodies with their own fast
//! parsers and `json!`; the daemon's tests and the schemathesis run of
//! `scripts/schemathesis.sh` check that both agree.
//!
//! Limits are stated in bytes where the server counts bytes: a symbol is at most 31 bytes
//! of UTF-8, which JSON Schema cannot say, so the schema's pattern admits only its ASCII
//! form (where a character is a byte) and the description says the rest. Times in the
//! schemas' patterns are those an i64 of nanoseconds holds (years 1678 to 2261), with days
//! to 28 so that every match is a real date.

// The fields' doc comments become the schema's descriptions; the self-explanatory ones
// (prices, sizes, ids) carry none.
#![allow(missing_docs)]

use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The error body every refusal carries (`error`, and `field` naming what is at fault).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What is wrong, for a person.
    pub error: String,
    /// The field, parameter or header at fault (`body`, `query`, `method`,
    /// `authorization`, or a field's name).
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// `POST /api/ticks`: the refused tick's position, 0-based.
    #[schema(nullable = false, minimum = 0)]
    pub index: Option<u64>,
    /// `POST /api/ticks` with NDJSON: the refused tick's line, 1-based, blank lines counted.
    #[schema(nullable = false, minimum = 1)]
    pub line: Option<u64>,
    /// `POST /api/ticks`: why the field was refused.
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// 409 from the order endpoints: the order as it stands.
    #[schema(nullable = false)]
    pub order: Option<Order>,
}

/// `trade`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TradeKind {
    /// A trade.
    Trade,
}

/// `quote`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuoteKind {
    /// A quote.
    Quote,
}

/// The aggressor side, case-insensitive on input: `B`, `buy` or `bid` (buy); `S`, `sell`,
/// `A` or `ask` (sell); `N` or `none` (unknown, the default; `null` too).
#[derive(Debug, Serialize, ToSchema)]
pub enum TickSide {
    B,
    S,
    N,
    A,
    #[serde(rename = "buy")]
    Buy,
    #[serde(rename = "sell")]
    Sell,
    #[serde(rename = "none")]
    NoSide,
    #[serde(rename = "bid")]
    Bid,
    #[serde(rename = "ask")]
    Ask,
}

macro_rules! tick_schemas {
    ($(#[$doc:meta])* $name:ident, $kind:ty, { $($(#[$fdoc:meta])* $field:ident: $ty:ty,)* }, $time:ident: $time_ty:ty, $time_doc:literal, $($time_attr:tt)*) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The record's kind.
            pub kind: $kind,
            /// 1 to 31 bytes of UTF-8 without NUL (the pattern gives the ASCII form).
            #[schema(pattern = r"^[!-~]{1,31}$", min_length = 1, max_length = 31)]
            pub symbol: String,
            #[doc = $time_doc]
            #[schema($($time_attr)*)]
            pub $time: $time_ty,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

macro_rules! trade_tick {
    ($name:ident, $time:ident: $time_ty:ty, $time_doc:literal, $($time_attr:tt)*) => {
        tick_schemas!(
            /// A trade (give `time` or `time_ns`, not both). Unknown keys are refused.
            $name, TradeKind, {
                /// Any finite number.
                price: f64,
                /// From 0 to 1e18.
                #[schema(minimum = 0, maximum = 1e18)]
                volume: f64,
                /// The aggressor side (default `N`).
                #[schema(nullable = true)]
                side: Option<TickSide>,
                /// The venue's sequence number (default 0).
                #[schema(nullable = true)]
                exchange_seq: Option<i64>,
            },
            $time: $time_ty, $time_doc, $($time_attr)*
        );
    };
}

macro_rules! quote_tick {
    ($name:ident, $time:ident: $time_ty:ty, $time_doc:literal, $($time_attr:tt)*) => {
        tick_schemas!(
            /// A quote (give `time` or `time_ns`, not both). Unknown keys are refused.
            $name, QuoteKind, {
                /// Any finite number.
                bid: f64,
                /// Any finite number.
                ask: f64,
                /// Any finite number.
                bid_size: f64,
                /// Any finite number.
                ask_size: f64,
            },
            $time: $time_ty, $time_doc, $($time_attr)*
        );
    };
}

trade_tick!(TradeAt, time: String, "RFC 3339 with an offset; any real date from 1678 to 2261 (the pattern lists a subset).", pattern = r"^(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$");
trade_tick!(TradeAtNs, time_ns: i64, "Nanoseconds since the Unix epoch.", format = Int64);
quote_tick!(QuoteAt, time: String, "RFC 3339 with an offset; any real date from 1678 to 2261 (the pattern lists a subset).", pattern = r"^(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$");
quote_tick!(QuoteAtNs, time_ns: i64, "Nanoseconds since the Unix epoch.", format = Int64);

/// One tick: a trade or a quote, timed by `time` (RFC 3339) or `time_ns`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Tick {
    TradeAt(TradeAt),
    TradeAtNs(TradeAtNs),
    QuoteAt(QuoteAt),
    QuoteAtNs(QuoteAtNs),
}

/// `POST /api/ticks` as a JSON array: one tick or more.
#[derive(Debug, Serialize)]
pub struct TickArray(pub Vec<Tick>);

impl utoipa::PartialSchema for TickArray {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Tick")))
            .min_items(Some(1))
            .into()
    }
}

impl ToSchema for TickArray {
    fn schemas(out: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        out.push((
            "Tick".to_string(),
            <Tick as utoipa::PartialSchema>::schema(),
        ));
        <Tick as ToSchema>::schemas(out);
    }
}

/// `POST /api/ticks` answered: the ticks counted at the ack level asked for (`accepted`,
/// `committed` or `durable`, one of the three), per kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicksAnswer {
    /// With `ack=accepted` (202).
    #[schema(nullable = false)]
    pub accepted: Option<u64>,
    /// With `ack=committed` (201).
    #[schema(nullable = false)]
    pub committed: Option<u64>,
    /// With `ack=durable` (201).
    #[schema(nullable = false)]
    pub durable: Option<u64>,
    /// Trades in the request.
    pub trades: u64,
    /// Quotes in the request.
    pub quotes: u64,
    /// With a producer: ticks left out as resends of ticks already stored.
    #[schema(nullable = false)]
    pub duplicates: Option<u64>,
}

/// A stored trade.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trade {
    /// RFC 3339, nanoseconds, UTC.
    pub time: String,
    /// Nanoseconds since the epoch.
    pub time_ns: i64,
    pub price: f64,
    pub volume: f64,
    /// `B`, `S` or `N`.
    pub side: String,
    pub exchange_seq: i64,
    /// The fan-out sequence (`source` `redis` only).
    #[schema(nullable = false)]
    pub seq: Option<u64>,
}

/// A stored quote.
#[derive(Debug, Serialize, ToSchema)]
pub struct Quote {
    /// RFC 3339, nanoseconds, UTC.
    pub time: String,
    /// Nanoseconds since the epoch.
    pub time_ns: i64,
    pub bid: f64,
    pub ask: f64,
    pub bid_size: f64,
    pub ask_size: f64,
    /// The fan-out sequence (`source` `redis` only).
    #[schema(nullable = false)]
    pub seq: Option<u64>,
}

/// Where the latest ticks were read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Redis,
    Database,
}

/// `GET /api/market-data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Latest {
    pub symbol: String,
    pub source: Source,
    pub trade: Option<Trade>,
    pub quote: Option<Quote>,
}

/// `GET /api/market-data/{symbol}/trades`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trades {
    pub symbol: String,
    pub trades: Vec<Trade>,
}

/// An OHLCV bar.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bar {
    /// The bar's start, RFC 3339.
    pub start: String,
    pub start_ns: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub trades: i64,
}

/// `GET /api/market-data/{symbol}/bars`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bars {
    pub symbol: String,
    pub interval: String,
    pub bars: Vec<Bar>,
}

/// Buy or sell.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderSide {
    Buy,
    Sell,
}

/// How long an order works.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimeInForce {
    Day,
    Gtc,
    Ioc,
    Fok,
}

/// An order's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Accepted,
    Working,
    PartiallyFilled,
    Filled,
    Rejected,
    Cancelled,
}

/// `market`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MarketType {
    Market,
}

/// `limit`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitType {
    Limit,
}

macro_rules! new_order {
    ($(#[$doc:meta])* $name:ident, $ty:ty, { $($(#[$fdoc:meta])* $field:ident: $fty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Unique per account (API key): 1 to 64 printable ASCII characters; a repeat
            /// with the same body returns the original (200), with another body 409.
            #[schema(pattern = r"^[!-~]{1,64}$", min_length = 1, max_length = 64)]
            pub client_order_id: String,
            /// 1 to 31 bytes of UTF-8 without NUL (the pattern gives the ASCII form).
            #[schema(pattern = r"^[!-~]{1,31}$", min_length = 1, max_length = 31)]
            pub symbol: String,
            pub side: OrderSide,
            #[serde(rename = "type")]
            pub order_type: $ty,
            /// A finite number above 0.
            #[schema(exclusive_minimum = 0)]
            pub quantity: f64,
            /// Default `day`.
            #[schema(nullable = false)]
            pub time_in_force: Option<TimeInForce>,
            $($(#[$fdoc])* pub $field: $fty,)*
        }
    };
}

new_order!(
    /// A market order: no limit price (absent, or null).
    MarketOrder, MarketType, {}
);
new_order!(
    /// A limit order: a limit price above 0.
    LimitOrder, LimitType, {
        /// A finite number above 0.
        #[schema(exclusive_minimum = 0)]
        limit_price: f64,
    }
);

/// `POST /api/orders`: a market or a limit order. Unknown and repeated keys are refused.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum NewOrder {
    Market(MarketOrder),
    Limit(LimitOrder),
}

/// An order as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: i64,
    pub account: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: OrderSide,
    #[serde(rename = "type")]
    pub order_type: String,
    pub quantity: f64,
    pub limit_price: Option<f64>,
    pub time_in_force: TimeInForce,
    pub status: OrderStatus,
    pub created_at_ns: i64,
    pub updated_at_ns: i64,
}

/// `GET /api/orders`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<Order>,
}
