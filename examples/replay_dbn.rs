//! Replays a Databento MBP-1 file into PostgreSQL with the library alone: trades from
//! `action = 'T'` records, quotes from every record's top of book, through one [`Ingress`]
//! in chunks of validated [`Ticks`].
//!
//! ```sh
//! eval "$(bash scripts/services.sh env)"
//! cargo run --release -p christmas-core --features dbn --example replay_dbn -- \
//!     tests/data/glbx-futures-mbp-1.dbn.zst
//! ```
//!
//! (`christmas-ingest replay` does the same with CSV, pacing and a progress bar.)

use christmas_core::sources::dbn::Mbp1Reader;
use christmas_core::{AckLevel, IngestorConfig, Ingress, Sink, Ticks};

/// Ticks pushed at once: one buffer, reused.
const CHUNK: usize = 4_096;

#[tokio::main]
async fn main() -> christmas_core::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://christmas@127.0.0.1:55432/christmas".into());
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/data/glbx-futures-mbp-1.dbn.zst".into());
    christmas_core::schema::migrate_url(&url, &Default::default()).await?;
    let ingress = Ingress::start(IngestorConfig {
        sink: Some(Sink::Postgres(url.clone())),
        stream: "replay".into(),
        ..IngestorConfig::default()
    })
    .await?;
    let mut ticks = Ticks::with_capacity(CHUNK, CHUNK);
    for record in Mbp1Reader::open(&path)? {
        let record = record?;
        if let Some(t) = record.trade {
            ticks.push_trade(t)?;
        }
        if let Some(q) = record.quote {
            ticks.push_quote(q)?;
        }
        if ticks.len() >= CHUNK {
            // Accepted: the rings hold them; shutdown below commits everything.
            ingress.push(&ticks, AckLevel::Accepted).await?.await?;
            ticks.clear();
        }
    }
    ingress.push(&ticks, AckLevel::Accepted).await?.await?;
    let totals = ingress.shutdown().await?;
    println!(
        "{path}: {} trades and {} quotes committed",
        totals.trades.rows_committed(),
        totals.quotes.rows_committed()
    );
    Ok(())
}
