//! The order validator of `POST /api/orders`: `parse_order(account, body)`.
//!
//! Asserts, beyond "no panic": an accepted order passes `NewOrder::validate`, keeps the
//! account it was given, and has a finite quantity > 0.
#![no_main]

use christmas_ingest::orders::parse_order;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(order) = parse_order("fuzz".to_string(), body) {
        assert!(order.validate().is_ok(), "{order:?}");
        assert_eq!(order.account, "fuzz");
        assert!(order.quantity.is_finite() && order.quantity > 0.0);
    }
});
