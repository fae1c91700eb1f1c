//! Replays a Databento MBP-1 file into PostgreSQL with the library alone: trades from
//! `action = 'T'` records, quotes from every record's top of book.
//!
//! ```sh
//! eval "$(bash scripts/services.sh env)"
//! cargo run --release -p christmas-core --features dbn --example replay_dbn -- \
//!     tests/data/glbx-futures-mbp-1.dbn.zst
//! ```
//!
//! (`christmas-ingest replay` does the same with CSV, pacing and a progress bar.)

use christmas_core::dbn_file::Mbp1Reader;
use christmas_core::{Ingestor, Quote, Trade};

#[tokio::main]
async fn main() -> christmas_core::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://christmas@127.0.0.1:55432/christmas".into());
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/data/glbx-futures-mbp-1.dbn.zst".into());
    christmas_core::schema::migrate_url(&url, &Default::default()).await?;
    let trades = Ingestor::<Trade>::builder()
        .database_url(&url)
        .start()
        .await?;
    let quotes = Ingestor::<Quote>::builder()
        .database_url(&url)
        .start()
        .await?;
    for ticks in Mbp1Reader::open(&path)? {
        let ticks = ticks?;
        if let Some(t) = ticks.trade {
            trades.push_async(t).await?;
        }
        if let Some(q) = ticks.quote {
            quotes.push_async(q).await?;
        }
    }
    let (t, q) = (trades.shutdown().await?, quotes.shutdown().await?);
    println!(
        "{path}: {} trades and {} quotes committed",
        t.rows_committed(),
        q.rows_committed()
    );
    Ok(())
}
