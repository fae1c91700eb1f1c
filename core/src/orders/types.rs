//! The order types: a request ([`NewOrder`]), a stored [`Order`], their enums, and what a
//! submission came to ([`SubmitOutcome`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::symbol::Symbol;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored (and JSON) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Error::field(
                        $field,
                        format!(concat!("{:?} is not one of ", $($text, " "),+), s),
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// Buy or sell.
    OrderSide, "side" {
        /// Buy (stored `B`).
        Buy = "buy",
        /// Sell (stored `S`).
        Sell = "sell",
    }
);

string_enum!(
    /// Market or limit.
    OrderType, "type" {
        /// At the market: no limit price.
        Market = "market",
        /// At `limit_price` or better.
        Limit = "limit",
    }
);

string_enum!(
    /// How long the order stays working.
    TimeInForce, "time_in_force" {
        /// Until the end of the trading day.
        Day = "day",
        /// Until cancelled.
        Gtc = "gtc",
        /// Immediate or cancel.
        Ioc = "ioc",
        /// Fill or kill.
        Fok = "fok",
    }
);

string_enum!(
    /// Where an order is in its life.
    OrderStatus, "status" {
        /// Not yet durable (not used by the desk, which answers once accepted).
        New = "new",
        /// Durable; an `order.accepted` event is on its way to the workers.
        Accepted = "accepted",
        /// A worker took it.
        Working = "working",
        /// Partly filled.
        PartiallyFilled = "partially_filled",
        /// Filled.
        Filled = "filled",
        /// Refused by a worker.
        Rejected = "rejected",
        /// Cancelled.
        Cancelled = "cancelled",
    }
);

impl OrderStatus {
    /// Filled, rejected and cancelled orders never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled | OrderStatus::Rejected | OrderStatus::Cancelled
        )
    }
}

impl OrderSide {
    pub(super) fn code(self) -> &'static str {
        match self {
            OrderSide::Buy => "B",
            OrderSide::Sell => "S",
        }
    }

    fn from_code(c: &str) -> Result<Self> {
        match c {
            "B" => Ok(OrderSide::Buy),
            "S" => Ok(OrderSide::Sell),
            _ => Err(Error::field("side", format!("stored side {c:?}"))),
        }
    }
}

/// An order as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// The account (API key name) placing it; `client_order_id` is unique within it.
    pub account: String,
    /// The client's id: 1–64 printable ASCII characters.
    pub client_order_id: String,
    /// Instrument.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: OrderSide,
    /// Market or limit.
    pub order_type: OrderType,
    /// Quantity, > 0.
    pub quantity: f64,
    /// Limit price: required for limit orders, refused on market orders.
    pub limit_price: Option<f64>,
    /// Time in force.
    pub time_in_force: TimeInForce,
}

impl NewOrder {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.account.is_empty() || self.account.len() > 128 {
            return Err(Error::field("account", "must be 1 to 128 bytes"));
        }
        let id_ok = !self.client_order_id.is_empty()
            && self.client_order_id.len() <= 64
            && self.client_order_id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(Error::field(
                "client_order_id",
                "must be 1 to 64 printable ASCII characters",
            ));
        }
        if !(self.quantity.is_finite() && self.quantity > 0.0) {
            return Err(Error::field("quantity", "must be a finite number > 0"));
        }
        match (self.order_type, self.limit_price) {
            (OrderType::Limit, None) => {
                Err(Error::field("limit_price", "required for a limit order"))
            }
            (OrderType::Market, Some(_)) => Err(Error::field(
                "limit_price",
                "a market order has no limit price",
            )),
            (OrderType::Limit, Some(p)) if !(p.is_finite() && p > 0.0) => {
                Err(Error::field("limit_price", "must be a finite number > 0"))
            }
            _ => Ok(()),
        }
    }

    /// A hash of everything but the account and id: the same id with another body is a
    /// conflict.
    pub fn request_hash(&self) -> String {
        use std::fmt::Write as _;
        // FNV-1a over `symbol|side|type|quantity bits|price bits|tif`, fed as it is
        // formatted (no intermediate string): the stored hashes stay what they were.
        struct Fnv(u64);
        impl fmt::Write for Fnv {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for &b in s.as_bytes() {
                    self.0 ^= u64::from(b);
                    self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
                }
                Ok(())
            }
        }
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        let _ = write!(
            h,
            "{}|{}|{}|{}|{}|{}",
            self.symbol.as_str(),
            self.side,
            self.order_type,
            self.quantity.to_bits(),
            self.limit_price.map_or(0, f64::to_bits),
            self.time_in_force
        );
        format!("{:016x}", h.0)
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The database's id.
    pub id: i64,
    /// Account.
    pub account: String,
    /// The client's id.
    pub client_order_id: String,
    /// Instrument.
    pub symbol: String,
    /// Side.
    pub side: OrderSide,
    /// Type.
    pub order_type: OrderType,
    /// Quantity.
    pub quantity: f64,
    /// Limit price.
    pub limit_price: Option<f64>,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Status.
    pub status: OrderStatus,
    /// Created, ns since the epoch.
    pub created_at_ns: i64,
    /// Last changed, ns since the epoch.
    pub updated_at_ns: i64,
    /// Status transitions so far.
    pub status_changes: i32,
}

/// The columns [`Order::from_row`] reads, in order.
pub(crate) const ORDER_COLUMNS: &str =
    "id, account, client_order_id, symbol, side, type, quantity, \
     limit_price, time_in_force, status, created_at, updated_at, status_changes, request_hash";

impl Order {
    /// From a row of [`ORDER_COLUMNS`]; also returns the request hash.
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> Result<(Order, String)> {
        let side: String = r.get(4);
        let order_type: String = r.get(5);
        let tif: String = r.get(8);
        let status: String = r.get(9);
        Ok((
            Order {
                id: r.get(0),
                account: r.get(1),
                client_order_id: r.get(2),
                symbol: r.get(3),
                side: OrderSide::from_code(side.trim())?,
                order_type: order_type.parse()?,
                quantity: r.get(6),
                limit_price: r.get(7),
                time_in_force: tif.parse()?,
                status: status.parse()?,
                created_at_ns: crate::query::unix_ns(r.get(10)),
                updated_at_ns: crate::query::unix_ns(r.get(11)),
                status_changes: r.get(12),
            },
            r.get(13),
        ))
    }

    /// [`Order::to_json`], serialised straight to bytes (no intermediate map).
    pub fn json_bytes(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct View<'a> {
            id: i64,
            account: &'a str,
            client_order_id: &'a str,
            symbol: &'a str,
            side: &'a str,
            #[serde(rename = "type")]
            order_type: &'a str,
            quantity: f64,
            limit_price: Option<f64>,
            time_in_force: &'a str,
            status: &'a str,
            created_at_ns: i64,
            updated_at_ns: i64,
        }
        let mut out = Vec::with_capacity(320);
        let view = View {
            id: self.id,
            account: &self.account,
            client_order_id: &self.client_order_id,
            symbol: &self.symbol,
            side: self.side.as_str(),
            order_type: self.order_type.as_str(),
            quantity: self.quantity,
            limit_price: self.limit_price,
            time_in_force: self.time_in_force.as_str(),
            status: self.status.as_str(),
            created_at_ns: self.created_at_ns,
            updated_at_ns: self.updated_at_ns,
        };
        match serde_json::to_writer(&mut out, &view) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// The order as JSON (the HTTP API's and the events' form).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "account": self.account,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "side": self.side.as_str(),
            "type": self.order_type.as_str(),
            "quantity": self.quantity,
            "limit_price": self.limit_price,
            "time_in_force": self.time_in_force.as_str(),
            "status": self.status.as_str(),
            "created_at_ns": self.created_at_ns,
            "updated_at_ns": self.updated_at_ns,
        })
    }
}

/// What a submission came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Stored now (HTTP 201).
    Created(Order),
    /// This account already had this `client_order_id` with the same body: the original
    /// (HTTP 200).
    Existing(Order),
    /// This account already had this `client_order_id` with another body (HTTP 409).
    Conflict(Order),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> NewOrder {
        NewOrder {
            account: "desk".into(),
            client_order_id: "c-1".into(),
            symbol: Symbol::new("ESZ6").unwrap(),
            side: OrderSide::Buy,
            order_type: OrderType::Limit,
            quantity: 2.0,
            limit_price: Some(6_000.25),
            time_in_force: TimeInForce::Day,
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        order().validate().unwrap();
        let cases = [
            (
                "quantity",
                NewOrder {
                    quantity: 0.0,
                    ..order()
                },
            ),
            (
                "quantity",
                NewOrder {
                    quantity: f64::NAN,
                    ..order()
                },
            ),
            (
                "limit_price",
                NewOrder {
                    limit_price: None,
                    ..order()
                },
            ),
            (
                "limit_price",
                NewOrder {
                    order_type: OrderType::Market,
                    ..order()
                },
            ),
            (
                "limit_price",
                NewOrder {
                    limit_price: Some(-1.0),
                    ..order()
                },
            ),
            (
                "client_order_id",
                NewOrder {
                    client_order_id: "has space".into(),
                    ..order()
                },
            ),
            (
                "client_order_id",
                NewOrder {
                    client_order_id: String::new(),
                    ..order()
                },
            ),
        ];
        for (field, o) in cases {
            match o.validate() {
                Err(Error::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!("hold".parse::<OrderSide>().is_err());
        assert_eq!("gtc".parse::<TimeInForce>().unwrap(), TimeInForce::Gtc);
        assert!(OrderStatus::Cancelled.is_final() && !OrderStatus::Working.is_final());
    }

    #[test]
    fn the_hash_covers_the_body_not_the_id() {
        let a = order();
        let b = NewOrder {
            client_order_id: "c-2".into(),
            ..order()
        };
        let c = NewOrder {
            quantity: 3.0,
            ..order()
        };
        assert_eq!(a.request_hash(), b.request_hash());
        // Stored hashes must keep matching: FNV-1a over `symbol|side|type|quantity
        // bits|price bits|tif`, pinned for this body.
        assert_eq!(a.request_hash(), "e76c98955b98a430");
        assert_ne!(a.request_hash(), c.request_hash());
    }
}
