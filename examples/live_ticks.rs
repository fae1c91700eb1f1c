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
        let trades = m.trades.iter().map(|t| {
            format!(
                "trade {:>12.4} x {:<8} {} (t={})",
                t.price, t.volume, t.side, t.time_ns
            )
        });
        let quotes = m.quotes.iter().map(|q| {
            format!(
                "quote {:>12.4} / {:<12.4} ({} x {})",
                q.bid, q.ask, q.bid_size, q.ask_size
            )
        });
        // A message holds one kind; its ticks are numbered from `first_seq`.
        for (seq, tick) in (m.first_seq..).zip(trades.chain(quotes)) {
            println!("{} #{seq:<8} {tick}", m.symbol);
        }
    }
    Ok(())
}
