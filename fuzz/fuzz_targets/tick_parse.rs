//! The JSON / NDJSON tick parser of `POST /api/ticks`.
//!
//! Asserts, beyond "no panic": every accepted trade has a finite price and a finite,
//! non-negative volume, every accepted quote has finite prices and sizes (the parser refuses
//! NaN and infinities), and a refusal gives a reason (its field may be `""`: an unknown key
//! can be the empty string). Whatever the fast path accepts, the reference parser accepts
//! as the same ticks.
#![no_main]

use christmas_ingest::ticks::{fast, parse, parse_reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Some(ticks) = fast::parse(body) {
        assert_eq!(Ok(ticks), parse_reference(body));
    }
    match parse(body) {
        Ok(ticks) => {
            for t in ticks.trades() {
                assert!(t.price.is_finite(), "{t:?}");
                assert!(t.volume.is_finite() && t.volume >= 0.0, "{t:?}");
            }
            for q in ticks.quotes() {
                assert!(
                    [q.bid, q.ask, q.bid_size, q.ask_size]
                        .iter()
                        .all(|v| v.is_finite()),
                    "{q:?}"
                );
            }
        }
        Err(e) => assert!(!e.reason.is_empty(), "{e:?}"),
    }
});
