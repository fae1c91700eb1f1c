//! Prints live ticks of a few symbols from the Redis fan-out, and notes any gap.
//!
//! ```sh
//! bash scripts/run.sh &          # the demo daemon, fanning out to the local Redis
//! cargo run --release -p christmas-core --example live_ticks -- SYM0000 SYM0001
//! ```
//!
//! `REDIS_URL` picks the server (default `redis://127.0.0.1:56379/`; `redis+sentinel://…`
//! and `redis+cluster://…` work too), `FANOUT_FORMAT` the payload format (`json`, `rkyv`).

use std::collections::HashMap;

use christmas_core::fanout::{PayloadFormat, TickSubscription};
use christmas_core::Symbol;

#[tokio::main]
async fn main() -> christmas_core::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379/".into());
    let format: PayloadFormat = std::env::var("FANOUT_FORMAT")
        .unwrap_or_else(|_| "json".into())
        .parse()?;
    let symbols = std::env::args()
        .skip(1)
        .map(|s| Symbol::new(&s))
        .collect::<christmas_core::Result<Vec<_>>>()?;
    let symbols = if symbols.is_empty() {
        vec![Symbol::new("SYM0000")?]
    } else {
        symbols
    };
    let mut live = TickSubscription::live(&url, format, &symbols).await?;
    eprintln!("subscribed to {symbols:?} on {url}");
    let mut last_seq: HashMap<(String, christmas_core::fanout::TickKind), u64> = HashMap::new();
    while let Some(delivery) = live.next().await {
        let m = delivery?.message;
        let last = last_seq.entry((m.symbol.clone(), m.kind)).or_insert(0);
        if *last != 0 && m.first_seq != *last + 1 {
            println!(
                "{} {}: gap, {} ticks missed",
                m.symbol,
                m.kind,
                m.first_seq - *last - 1
            );
        }
        *last = m.last_seq();
        for (i, t) in m.trades.iter().enumerate() {
            println!(
                "{} #{:<8} trade {:>12.4} x {:<8} {} (t={})",
                m.symbol,
                m.first_seq + i as u64,
                t.price,
                t.volume,
                t.side,
                t.time_ns
            );
        }
        for (i, q) in m.quotes.iter().enumerate() {
            println!(
                "{} #{:<8} quote {:>12.4} / {:<12.4} ({} x {})",
                m.symbol,
                m.first_seq + i as u64,
                q.bid,
                q.ask,
                q.bid_size,
                q.ask_size
            );
        }
    }
    Ok(())
}
