//! The CSV reader of `christmas-ingest replay` (`replay::parse_csv`), as for a TrueFX file.
//!
//! The first byte picks the fallback symbol (none, or `USDJPY` as a file name would give);
//! the rest is the file. Asserts, beyond "no panic": every tick has finite prices (the
//! reader refuses NaN and infinities), and without a fallback every symbol came from the
//! file's symbol column.
#![no_main]

use christmas_core::synthetic::Tick;
use christmas_core::Symbol;
use christmas_ingest::replay::parse_csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let fallback = (mode & 1 == 1).then(|| Symbol::new("USDJPY").expect("a valid symbol"));
    let Ok(ticks) = parse_csv(file, fallback) else {
        return;
    };
    for tick in &ticks {
        match tick {
            Tick::Trade(t) => assert!(t.price.is_finite() && t.volume.is_finite(), "{t:?}"),
            Tick::Quote(q) => assert!(
                [q.bid, q.ask, q.bid_size, q.ask_size]
                    .iter()
                    .all(|v| v.is_finite()),
                "{q:?}"
            ),
        }
    }
});
