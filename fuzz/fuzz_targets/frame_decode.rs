//! The TCP frame decoder: `decode_ingest` on any body, then `to_records` on what it accepts.
//!
//! Asserts, beyond "no panic": a decoded frame re-encodes to a body that decodes again and
//! re-encodes to the same bytes (compared as bytes, so NaN fields count as equal), and the
//! records `to_records` accepts are one per frame record, with finite numbers and a
//! non-negative volume.
#![no_main]

use christmas_core::frame::{decode_ingest, encode_ingest, to_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(frame) = decode_ingest(body) else {
        return;
    };
    let encoded = encode_ingest(&frame).expect("a decoded frame encodes");
    let again = decode_ingest(&encoded[4..]).expect("an encoded frame decodes");
    assert_eq!(
        encode_ingest(&again).expect("a decoded frame encodes"),
        encoded,
        "decode → encode → decode is not stable"
    );
    if let Ok((trades, quotes)) = to_records(&frame) {
        assert_eq!(trades.len(), frame.trades.len());
        assert_eq!(quotes.len(), frame.quotes.len());
        for t in &trades {
            assert!(t.price.is_finite() && t.volume.is_finite() && t.volume >= 0.0);
        }
        for q in &quotes {
            assert!([q.bid, q.ask, q.bid_size, q.ask_size]
                .iter()
                .all(|v| v.is_finite()));
        }
    }
});
