//! Embedding Christmas in a feed handler: push trades from several threads, wait until they
//! are committed, shut down.
//!
//! ```sh
//! eval "$(bash scripts/services.sh env)"
//! cargo run --release -p christmas-core --example push_trades
//! ```

use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{Ingestor, Summary, Trade};

#[tokio::main]
async fn main() -> christmas_core::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://christmas@127.0.0.1:55432/christmas".into());
    christmas_core::schema::migrate_url(&url, &Default::default()).await?;

    let trades = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .start()
        .await?;

    // Two feed-handler threads, each with its own market (disjoint symbols via the seed).
    let handlers: Vec<_> = (0..2u64)
        .map(|feed| {
            let trades = trades.clone();
            std::thread::spawn(move || -> christmas_core::Result<()> {
                let mut market = SyntheticMarket::new(feed, 100)
                    .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
                for _ in 0..250_000 {
                    trades.push(market.next_trade())?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handlers {
        h.join().expect("feed thread panicked")?;
    }

    trades.flush().await?; // everything pushed above is committed from here on
    let report = trades.shutdown().await?;
    let latency = Summary::of(&report.push_to_commit_us);
    println!(
        "{} rows in {} batches; push→commit p50 {} µs, p99 {} µs",
        report.rows_committed(),
        report.batches_committed(),
        latency.p50,
        latency.p99
    );
    Ok(())
}
