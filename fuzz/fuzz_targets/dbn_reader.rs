//! The DBN replay reader: `Mbp1Reader` over any file (plain or zstd DBN), read to the end
//! or to its first error.
//!
//! `Mbp1Reader` opens a path, so each input is written to one temporary file per process.
//! Asserts, beyond "no panic": every trade and quote has finite prices and sizes and a
//! non-negative volume (DBN prices and sizes are integers).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use christmas_core::dbn_file::Mbp1Reader;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("christmas-fuzz-dbn-{}.dbn", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(scratch(), data).expect("writing the scratch file");
    let Ok(reader) = Mbp1Reader::open(scratch()) else {
        return;
    };
    for ticks in reader {
        let Ok(ticks) = ticks else {
            break;
        };
        if let Some(t) = ticks.trade {
            assert!(t.price.is_finite() && t.volume.is_finite() && t.volume >= 0.0);
        }
        if let Some(q) = ticks.quote {
            assert!([q.bid, q.ask, q.bid_size, q.ask_size]
                .iter()
                .all(|v| v.is_finite()));
        }
    }
});
